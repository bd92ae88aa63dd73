"""Sweeps and runs off the beaten path: job folders that nest, sweeps whose jobs fail, SIGTERM and SIGINT during a
run, a tracking server that does not answer.

The CLI is what is tested here (Hydra's multirun end, signal handlers, exit statuses), so each case runs
`python runners/run.py` in a subprocess, with its own MLflow store, cache and Hydra folders under tmp_path, on the
generated `sample` dataset with tiny budgets.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from runners.train.checkpoint import load_verified
from tests.runners.conftest import MODEL_RUNS, isolated_env

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(REPO_ROOT / "runners" / "run.py")]
BPR = ["model=bpr", "dataset=sample", "trainer.max_steps=10", "trainer.eval_every=5", "trainer.num_threads=1",
       "++hydra.callbacks.report.enabled=false"]
NESTED = "hydra.sweep.subdir=${hydra.job.num}_${model.name}/${dataset.name}/seed${seed}"  # two levels deeper


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A fresh MLflow sqlite store, made once (its schema takes seconds to create): each test copies it."""
    from runners.tracking.tracking import ensure_store

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    ensure_store(f"sqlite:///{db}")
    return db


@pytest.fixture
def tmp(tmp_path, empty_store) -> Path:
    """tmp_path with an empty MLflow store at tmp_path/mlflow.db."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    return tmp_path


def where(tmp: Path) -> list[str]:
    return [f"paths.cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'outputs'}",
            f"hydra.sweep.dir={tmp / 'multirun'}", f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}"]


def cli(args: list[str], tmp: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], cwd=tmp, env={**isolated_env(tmp), **env}, capture_output=True,
                          text=True, timeout=timeout)


def tail(res: subprocess.CompletedProcess) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"


def sweep_runs(tmp: Path) -> tuple[list, list]:
    """(model runs, parent runs) of the `sample/paper` experiment in tmp's store."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sample/paper")
    assert exp is not None, "the sweep logged nothing to MLflow"
    return (client.search_runs([exp.experiment_id], MODEL_RUNS),
            client.search_runs([exp.experiment_id], "tags.sweep_parent = 'true'"))


# ---------------------------------------------------------------------------------------------------------------
# Sweep summaries and exit codes.

def test_a_sweep_whose_nested_jobs_all_fail_counts_every_job_exits_1_and_its_parent_is_failed(tmp):
    res = cli(["-m", *BPR, "seed=0,1", "trainer.debug_raise=true", NESTED, *where(tmp)], tmp)
    assert res.returncode == 1, tail(res)
    assert "sweep summary: 2 job(s): 0 finished, 0 skipped (already finished), 2 failed" in res.stdout, tail(res)
    assert res.stdout.count("FAILED bpr/sample/seed") == 2
    assert sorted(p.relative_to(tmp / "multirun").as_posix() for p in tmp.glob("multirun/*/*/*")
                  if p.is_dir()) == ["0_bpr/sample/seed0", "1_bpr/sample/seed1"]  # the folders did nest
    runs, (parent,) = sweep_runs(tmp)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
    assert parent.info.status == "FAILED" and parent.data.tags["failed_jobs"] == "2"


@pytest.mark.slow  # the default tier has the mixed case unnested (test_sweeps.py) and the nested all-failed one
def test_a_nested_sweep_with_one_failed_job_exits_1_and_its_parent_is_failed(tmp):
    res = cli(["-m", *BPR, "trainer.debug_raise=false,true", NESTED, *where(tmp)], tmp)
    assert res.returncode == 1, tail(res)
    assert "sweep summary: 2 job(s): 1 finished, 0 skipped (already finished), 1 failed" in res.stdout, tail(res)
    runs, (parent,) = sweep_runs(tmp)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    assert parent.info.status == "FAILED" and parent.data.tags["failed_jobs"] == "1"


def test_a_job_folder_without_a_status_is_a_failed_job_and_an_empty_sweep_finds_none(tmp_path):
    from runners.tracking.sweep_runs import job_statuses

    (tmp_path / "0_a" / "b" / ".hydra").mkdir(parents=True)
    (tmp_path / "0_a" / "b" / ".hydra" / "hydra.yaml").write_text("hydra: {}\n")
    (tmp_path / "1_c" / "d" / "e").mkdir(parents=True)
    (tmp_path / "1_c" / "d" / "e" / "status.json").write_text('{"status": "FINISHED", "run_name": "x"}')
    statuses = job_statuses(tmp_path)
    assert [s["status"] for s in statuses] == ["FAILED", "FINISHED"]
    assert statuses[0]["run_name"] == "0_a/b" and "no status.json" in statuses[0]["error"]
    assert job_statuses(tmp_path / "1_c" / "d" / "e" / "f") == []


# ---------------------------------------------------------------------------------------------------------------
# SIGTERM and SIGINT during a run: KILLED, a log line, the checkpoint, the conventional exit status.

LONG = ["model=bpr", "dataset=sample", "trainer.epochs=100000", "trainer.max_steps=100000000",
        "trainer.eval_every=100000000", "trainer.num_threads=1", "trainer.checkpoint_every=50"]


