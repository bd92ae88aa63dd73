"""runners/bench.py's parent side for one model: its recipe, its measurement children and the comparison of its
training paths.

Each measurement runs as `python runners/bench.py --model-child <spec>` (runners/benchkit/bench_measure.py), so peak RSS is
per child and a crash ends only that measurement. Per model: the optimised child, the naive baseline child, and
with --compare-paths the earlier path (independent rows) and the data-parallel one (paired rows on N processes).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from runners.benchkit.bench_tables import minutes

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "runners" / "bench.py"


def run_child(mode: str, spec: dict, env_extra: dict[str, str] | None, timeout: float) -> dict:
    """`python runners/bench.py --<mode> <spec>`: its last stdout line as a dict, or {"error", "stderr"}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # the child's allocator: ours to set
    env.update(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), **(env_extra or {}))
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, str(BENCH), f"--{mode}", json.dumps(spec)],
                             env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1][:300],
                "stderr": res.stderr[-4000:]}
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "child_s": time.perf_counter() - t0}


def compose_recipe(model: str, overrides: list[str]) -> tuple[dict, dict, int, bool]:
    """TrainSettings (as a dict), model params, thread count and denormal flushing as runners/run.py derives them."""
    from hydra import compose, initialize_config_dir

    from runners.config import model_params, train_settings, worker_threads

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", *overrides])
    settings = asdict(train_settings(cfg, None))
    settings.update(progress=False, checkpoint_path=None)
    threads = worker_threads(cfg.trainer.num_threads, 1)  # as a one-process run resolves it
    return settings, model_params(cfg), threads, bool(cfg.trainer.flush_denormal)


def measure(spec: dict, naive_steps: int | None, env: dict, timeout: float) -> tuple[dict, dict | None]:
    """The optimised child and, with `naive_steps`, the naive baseline's (Adam over dense gradients, plain random
    batches padded to the longest history, glibc's default allocator)."""
    opt = run_child("model-child", spec, env, timeout)
    naive = None
    if naive_steps and "error" not in opt:
        naive = run_child("model-child", {**spec, "variant": "naive", "steps": naive_steps, "warmup": 1}, {},
                          timeout)
    return opt, naive


EARLIER_PATH = {"pair_rows": False, "bucket_chunk": 64}  # the training path before the CPU throughput issue:
# independent rows, length buckets sorted in chunks of 64 batches


def compare_paths(spec: dict, default: dict, processes: int, env: dict, timeout: float, model: str) -> dict:
    """Epoch time and examples/s of the earlier path (independent rows) and of the data-parallel one, beside the
    default (paired rows, one process); "-" where a path does not apply to the model."""
    from models.registry import get_model

    cls = get_model(model)
    out = {"paired_ex_per_s": default["ex_per_s"], "paired_epoch_s": default["epoch_s"],
           "threads": default["threads"]}
    fast = {**spec, "eval_users": 0, "profile": 0}
    if cls.train_format == "pointwise":
        today = run_child("model-child", {**fast, "settings": {**spec["settings"], **EARLIER_PATH}}, env, timeout)
        if "error" not in today:
            out.update(today_ex_per_s=today["ex_per_s"], today_epoch_s=today["epoch_s"])
    if cls.data_parallel and processes > 1:
        threads = max(1, (spec["num_threads"] or os.cpu_count() or 1) // processes)
        dp = run_child("model-child", {**fast, "processes": processes, "num_threads": threads}, env, timeout)
        if "error" in dp:
            out["dp_error"] = dp["error"]
            print(f"  {model}: {processes} processes FAILED {dp['error']}\n{dp.get('stderr', '')[-1500:]}")
        else:
            out.update(dp_ex_per_s=dp["ex_per_s"], dp_epoch_s=dp["epoch_s"], dp_threads=dp["threads"])
    base = out.get("today_epoch_s", out["paired_epoch_s"])
    best = min(out["paired_epoch_s"], out.get("dp_epoch_s", math.inf))
    out["speedup_vs_today"] = base / best
    print(f"  {model} paths: today {minutes(out.get('today_epoch_s'))} min, paired {minutes(out['paired_epoch_s'])}"
          f" min, paired + {processes} processes {minutes(out.get('dp_epoch_s'))} min", flush=True)
    return out
