"""The reliability load and fault tests (slow tier:
python -m pytest -m slow tests/runners/tracking/test_reliability_slow.py).

- Load: 8 jobs of one sweep through the joblib launcher, 4 at a time, on one fresh store and one fresh cache, run
  twice: one FINISHED run per config, the second sweep trains nothing, the sqlite store is intact.
- Fault: `kill -9` at random steps for 5 runs in a row of one config with checkpoints, then a clean finish: one
  FINISHED run with the uninterrupted run's test AUC (one thread each) to 6 decimals.
"""
from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.runners.tracking.test_reliability import store_health
from tests.runners.tracking.test_sweeps import (NO_REPORT, RUN, cli, env_for, latest_checkpoint_step, runs_in, tail,
                                                where)

pytestmark = pytest.mark.slow


def test_eight_joblib_jobs_twice_on_one_fresh_store_and_cache(tmp_path):
    env, uri = env_for(tmp_path), f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = ["-m", "model=pop,bpr", "seed=0,1,2,3", "dataset=sample", "trainer.max_steps=60", "trainer.eval_every=30",
             "trainer.num_threads=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *NO_REPORT]
    first = cli([*sweep, *where(tmp_path, "first")], env, tmp_path, timeout=900)
    assert first.returncode == 0, tail(first)
    assert "8 job(s): 8 finished, 0 skipped (already finished), 0 failed" in first.stdout, tail(first)
    second = cli([*sweep, *where(tmp_path, "second")], env, tmp_path, timeout=900)
    assert second.returncode == 0, tail(second)
    assert "8 job(s): 0 finished, 8 skipped (already finished), 0 failed" in second.stdout, tail(second)
    logs = "\n".join(p.read_text() for p in (tmp_path / "multirun" / "second").glob("*/*.log"))
    assert logs.count("already FINISHED as run") == 8 and "test AUC" not in logs  # the second sweep trains nothing
    runs = runs_in(uri)
    assert Counter(r.info.status for r in runs) == {"FINISHED": 8}
    assert Counter(r.data.tags["config_hash"] for r in runs).most_common(1)[0][1] == 1  # one run per config
    assert {(r.data.tags["model"], r.data.tags["seed"]) for r in runs} == {(m, s) for m in ("pop", "bpr")
                                                                           for s in "0123"}
    assert store_health(tmp_path / "mlflow.db") == ("ok", [])
    cache = tmp_path / "cache"
    assert len(list(cache.glob("table_sample_*.npz"))) == 1 and not list(cache.rglob("*.corrupt-*"))
    assert not list((cache / "leases").glob("*.json")) and not list(cache.glob("checkpoints/*.pt"))


def kill_at(args: list[str], env: dict, tmp: Path, name: str, target: int) -> int:
    """Start the job and SIGKILL it once it has written a checkpoint of step >= target newer than the one it
    started from; returns the checkpoint step it was killed after."""
    checkpoints = tmp / "cache" / "checkpoints"
    start = latest_checkpoint_step(checkpoints)
    with open(tmp / f"{name}.log", "w") as out:
        proc = subprocess.Popen([*RUN, *args, *where(tmp, name, "killed.db")], cwd=tmp, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline:
                step = latest_checkpoint_step(checkpoints)
                if step > start and step >= target:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.02)
            else:
                pytest.fail(f"{name} ended or timed out before it could be killed (exit {proc.poll()})\n"
                            + (tmp / f"{name}.log").read_text()[-3000:])
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return step


def test_five_sigkills_in_a_row_end_in_one_finished_run_with_the_uninterrupted_auc(tmp_path):
    env = env_for(tmp_path)
    base = ["model=bpr", "dataset=sample", "trainer.max_steps=4000", "trainer.eval_every=500", "trainer.num_threads=1"]
    ref = cli([*base, *where(tmp_path, "reference", "reference.db")], env, tmp_path)
    assert ref.returncode == 0, tail(ref)
    args = [*base, "trainer.checkpoint_every=100"]
    rng = random.Random(18)
    targets = sorted(rng.sample(range(200, 3600, 100), 5))
    killed_at = [kill_at(args, env, tmp_path, f"kill{i}", t) for i, t in enumerate(targets)]
    assert killed_at == sorted(killed_at) and killed_at[-1] < 4000, killed_at
    res = cli([*args, *where(tmp_path, "final", "killed.db")], env, tmp_path)
    assert res.returncode == 0, tail(res)
    assert f"resumed from {tmp_path / 'cache' / 'checkpoints'}" in res.stdout + res.stderr
    runs, (reference,) = runs_in(f"sqlite:///{tmp_path / 'killed.db'}"), runs_in(
        f"sqlite:///{tmp_path / 'reference.db'}")
    assert [r.info.status for r in runs] == ["FINISHED"], [(r.info.status, r.data.tags.get("error")) for r in runs]
    (run,) = runs
    assert run.data.tags["resumed"] == "true" and "error" not in run.data.tags
    assert round(run.data.metrics["test_auc"], 6) == round(reference.data.metrics["test_auc"], 6)
    assert run.data.metrics["steps"] == reference.data.metrics["steps"] == 4000
    assert not list((tmp_path / "cache" / "checkpoints").glob("*.pt"))
