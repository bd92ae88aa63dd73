"""The thread policy: the thread count a run uses is resolved from the config (never from the load), recorded in
its params and part of its config hash, so skip_finished never takes a run of another thread count for this one
(the count changes results: float summation order)."""
from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
import torch

from runners.config import job_settings, worker_threads
from runners.tracking.tracking import config_hash
from runners.train.wait_policy import wait_policy_in_effect
from tests.runners.conftest import REPO_ROOT, compose

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
BPR_SHORT = ["model=bpr", "dataset=sample", "trainer.max_steps=20", "trainer.eval_every=10",
             "mlflow.log_outcomes=false"]


@pytest.mark.parametrize("num_threads, processes, expected", [
    ("null", 1, CORES), ("3", 1, 3), ("null", 2, max(1, CORES // 2)), ("1", 2, 1)])
def test_the_thread_count_a_run_uses_is_the_one_it_records(num_threads, processes, expected):
    job = job_settings(compose([f"trainer.num_threads={num_threads}", f"trainer.processes={processes}"]))
    assert job.threads == expected == job.resolved["trainer"]["num_threads"]


def test_worker_threads_is_never_none():
    assert worker_threads(None, 1) == CORES
    assert worker_threads(None, CORES * 4) == 1  # more processes than cores: one thread each


def test_the_thread_count_is_part_of_the_config_hash():
    def chash(*overrides: str) -> str:
        return config_hash(job_settings(compose(list(overrides))).resolved, "data", "code")

    assert chash("trainer.num_threads=1") != chash("trainer.num_threads=2")
    assert chash("trainer.num_threads=null") == chash(f"trainer.num_threads={CORES}")  # the count, not the spelling
    assert chash("trainer.progress=true") == chash("trainer.progress=false")  # how it is shown still does not count


def test_skip_finished_does_not_take_another_thread_counts_run_for_this_one(tmp_path):
    from runners.run import run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = torch.get_num_threads()
    try:
        results = [run(compose([*BPR_SHORT, f"trainer.num_threads={n}", f"paths.cache_dir={tmp_path / 'cache'}",
                                f"mlflow.tracking_uri={uri}"])) for n in (1, 2, 1)]
    finally:
        torch.set_num_threads(before)
    assert [r["status"] for r in results] == ["FINISHED", "FINISHED", "SKIPPED"]
    assert results[2]["run_id"] == results[0]["run_id"]
    client = mlflow.MlflowClient(uri)
    recorded = [client.get_run(r["run_id"]).data for r in results[:2]]
    assert [d.params["trainer.num_threads"] for d in recorded] == ["1", "2"]
    assert {d.tags["omp_wait_policy"] for d in recorded} == {wait_policy_in_effect()}  # as this process runs torch


def test_the_recorded_wait_policy_is_the_environments_or_libgomps_default(monkeypatch):
    from runners.train import wait_policy

    monkeypatch.setattr(wait_policy, "_in_effect", None)
    env: dict[str, str] = {}
    assert wait_policy.record_wait_policy(env, modules={}) == wait_policy.LIBGOMP_DEFAULT and env == {}  # left alone
    monkeypatch.setattr(wait_policy, "_in_effect", None)
    assert wait_policy.record_wait_policy({"OMP_WAIT_POLICY": "PASSIVE"}, modules={}) == "PASSIVE"  # the user's
    monkeypatch.setattr(wait_policy, "_in_effect", None)
    assert wait_policy.record_wait_policy({}, modules={"torch": torch}) == wait_policy.NOT_APPLIED  # too late: said so


def test_the_runner_records_the_wait_policy_before_torch_loads():
    code = ("import os\nimport runners.run\nimport runners.train.wait_policy as w\n"
            "print(os.environ['OMP_WAIT_POLICY'], w.wait_policy_in_effect())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHONPATH": str(REPO_ROOT), "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == 0 and proc.stdout.split() == ["PASSIVE", "PASSIVE"], proc.stderr[-2000:]
