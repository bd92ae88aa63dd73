"""A killed sweep's parent run does not stay RUNNING: the next multirun closes it (runners/tracking/sweep_runs.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import mlflow

from runners.tracking.sweep_runs import ALIVE_LOCK, close_orphaned_parents, hold_sweep, parent_run_id, release_sweep
from runners.tracking.tracking import ensure_store

HOLD = ("import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1], thread_local=False); "
        "lock.acquire(); print('held', flush=True); time.sleep(120)")   # another live sweep's launcher


def _client(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_store(uri)
    client = mlflow.MlflowClient(uri)
    return client, client.create_experiment("e")


def _status(client, run_id: str) -> str:
    return client.get_run(run_id).info.status


def test_parents_of_dead_sweeps_are_closed_and_live_or_remote_ones_are_not(tmp_path):
    client, exp = _client(tmp_path)
    dead, live, remote, own = (tmp_path / n for n in ("dead", "live", "remote", "own"))
    holder_lock = live / ALIVE_LOCK
    live.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(holder_lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        hold_sweep(own)                                   # this process's own sweep is alive too
        ids = {d.name: parent_run_id(client, exp, str(d)) for d in (dead, live, own)}
        ids["remote"] = parent_run_id(client, exp, str(remote))
        shutil.rmtree(remote)                             # a folder on another machine: cannot tell, left alone
        assert close_orphaned_parents(client) == [ids["dead"]]
        assert _status(client, ids["dead"]) == "KILLED"
        assert "orphaned" in client.get_run(ids["dead"]).data.tags["error"]
        assert {_status(client, ids[n]) for n in ("live", "own", "remote")} == {"RUNNING"}
        holder.kill()                                     # SIGKILL: the kernel frees the lock, no clean-up ran
        holder.wait()
        release_sweep(own)                                # the multirun ended without closing its parent
        assert sorted(close_orphaned_parents(client)) == sorted([ids["live"], ids["own"]])
        assert _status(client, ids["remote"]) == "RUNNING"
    finally:
        holder.kill()
        release_sweep(own)


def test_a_finished_parent_is_never_touched(tmp_path):
    client, exp = _client(tmp_path)
    run_id = parent_run_id(client, exp, str(tmp_path / "sweep"))
    client.set_terminated(run_id, status="FINISHED")
    assert close_orphaned_parents(client) == [] and _status(client, run_id) == "FINISHED"
