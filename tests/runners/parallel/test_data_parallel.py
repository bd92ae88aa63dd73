"""Data-parallel training processes (trainer.processes, runners/parallel/data_parallel.py).

- N workers on shares of each global batch train the same weights as one process on the whole batch (up to float
  summation order), through shared memory and through torch.distributed (gloo), with narrow batches replicated
  (every worker computes them whole) or every batch split;
- replicated steps only where workers compute alike; workers whose copies differ stop the run;
- a worker that raises fails the run with that worker's traceback, and leaves no process behind;
- kill -9 of the run's process leaves no orphan worker.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.batching import BatchMaker, eval_rows
from datasets.split import make_split
from datasets.table import build_table
from models.registry import get_model
from runners.parallel.data_parallel import Helpers
from runners.train.evaluation import TestSetGuard, evaluate
from runners.step.gradient_sync import (AUTO_REPLICATE_WIDTH, ControlChannel, FlatGradients, GradientSync,
                                   ReplicasDiverged, replicate_limit, shard)
from runners.train.runtime import seed_everything
from runners.step.settings import TrainSettings
from runners.train.trainer import train, training_rows, worker_batch
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)
from tests.runners.conftest import REPO_ROOT, alive, live_pids

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    table = build_table(synthetic.generate(n_users=300, n_items=200, n_categories=12, seed=3), "tiny")
    return table, make_split(table, "paper", 1234)


def model_of(name: str, data, **params):
    table, _ = data
    seed_everything(0)
    return get_model(name)(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                           item_category=table.item_category, **params)


def trained(name: str, s: TrainSettings, data, processes: int = 1, backend: str = "shm"):
    """(parameters after training, test AUC) of model `name` trained with settings `s` on `processes` workers."""
    table, split = data
    model = model_of(name, data)
    guard = TestSetGuard(eval_rows(table, split, "test"), None)
    if s.max_steps == 0:  # the initial weights
        pass
    elif processes == 1:
        train(model, table, split, s, guard)
    else:
        with Helpers(model, table, split, s, processes, backend, threads=1, flush_denormal=True) as sync:
            train(model, table, split, s, guard, sync=sync)
    auc = evaluate(model, BatchMaker(table), eval_rows(table, split, "test"), 512).auc
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, auc


# SGD at lr 0.3, not the recipe's 1.0: at lr 1.0 ATRank's training amplifies the 1e-7 rounding differences of a
# reordered sum (measured: 1e-7 after 8 steps, 1e-5 after 12, 1e-2 after 20, when one ReLU input crosses zero), so
# 50 steps there test the dynamics, not the code. One step at lr 1.0 is checked tightly below.
SGD = TrainSettings(optimizer="sgd", lr=0.3, clip_norm=5.0, batch_size=32, epochs=1, max_steps=50, eval_every=25)


@pytest.mark.parametrize("name,settings,processes,backend", [
    ("atrank", replace(SGD, replicate_width=0), 2, "shm"),  # every batch split (the 50 steps)
    # replicate_width auto: batches <= 4 wide (~half here) computed whole by both workers. A different set of
    # steps gets reordered sums, amplified where a weight crosses a ReLU kink, at a step that depends on the CPU's
    # kernels: on an Intel Xeon (AVX-512) the largest gap was 1.2e-7 after 10 steps, 1.0e-5 after 15 and 1.8e-3
    # after 30 (30 steps passed on AMD EPYC): 10 steps
    ("atrank", replace(SGD, max_steps=10), 2, "shm"),
    ("bpr", replace(SGD, clip_norm=None), 2, "shm"),  # sparse user and item tables
    ("gru4rec", replace(SGD, batch_size=30, pair_rows=False, max_steps=25), 3, "shm"),  # unpaired, shares of 10 rows
    # gloo sums in its own order; since Q, K, V are stacked one target-attention weight crosses a ReLU
    # kink near step 12 here: largest gap 1.2e-7 after 10 steps, 1.0e-5 after 15, 1.03e-5 after 20 (measured)
    ("atrank", replace(SGD, max_steps=10), 2, "gloo"),
])
def test_n_workers_train_the_weights_of_one_process(data, name, settings, processes, backend):
    one, auc_one = trained(name, settings, data)
    many, auc_many = trained(name, settings, data, processes, backend)
    start, _ = trained(name, replace(settings, max_steps=0), data)
    moved = 0
    for k, v in one.items():
        torch.testing.assert_close(many[k], v, rtol=0, atol=1e-5, msg=lambda m: f"{name} {k}: {m}")
        moved += not torch.equal(v, start[k])
    assert moved >= len(one) // 2  # training changed most tensors, so equality says something
    assert round(auc_many, 3) == round(auc_one, 3)


def test_one_step_at_the_recipe_lr_matches_to_rounding(data):
    s = replace(SGD, lr=1.0, max_steps=1)
    one, _ = trained("atrank", s, data)
    many, _ = trained("atrank", s, data, 2)
    for k, v in one.items():
        torch.testing.assert_close(many[k], v, rtol=0, atol=1e-6, msg=lambda m: f"{k}: {m}")


def test_shards_cover_each_batch_once_with_balanced_lengths():
    idx = np.arange(33)
    parts = [shard(idx, 4, r) for r in range(4)]
    assert sorted(np.concatenate(parts).tolist()) == idx.tolist()
    assert {len(p) for p in parts} == {8, 9}
    assert parts[0][:3].tolist() == [0, 4, 8]  # interleaved: each share spans the batch's sorted lengths


def test_narrow_batches_are_replicated_wide_ones_split(data):
    table, split = data
    model = model_of("atrank", data)
    rows, per = training_rows(model, table, split, True)
    widths = rows.end - table.indptr[rows.user]
    narrow, wide = np.flatnonzero(widths == 3)[:5], np.flatnonzero(widths > 20)[:5]
    sync = GradientSync(1, 2, None, FlatGradients(list(model.parameters()), set()))
    batch, step_sync = worker_batch(BatchMaker(table), rows, narrow, per, sync, replicate_width=8)
    assert step_sync is None and len(batch) == 5 and batch.mean_rows is None  # whole, no sum
    batch, step_sync = worker_batch(BatchMaker(table), rows, wide, per, sync, replicate_width=8)
    assert step_sync is sync and len(batch) == 2 and batch.mean_rows == 5 * per  # rank 1's share of 5
    _, step_sync = worker_batch(BatchMaker(table), rows, narrow, per, sync, replicate_width=0)
    assert step_sync is sync


def test_replicated_steps_need_one_host_and_no_random_draws(data):
    plain, with_dropout = model_of("atrank", data), model_of("atrank", data, dropout=0.1)
    assert replicate_limit("auto", plain, same_host=True) == AUTO_REPLICATE_WIDTH
    assert replicate_limit("auto", plain, same_host=False) == 0  # gloo / nccl: hosts may compute differently
    assert replicate_limit("auto", with_dropout, same_host=True) == 0
    assert replicate_limit(16, plain, same_host=False) == 16  # asked for: a cluster of identical hosts
    with pytest.raises(ValueError, match="dropout"):
        replicate_limit(4, with_dropout, same_host=True)


def test_workers_whose_copies_differ_stop_the_run(data):
    ours, theirs = model_of("atrank", data), model_of("atrank", data)
    a, b = socket.socketpair()
    rank0 = GradientSync(0, 2, ControlChannel(0, {1: a}), FlatGradients(list(ours.parameters()), set()))
    rank1 = GradientSync(1, 2, ControlChannel(1, {0: b}), FlatGradients(list(theirs.parameters()), set()))
    rank1.check_replicas(theirs, 7)  # sends its sums; rank 0 compares
    rank0.check_replicas(ours, 7)
    with torch.no_grad():
        theirs.self_ff[0].outer.weight[3, 5] += 1e-6  # one weight, one float step or so
    rank1.check_replicas(theirs, 8)
    with pytest.raises(ReplicasDiverged, match=r"worker 1's copy .* at step 8: self_ff\.0\.outer\.weight"):
        rank0.check_replicas(ours, 8)
    a.close(), b.close()


def helper_pids(parent_pid: int) -> list[int]:
    """Running helper processes started by `parent_pid` (their command line names it)."""
    return live_pids(lambda cmd: b"runners.parallel.data_parallel" in cmd and cmd[-2:-1] == [str(parent_pid).encode()])


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "runners" / "run.py"), "model=atrank", "dataset=sample",
            "trainer.processes=2", "trainer.num_threads=1", "trainer.eval_every=0", "mlflow.log_outcomes=false",
            f"hydra.run.dir={tmp_path / 'out'}", *extra]


def test_a_failing_worker_fails_the_run_with_its_traceback(isolated, tmp_path):
    proc = subprocess.Popen(run_args(tmp_path, "trainer.max_steps=30", "trainer.debug_worker_raise_at_step=5"),
                            env=isolated, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "training worker 1 failed" in stderr and "rank 1: Traceback" in stderr
    assert "RuntimeError: trainer.debug_worker_raise_at_step=5: worker 1 fails for testing" in stderr
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("WorkerFailed: training worker 1 failed")
    assert "worker 1 fails for testing" in run.data.tags["error"]
    assert not helper_pids(proc.pid)  # no worker left running
    assert not list(Path("/dev/shm").glob(f"seqrec-dp-{proc.pid}-*"))  # nor its shared files


def test_kill_9_of_the_run_leaves_no_worker(isolated, tmp_path):
    proc = subprocess.Popen(run_args(tmp_path, "trainer.max_steps=100000", "trainer.epochs=50"), env=isolated,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not helper_pids(proc.pid) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        helpers = helper_pids(proc.pid)
        assert helpers, "the run never started its helper"
        time.sleep(2)  # training under way
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(Path(f"/proc/{pid}").exists() and alive(pid) for pid in helpers) and time.time() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in helpers if alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()