def interrupted_run(tmp: Path, signum: int, extra: tuple[str, ...] = (), group: bool = False) -> tuple[int, str]:
    """A long CLI run, sent `signum` (to its whole process group with `group`, as Ctrl-C or a scheduler does) once
    its first periodic checkpoint is on disk (it is training then); returns its exit status and output."""
    checkpoints = tmp / "cache" / "checkpoints"
    with open(tmp / "run.log", "w") as out:
        proc = subprocess.Popen([*RUN, *LONG, *extra, *where(tmp)], cwd=tmp, env=isolated_env(tmp), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=group)
        try:
            deadline = time.time() + 240
            while proc.poll() is None and time.time() < deadline and not any(checkpoints.glob("*.pt")):
                time.sleep(0.1)
            assert proc.poll() is None, f"the run ended before it was signalled:\n{(tmp / 'run.log').read_text()}"
            if group:
                os.killpg(proc.pid, signum)  # the session we started, by its id
            else:
                proc.send_signal(signum)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()  # the signal was not obeyed, or the test failed: never leave it running
                proc.wait(timeout=60)
    return proc.returncode, (tmp / "run.log").read_text()


def assert_killed_at_a_checkpoint(tmp: Path, log: str, name: str, exception: str) -> None:
    """The log line names the run, the signal, the step and the checkpoint; the checkpoint holds that step; the
    MLflow run is KILLED with the same error."""
    line = re.search(rf"bpr/sample/seed0 KILLED by {name} at step (\d+) of \d+; checkpoint (\S+) written; "
                     r"MLflow run (\w+) closed as KILLED", log)
    assert line, log[-3000:]
    step, checkpoint, run_id = int(line[1]), Path(line[2]), line[3]
    assert checkpoint.parent == tmp / "cache" / "checkpoints" and checkpoint.is_file()
    assert load_verified(checkpoint)["state"]["step"] == step >= 50
    run = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"].startswith(f"{exception}: {name} at step {step} ")


@pytest.mark.parametrize("signum, statuses", [(signal.SIGTERM, (128 + signal.SIGTERM,)),
                                              (signal.SIGINT, (-signal.SIGINT, 128 + signal.SIGINT))])
def test_a_signalled_run_is_killed_with_a_log_line_and_a_checkpoint_at_its_step(tmp, signum, statuses):
    code, log = interrupted_run(tmp, signum)
    assert code in statuses, f"exit {code}\n{log[-3000:]}"
    exception = "Terminated" if signum == signal.SIGTERM else "KeyboardInterrupt"
    assert_killed_at_a_checkpoint(tmp, log, signal.Signals(signum).name, exception)


def test_signals_outside_the_loop_or_twice_raise_at_once_and_the_handlers_are_restored_after_the_run():
    from runners.train.interrupts import Terminated, closing_on_signals, deferred, pending_signal, stop_if_interrupted

    before = signal.getsignal(signal.SIGTERM)
    with closing_on_signals():
        with pytest.raises(Terminated, match="SIGTERM outside the training loop") as outside:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here, in the main thread, long before this ends
        assert outside.value.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt, match="SIGINT received twice"), deferred():
            os.kill(os.getpid(), signal.SIGINT)  # the loop would stop at its next step boundary
            assert pending_signal() == signal.SIGINT
            os.kill(os.getpid(), signal.SIGINT)  # impatient: at once
            time.sleep(5)
    with closing_on_signals():
        with pytest.raises(Terminated, match=r"SIGTERM at step 7 of 9; no checkpoint \(trainer.checkpoint_every=0\)"):
            with deferred():
                stop_if_interrupted(6, 9, lambda: None)  # nothing pending: goes on
                os.kill(os.getpid(), signal.SIGTERM)
                stop_if_interrupted(7, 9, lambda: None)
    assert signal.getsignal(signal.SIGTERM) is before and pending_signal() is None


@pytest.mark.slow  # two worker processes: the slow tier (python -m pytest -m slow)
def test_sigterm_to_a_data_parallel_runs_process_group_is_handled_by_rank_0(tmp):
    code, log = interrupted_run(tmp, signal.SIGTERM, ("trainer.processes=2", "trainer.replicate_width=0"), group=True)
    assert code == 128 + signal.SIGTERM, f"exit {code}\n{log[-3000:]}"
    assert_killed_at_a_checkpoint(tmp, log, "SIGTERM", "Terminated")


# ---------------------------------------------------------------------------------------------------------------
# A tracking server that does not answer.

def test_a_dead_tracking_server_fails_fast_naming_its_uri(tmp_path):
    with socket.socket() as held:  # bound, never listening: connections to it are refused while the test holds it
        held.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{held.getsockname()[1]}"
        res = subprocess.run([*RUN, "model=pop", "dataset=sample", f"paths.cache_dir={tmp_path / 'cache'}",
                              f"hydra.run.dir={tmp_path / 'outputs'}"], cwd=tmp_path,
                             env={**isolated_env(tmp_path), "MLFLOW_TRACKING_URI": uri}, capture_output=True,
                             text=True, timeout=60)  # MLflow's own retries took ~8 minutes
    assert res.returncode != 0, tail(res)
    assert f"MLflow tracking server {uri} does not answer (ConnectionRefusedError" in res.stderr, tail(res)


def test_a_silent_tracking_server_fails_after_the_probe_timeout_naming_its_uri():
    from runners.tracking.tracking import ensure_store

    with socket.socket() as silent:  # listening, never answering: the connection opens, no reply comes
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(RuntimeError, match=rf"MLflow tracking server {uri} does not answer \(TimeoutError: "
                                               r".*waited at most 0.5 s\)"):
            ensure_store(uri, probe_timeout_s=0.5)
