"""runners/bench.py --contend: training speed on `sample` quiet, then beside one busy CPU-bound process, side by side.

Per model, two measurement children of runners/bench_measure.py at the model's default recipe (thread policy
included): the first on a quiet machine (as quiet as the machine is), the second while a plain Python spin loop
runs in a process of its own, pinned to the last CPU this process may use. The busy process is started and killed
here and ends by itself after `BUSY_LIMIT_S` even if the bench is killed. The ratio busy / quiet is the figure to
read: both halves run in the same bench, seconds apart, on the same data.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from runners.benchkit.bench_paths import compose_recipe, run_child

REPO_ROOT = Path(__file__).resolve().parents[2]
BUSY_LIMIT_S = 1800.0  # the spin loop ends by itself after this long (bounded even if the bench is killed -9)
CONTEND_DATASET = "sample"  # conf/dataset/<name>.yaml: the generated set the README's first command trains on


def busy_code(limit_s: float) -> str:
    """A CPU-bound loop that ends by itself after `limit_s` seconds."""
    return f"import time\nend = time.monotonic() + {float(limit_s)!r}\nwhile time.monotonic() < end:\n    pass\n"


def busy_cpu() -> int | None:
    """The CPU the busy process is pinned to: the last one this process may use (None: cannot pin, one CPU)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1] if len(cpus) > 1 else None


@contextlib.contextmanager
def busy_process(limit_s: float = BUSY_LIMIT_S) -> Iterator[subprocess.Popen]:
    """One CPU-bound Python process for the block, pinned to `busy_cpu()` where there is one; killed after it."""
    proc = subprocess.Popen([sys.executable, "-c", busy_code(limit_s)], stdin=subprocess.DEVNULL)
    try:
        cpu = busy_cpu()
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})
        yield proc
    finally:
        proc.kill()
        proc.wait()


def dataset_spec(data_root: Path, cache_dir: Path) -> dict:
    """bench_measure's spec of the `sample` dataset, with the options conf/dataset/sample.yaml gives it."""
    from omegaconf import OmegaConf

    conf = OmegaConf.load(REPO_ROOT / "conf" / "dataset" / f"{CONTEND_DATASET}.yaml")
    return {"dataset": str(conf.name), "kind": str(conf.kind), "data_root": str(data_root),
            "cache_dir": str(cache_dir), "options": OmegaConf.to_container(conf.options, resolve=True)}


def model_spec(model: str, data_spec: dict, overrides: list[str], steps: int, repeats: int, seed: int) -> dict:
    """One model's measurement child: its default recipe (threads as the config gives them), no evaluation."""
    settings, params, threads, ftz = compose_recipe(model, overrides)
    return {**data_spec, "model": model, "settings": settings, "params": params, "num_threads": threads,
            "flush_denormal": ftz, "steps": steps, "warmup": 2, "repeats": repeats, "window": None, "seed": seed,
            "eval_users": 0, "eval_repeats": 1, "profile": 0, "variant": "optimised"}


def contend_row(model: str, quiet: dict, busy: dict) -> dict:
    """The figures of one model side by side (an error where a child failed)."""
    if "error" in quiet or "error" in busy:
        return {"model": model, "error": quiet.get("error") or busy.get("error")}
    return {"model": model, "threads": quiet["threads"], "quiet_ex_per_s": quiet["ex_per_s"],
            "busy_ex_per_s": busy["ex_per_s"], "ratio": busy["ex_per_s"] / quiet["ex_per_s"]}


def contend_markdown(rows: list[dict], machine: str, busy_on: int | None) -> str:
    where = f"pinned to CPU {busy_on}" if busy_on is not None else "not pinned (one CPU)"
    lines = [f"## Training speed quiet and beside one busy process ({CONTEND_DATASET})", "",
             f"Machine: {machine}. Busy process: a Python spin loop, {where}. "
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}.", "",
             "| model | threads | quiet ex/s | busy ex/s | busy / quiet |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | - | FAILED: {r['error']} | | |")
        else:
            lines.append(f"| {r['model']} | {r['threads']} | {r['quiet_ex_per_s']:,.0f} | {r['busy_ex_per_s']:,.0f} "
                         f"| {r['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def run_contend(models: list[str], overrides: list[str], data_root: Path, cache_dir: Path, steps: int,
                repeats: int, seed: int, malloc_env: dict[str, str], timeout: float, machine: str) -> tuple[int, str]:
    """Every model quiet, then beside the busy process; returns (exit status, the Markdown table)."""
    data_spec = dataset_spec(data_root, cache_dir)
    data = run_child("prepare", data_spec, malloc_env, timeout)  # the table and split caches, before any timing
    if "error" in data:
        print(f"{CONTEND_DATASET}: data preparation FAILED: {data['error']}\n{data.get('stderr', '')}")
        return 1, ""
    rows = []
    for model in models:
        spec = model_spec(model, data_spec, overrides, steps, repeats, seed)
        quiet = run_child("model-child", spec, malloc_env, timeout)
        with busy_process():
            busy = run_child("model-child", spec, malloc_env, timeout)
        rows.append(contend_row(model, quiet, busy))
        r = rows[-1]
        print(f"  {model}: FAILED {r['error']}" if "error" in r else
              f"  {model}: {r['threads']} thread(s), quiet {r['quiet_ex_per_s']:,.0f} ex/s, busy "
              f"{r['busy_ex_per_s']:,.0f} ex/s, busy / quiet {r['ratio']:.2f}x", flush=True)
    return (1 if any("error" in r for r in rows) else 0), contend_markdown(rows, machine, busy_cpu())
