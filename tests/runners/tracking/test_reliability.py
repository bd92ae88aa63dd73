"""Nothing wrong gets published: two copies of one command, corrupt derived files, a sweep's data-stage
failure. Each case asserts the exit code, the message (file, what was expected) and what MLflow and the cache hold
afterwards. The load test (8 joblib jobs twice) and the fault test (5 SIGKILLs in a row) are in the slow tier.
"""
from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.runners.conftest import compose
from tests.runners.tracking.test_sweeps import BPR, NO_REPORT, RUN, cli, env_for, runs_in, tail, where

REPO_ROOT = Path(__file__).resolve().parents[3]


def store_health(db: Path) -> tuple[str, list[str]]:
    """(PRAGMA integrity_check, names of leftover _alembic_tmp_* tables) of a sqlite store."""
    with sqlite3.connect(db) as con:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        tmp = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp_%'")]
    return ok, tmp


def job_and_hash(tmp: Path, args: list[str]):
    """The Job and config hash the CLI computes for `args` (model/dataset/trainer overrides), with tmp's cache."""
    from runners.config import job_settings
    from runners.run import load_data
    from runners.tracking.tracking import code_hash, config_hash

    job = job_settings(compose([*args, f"paths.cache_dir={tmp / 'cache'}",
                                f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}"]))
    table, _ = load_data(job.data)
    return job, config_hash(job.resolved, table.content_hash, code_hash())


def orphan_run(uri: str, chash: str) -> str:
    """A RUNNING run of config `chash`, as a SIGKILLed process leaves it."""
    from runners.run import open_store

    store = open_store(uri, "sample/paper")
    run = store.client.create_run(store.experiment_id, tags={"config_hash": chash, "model": "bpr"},
                                   run_name="killed")
    return run.info.run_id


# ---------------------------------------------------------------------------------------------------------------
# 1. Two copies of one command.

def test_store_creation_by_four_processes_at_once_is_serialised(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from runners.tracking.tracking import ensure_store; "
            "ensure_store(sys.argv[2])")
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(REPO_ROOT), uri], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert not any("_alembic_tmp" in e for e in errors)
    assert store_health(tmp_path / "fresh.db") == ("ok", [])
    assert (tmp_path / "fresh.db.lock").exists()


def test_two_copies_of_one_command_make_one_finished_run(tmp_path):
    """Started together on a fresh store: one trains, the other waits for its lease and then skips it."""
    env = env_for(tmp_path)
    args = [*BPR, "trainer.max_steps=300", "trainer.checkpoint_every=50"]
    procs = [subprocess.Popen([*RUN, *args, *where(tmp_path, name)], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for name in ("a", "b")]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(o[-3000:] for o in outs)
    runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [r.info.status for r in runs] == ["FINISHED"], [(r.info.status, r.data.tags) for r in runs]
    assert sum("already FINISHED as run " + runs[0].info.run_id in o for o in outs) == 1
    assert sum("resumed from" in o for o in outs) == 0  # nobody adopted a live run
    assert store_health(tmp_path / "mlflow.db") == ("ok", [])
    assert not list((tmp_path / "cache" / "checkpoints").glob("*.pt"))
    assert not list((tmp_path / "cache" / "leases").glob("*.json"))  # no owner left behind


def test_a_config_whose_lease_is_held_is_refused_naming_the_owner(tmp_path):
    from runners.tracking.lease import config_lease

    job, chash = job_and_hash(tmp_path, BPR)
    env = env_for(tmp_path, SEQREC_LEASE_TIMEOUT="2")
    with config_lease(tmp_path / "cache", chash):
        res = cli([*BPR, *where(tmp_path, "second")], env, tmp_path)
    assert res.returncode == 1, tail(res)
    out = res.stdout + res.stderr
    assert f"config {chash} is already being run by pid {os.getpid()} on host {socket.gethostname()}" in out
    assert f"lease {tmp_path / 'cache' / 'leases' / (chash + '.lock')} still held after 2 s" in out
    assert "ConfigBusy" in out and "not starting a second run" in out
    assert runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}") == []  # nothing was started


def test_an_orphaned_running_run_is_closed_and_the_config_runs_once(tmp_path, monkeypatch):
    """A RUNNING run whose process is gone (its lease is free) and no checkpoint: closed KILLED, a new run
    FINISHED; a second call skips."""
    from runners.run import run

    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, chash = job_and_hash(tmp_path, BPR)
    orphan = orphan_run(uri, chash)
    cfg = compose([*BPR, f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}"])
    result = run(cfg)
    assert result["status"] == "FINISHED" and result["run_id"] != orphan
    assert run(cfg)["status"] == "SKIPPED"
    by_id = {r.info.run_id: r for r in runs_in(uri)}
    assert {i: r.info.status for i, r in by_id.items()} == {orphan: "KILLED", result["run_id"]: "FINISHED"}
    assert by_id[orphan].data.tags["error"].startswith(f"orphaned: its process ended without closing the run "
                                                       f"(lease of config {chash} taken over by pid {os.getpid()})")


# ---------------------------------------------------------------------------------------------------------------
# 2. Corrupt derived files: named, moved aside, rebuilt.

def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # one flipped bit in the middle of the file (array data: the zip member's CRC-32 no longer matches)
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_a_damaged_table_or_split_cache_is_named_moved_aside_and_rebuilt(tmp_path, caplog, how):
    from datasets.load import load_dataset
    from datasets.split import load_split

    cache, opts = tmp_path / "cache", {"n_users": 300, "n_items": 200, "n_categories": 10, "seed": 0}
    table = load_dataset("tiny", "sample", tmp_path, cache, opts)
    split = load_split(table, cache, "loo_val", 1234, eval_negatives=5)
    (table_file,), (split_file,) = cache.glob("table_tiny_*.npz"), cache.glob("split_tiny_*.npz")
    for path in (table_file, split_file):
        damage(path, how)
    with caplog.at_level("WARNING"):
        again = load_dataset("tiny", "sample", tmp_path, cache, opts)
        split_again = load_split(again, cache, "loo_val", 1234, eval_negatives=5)
    for path, what in ((table_file, "table cache"), (split_file, "split cache")):
        (moved,) = cache.glob(path.name + ".corrupt-*")
        assert f"corrupt dataset tiny: {what} {path} (" in caplog.text and f"moved aside to {moved.name}" in caplog.text
        assert path.exists()  # rebuilt in place
    assert again.content_hash == table.content_hash and np.array_equal(again.items, table.items)
    assert all(np.array_equal(getattr(split, k), getattr(split_again, k)) for k in ("neg", "test_pos", "eval_negs"))
    caplog.clear()
    with caplog.at_level("INFO"):
        load_split(load_dataset("tiny", "sample", tmp_path, cache, opts), cache, "loo_val", 1234, eval_negatives=5)
    assert "corrupt" not in caplog.text and "cache hit" in caplog.text  # the rebuilt files are good


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "wrong keys"])
def test_a_damaged_checkpoint_is_named_moved_aside_and_never_read_again(tmp_path, caplog, how):
    import torch

    from runners.train.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint, usable_checkpoint

    model = torch.nn.Linear(64, 64)
    opt = torch.optim.Adam(model.parameters())
    path = tmp_path / "abc.pt"
    save_checkpoint(path, model, opt, {"step": 7})
    assert usable_checkpoint(path) and load_checkpoint(path, model, opt) == {"step": 7}
    if how == "wrong keys":
        torch.save({"model": model.state_dict()}, path)
    else:
        damage(path, how)
    with caplog.at_level("WARNING"):
        assert not usable_checkpoint(path)
    (moved,) = tmp_path.glob("abc.pt.corrupt-*")
    assert not path.exists() and f"corrupt checkpoint {path} (" in caplog.text and moved.name in caplog.text
    save_checkpoint(path, model, opt, {"step": 8})
    damage(path, "truncated")
    with pytest.raises(CorruptCheckpoint, match=f"checkpoint {path} is unreadable .*; moved aside to "):
        load_checkpoint(path, model, opt)
    assert not path.exists()


