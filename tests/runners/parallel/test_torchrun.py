"""runners/parallel/torchrun.py: a data-parallel run launched by torchrun trains what `trainer.processes=N` trains itself;
rank 0 owns the run (MLflow, failures), the other ranks serve it and leave when it is over."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import mlflow
import pytest
from torch.distributed import TCPStore

from runners.step.gradient_sync import ControlChannel
from runners.parallel.torchrun import connect_mesh
from runners.parallel.world import TorchrunWorld, check_processes, torchrun_world
from tests.runners.conftest import REPO_ROOT, live_pids


def test_the_world_comes_from_torchruns_environment():
    assert torchrun_world({}) is None
    assert torchrun_world({"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: nothing to serve
    assert torchrun_world({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}) == TorchrunWorld(1, 2)
    with pytest.raises(RuntimeError, match="on 2 nodes.*one host"):
        torchrun_world({"RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})


def test_trainer_processes_must_name_the_processes_torchrun_started():
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    check_processes(2, env)
    check_processes(1, {})  # outside torchrun: anything goes
    with pytest.raises(ValueError, match=r"torchrun started 2 processes .* trainer.processes=1: set "
                                         r"trainer.processes=2"):
        check_processes(1, env)


def test_every_pair_of_ranks_connects_once_and_the_channel_works():
    world = 3
    server = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30))
    results: dict[int, object] = {}

    def rank_main(rank: int) -> None:
        store = TCPStore("127.0.0.1", server.port, is_master=False, timeout=timedelta(seconds=30))
        try:
            peers = connect_mesh(store, "run1", rank, world)
            channel = ControlChannel(rank, peers)
            channel.barrier()
            decided = channel.agree(rank == 0)  # rank 0's flag (True) everywhere
            gathered = channel.gather(bytes([rank]) * 3)
            results[rank] = (sorted(peers), decided, gathered)
            channel.close()
        except BaseException as e:  # noqa: BLE001  (reported by the assertion below)
            results[rank] = e

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results[0] == ([1, 2], True, [b"\0\0\0", b"\1\1\1", b"\2\2\2"])
    assert results[1] == ([0, 2], True, None)
    assert results[2] == ([0, 1], True, None)


def torchrun_args(tmp_path: Path, *extra: str, processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--monitor-interval", "0.1", str(REPO_ROOT / "runners" / "run.py"), *run_overrides(tmp_path, processes),
            *extra]


def run_overrides(tmp_path: Path, processes: int = 2) -> list[str]:
    return ["model=atrank", "dataset=sample", f"trainer.processes={processes}", "trainer.num_threads=1",
            "trainer.eval_every=10", "mlflow.log_outcomes=false", f"hydra.run.dir={tmp_path / 'out'}"]


def runs(env: dict[str, str]) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def leftover_ranks(marker: str) -> list[int]:
    """Processes still running whose command line names `marker` (this test's output folder)."""
    return live_pids(lambda cmd: any(marker.encode() in arg for arg in cmd))


def test_torchrun_trains_what_trainer_processes_trains(isolated, tmp_path):
    run_py = str(REPO_ROOT / "runners" / "run.py")
    spawned = subprocess.run([sys.executable, run_py, *run_overrides(tmp_path / "spawned"), "trainer.max_steps=40",
                              "mlflow.experiment=spawned"],
                             env=isolated, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert spawned.returncode == 0, spawned.stderr[-3000:]
    launched = subprocess.run(torchrun_args(tmp_path / "torchrun", "trainer.max_steps=40",
                                            "mlflow.experiment=torchrun"),
                              env=isolated, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    (theirs,) = client.search_runs([client.get_experiment_by_name("spawned").experiment_id])
    (ours,) = client.search_runs([client.get_experiment_by_name("torchrun").experiment_id])
    assert ours.info.status == theirs.info.status == "FINISHED"
    for metric in ("test_auc", "best_test_auc", "steps"):
        assert ours.data.metrics[metric] == theirs.data.metrics[metric], metric  # the same steps, bit for bit
    curves = [[m.value for m in client.get_metric_history(r.info.run_id, "curve/train_loss")] for r in (ours, theirs)]
    assert len(curves[0]) == 4 and curves[0] == curves[1]  # the global batch's loss at every 10th step
    assert ours.data.params["trainer.processes"] == "2"
    assert not leftover_ranks(str(tmp_path / "torchrun"))


def test_a_failing_rank_fails_the_run_with_its_traceback_and_every_rank_ends(isolated, tmp_path):
    proc = subprocess.run(torchrun_args(tmp_path, "trainer.max_steps=30", "trainer.debug_worker_raise_at_step=5"),
                          env=isolated, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "training worker 1 failed" in proc.stderr and "rank 1: Traceback" in proc.stderr
    (run,) = runs(isolated)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("WorkerFailed: training worker 1 failed")
    assert "worker 1 fails for testing" in run.data.tags["error"]
    assert not leftover_ranks(str(tmp_path))


def test_a_processes_setting_torchrun_did_not_start_is_refused_and_the_helper_leaves(isolated, tmp_path):
    proc = subprocess.run(torchrun_args(tmp_path, processes=1), env=isolated, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "torchrun started 2 processes (--nproc-per-node), but trainer.processes=1" in proc.stderr
    assert not runs(isolated)  # refused before any run was opened
    assert not leftover_ranks(str(tmp_path))


def test_kill_9_of_torchrun_leaves_no_rank_behind(isolated, tmp_path):
    proc = subprocess.Popen(torchrun_args(tmp_path, "trainer.max_steps=100000", "trainer.epochs=50"), env=isolated,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = str(tmp_path)
    try:
        deadline = time.time() + 120
        while len(leftover_ranks(marker)) < 3 and time.time() < deadline:  # torchrun and its two ranks
            time.sleep(0.2)
        time.sleep(3)  # training under way
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while leftover_ranks(marker) and time.time() < deadline:
            time.sleep(0.2)
        assert not leftover_ranks(marker)
    finally:
        for pid in leftover_ranks(marker):
            os.kill(pid, signal.SIGKILL)
