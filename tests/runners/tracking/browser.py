"""A headless Chromium driven over the DevTools protocol (aiohttp's websocket client): open a page, wait for its
text, click, read the text, take a screenshot. For the MLflow UI check only; no browser package is needed."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(1)


class Browser:
    """One headless Chromium with one page; `with Browser() as b:` stops it (by its PID) at the end."""

    def __init__(self, width: int = 1400, height: int = 760):
        self.port, self.profile = free_port(), tempfile.mkdtemp(prefix="seqrec-chromium-")
        self.proc = subprocess.Popen(
            [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}",
             f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_http(f"http://127.0.0.1:{self.port}/json/version", 30)
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list").read())
        self.ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self.ids = itertools.count(1)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, **params) -> dict:
        return asyncio.run(self._call(method, params))

    async def _call(self, method: str, params: dict) -> dict:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url, max_msg_size=0) as ws:
            msg_id = next(self.ids)
            await ws.send_json({"id": msg_id, "method": method, "params": params})
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == msg_id:
                    if "error" in data:
                        raise RuntimeError(f"{method}: {data['error']}")
                    return data.get("result", {})
        raise RuntimeError(f"{method}: the browser closed the connection")

    def evaluate(self, js: str):
        return self.call("Runtime.evaluate", expression=js, returnByValue=True)["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for_text(self, *texts: str, timeout: float = 90) -> str:
        """The page's text once it holds every one of `texts` (the UI renders after its API calls)."""
        deadline = time.time() + timeout
        while True:
            body = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if all(t in body for t in texts):
                return body
            if time.time() > deadline:
                missing = [t for t in texts if t not in body]
                raise TimeoutError(f"page text lacks {missing} after {timeout:.0f} s; it shows: {body[:1500]!r}")
            time.sleep(1)

    def click(self, css: str) -> int:
        """Click every element matching `css`; returns how many."""
        return self.evaluate(f"(() => {{ const e = [...document.querySelectorAll({json.dumps(css)})]; "
                             f"e.forEach(x => x.click()); return e.length; }})()")

    def screenshot(self, path: Path) -> Path:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        Path(path).write_bytes(png)
        return Path(path)