def test_a_run_with_corrupt_caches_and_checkpoint_heals_and_finishes_once(tmp_path):
    """The command that used to fail on every rerun: a bit-flipped table cache, a truncated split cache and a
    garbage checkpoint of an orphaned RUNNING run. It warns about each file, rebuilds, starts the run over."""
    _, chash = job_and_hash(tmp_path, BPR)
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path / 'mlflow.db'}"
    orphan = orphan_run(uri, chash)
    (table_file,), (split_file,) = cache.glob("table_sample_*.npz"), cache.glob("split_sample_*.npz")
    damage(table_file, "bit-flipped")
    damage(split_file, "truncated")
    checkpoint = cache / "checkpoints" / f"{chash}.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"PK\x03\x04 not a checkpoint")
    res = cli([*BPR, "trainer.checkpoint_every=50", *where(tmp_path, "heal")], env_for(tmp_path), tmp_path)
    assert res.returncode == 0, tail(res)
    out = res.stdout + res.stderr
    for path, what in ((table_file, "dataset sample: table cache"), (split_file, "dataset sample: split cache"),
                       (checkpoint, "checkpoint")):
        (moved,) = path.parent.glob(path.name + ".corrupt-*")
        assert f"corrupt {what} {path} (" in out and f"moved aside to {moved.name} and rebuilt" in out, what
    assert "resumed from" not in out
    assert {r.info.run_id: r.info.status for r in runs_in(uri)} == {orphan: "KILLED", **{
        r.info.run_id: "FINISHED" for r in runs_in(uri) if r.info.run_id != orphan}}
    assert len(runs_in(uri)) == 2 and table_file.exists() and split_file.exists() and not checkpoint.exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. A data-stage failure inside a sweep is a FAILED MLflow run.

