"""Downloading raw files listed in datasets/manifest.json: urllib, first working URL, verified before it lands.

A file appears under its final name only when it is complete and matches the manifest's size / sha256 (and, for
.gz names, starts like a gzip file rather than an HTML error page); anything else is deleted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

from datasets.atomic import atomic_path

log = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
DOWNLOAD_TIMEOUT = 20.0  # seconds per connection attempt; keeps an offline machine from hanging

_urlopen = urllib.request.urlopen  # module attribute so tests can swap the opener


class DownloadFailed(Exception):
    """Every URL of a file failed; `reasons` holds one line per attempt, for the missing-file message."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, Any]:
    """datasets/manifest.json: {"files": {name: {"urls": [...], "size": int|null, "sha256": str|null}}}."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def download_file(name: str, directory: Path, entry: dict[str, Any], timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Fetch `name` into `directory` from the first of entry["urls"] that works, verifying size / sha256 when the
    manifest has them. The file appears under its final name only when complete and verified."""
    directory.mkdir(parents=True, exist_ok=True)
    reasons = []
    for url in entry.get("urls", []):
        try:
            return _fetch(url, directory / name, entry.get("size"), entry.get("sha256"), timeout)
        except DownloadFailed as e:
            reasons += e.reasons
        except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts are OSErrors; bad URLs ValueErrors
            reasons.append(f"{url}: {type(e).__name__}: {e}")
    raise DownloadFailed(reasons or [f"no URL listed for {name}"])


def _fetch(url: str, target: Path, size: int | None, sha256: str | None, timeout: float) -> Path:
    log.info("downloading %s -> %s", url, target)
    with atomic_path(target, suffix=".part") as tmp:
        digest = hashlib.sha256()
        n = 0
        with open(tmp, "wb") as out, _urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                n += len(block)
        with open(tmp, "rb") as f:
            head = f.read(2)
        problem = _mismatch(target.name, n, digest.hexdigest(), head, size, sha256)
        if problem:
            raise DownloadFailed([f"{url}: {problem}; the download was deleted"])
    return target


def _mismatch(name: str, n: int, digest: str, head: bytes, size: int | None, sha256: str | None) -> str | None:
    """Why the downloaded bytes are not the manifest's file, or None when they are."""
    if size is not None and n != size:
        return f"size mismatch: got {n:,} bytes, the manifest says {size:,}"
    if sha256 is not None and digest != sha256.lower():
        return f"sha256 mismatch: got {digest}, the manifest says {sha256}"
    if name.endswith(".gz") and head != b"\x1f\x8b":
        return f"not a gzip file (first bytes {head!r}; an error page?)"
    return None