def test_a_data_stage_failure_in_a_sweep_is_a_failed_run_and_a_fixed_rerun_trains(tmp_path):
    data = tmp_path / "mine.csv"
    rows = [f"u{u},i{(u * 7 + k) % 50},{1000 + k}" for u in range(60) for k in range(6)]
    data.write_text("user,item,time\n" + "\n".join(rows[:100] + ["u1,i2"] + rows[100:]) + "\n")
    args = ["-m", "model=pop", "seed=0,1", "dataset=interactions", f"dataset.options.path={data}",
            "dataset.name=mine", *NO_REPORT]
    env, uri = env_for(tmp_path), f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = cli([*args, *where(tmp_path, "bad")], env, tmp_path)
    assert res.returncode == 1, tail(res)
    assert "2 job(s): 0 finished, 0 skipped (already finished), 2 failed" in res.stdout
    assert f"{data}" in res.stdout and "line 102" in res.stdout, tail(res)
    failed = runs_in(uri, "mine/paper")
    assert [r.info.status for r in failed] == ["FAILED", "FAILED"]
    for r in failed:
        assert r.data.tags["stage"] == "data" and r.data.tags["config_hash"]
        assert str(data) in r.data.tags["error"] and "line 102" in r.data.tags["error"]
        assert "Traceback" in r.data.tags["error_traceback"]
        assert r.data.tags["sweep_dir"] == str((tmp_path / "multirun" / "bad").resolve())
    data.write_text("user,item,time\n" + "\n".join(rows) + "\n")  # fixed: FAILED is not FINISHED, nothing skipped
    res = cli([*args, *where(tmp_path, "fixed")], env, tmp_path)
    assert res.returncode == 0 and "2 job(s): 2 finished, 0 skipped" in res.stdout, tail(res)
    assert sorted(r.info.status for r in runs_in(uri, "mine/paper")) == ["FAILED"] * 2 + ["FINISHED"] * 2
    assert not any(f.name.endswith(".corrupt") for f in (tmp_path / "cache").iterdir())
