"""Sweeps that survive interruptions and failures: resume after SIGKILL, skip finished configs, failure isolation,
concurrent jobs, the submitit launcher, a shared MLflow tracking server, optuna tuning with equal budgets.

Each test runs `python <repo>/runners/run.py ...` as a user would, with its own MLflow store, cache, Hydra output
folders and report folder under tmp_path, on the generated `sample` dataset with tiny budgets. The working directory
is tmp_path, not the repo root, on purpose: job processes (submitit, Slurm) start in a fresh interpreter and must find
this repo's packages from anywhere (from the repo root, the current directory on sys.path would hide that). The
submitit and tracking-server tests are marked slow (deselected by default; python -m pytest -m slow runs them).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from tests.runners.conftest import MODEL_RUNS

REPO_ROOT = Path(__file__).resolve().parents[3]
BPR = ["model=bpr", "dataset=sample", "trainer.max_steps=100", "trainer.eval_every=50", "trainer.num_threads=1"]
NO_REPORT = ["++hydra.callbacks.report.enabled=false"]


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "CI": "true", "HYDRA_FULL_ERROR": "1", "SEQREC_CACHE": str(tmp / "cache"), **extra}


def where(tmp: Path, name: str, store: str | None = "mlflow.db") -> list[str]:
    """Overrides that keep one invocation's files in tmp: cache, MLflow store (None: $MLFLOW_TRACKING_URI), Hydra
    output folders, report folder."""
    out = [f"paths.cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'outputs' / name}",
           f"hydra.sweep.dir={tmp / 'multirun' / name}", f"++hydra.callbacks.report.out_dir={tmp / 'reports' / name}"]
    return out + ([f"mlflow.tracking_uri=sqlite:///{tmp / store}"] if store else [])


RUN = [sys.executable, str(REPO_ROOT / "runners" / "run.py")]


def cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def tail(res: subprocess.CompletedProcess) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"


def runs_in(uri: str, experiment: str = "sample/paper") -> list:
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], MODEL_RUNS,
                                                     order_by=["attributes.start_time ASC"])


def job_logs(sweep_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(sweep_dir.glob("*/*.log")))


# ---------------------------------------------------------------------------------------------------------------
# 3. Resume: SIGKILL after the second checkpoint, start again, same MLflow run, bit-identical result.

SASREC = ["model=sasrec", "dataset=sample", "trainer.max_steps=200", "trainer.eval_every=25", "trainer.num_threads=1",
          "model.lr_decay_step=100", "model.lr_after_decay=5.0e-4"]  # Adam, dropout, sampled negatives, lr schedule


def latest_checkpoint_step(directory: Path) -> int:
    from runners.train.checkpoint import load_verified

    steps = [0]
    for f in directory.glob("*.pt"):
        try:
            steps.append(load_verified(f)["state"]["step"])
        except Exception:  # noqa: BLE001  (replaced while reading: read it on the next poll)
            pass
    return max(steps)


@pytest.mark.slow  # long CLI run: the slow tier (python -m pytest -m slow)
def test_sigkilled_run_resumes_in_the_same_mlflow_run_and_matches_an_uninterrupted_run(tmp_path):
    env = env_for(tmp_path)
    ref = cli([*SASREC, *where(tmp_path, "reference", "reference.db")], env, tmp_path)  # no periodic checkpoints
    assert ref.returncode == 0, tail(ref)

    args = [*SASREC, "trainer.checkpoint_every=40", *where(tmp_path, "killed", "killed.db")]
    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    checkpoints = tmp_path / "cache" / "checkpoints"
    with open(tmp_path / "killed.log", "w") as out:
        proc = subprocess.Popen([*RUN, *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline, step, evaluated = time.time() + 240, 0, 0
            while proc.poll() is None and time.time() < deadline:
                if latest_checkpoint_step(checkpoints) >= 80:  # the second checkpoint (every 40 steps) is on disk
                    (running,) = runs_in(uri)
                    evaluated = max(m.step for m in mlflow.MlflowClient(uri).get_metric_history(
                        running.info.run_id, "curve/test_auc"))
                    # kill once MLflow also has an evaluation after the checkpoint, which the resumed run redoes;
                    # frozen (SIGSTOP) while the checkpoint is read again, so that no newer one appears meanwhile
                    proc.send_signal(signal.SIGSTOP)
                    step = latest_checkpoint_step(checkpoints)
                    if evaluated > step:
                        proc.send_signal(signal.SIGKILL)
                        break
                    proc.send_signal(signal.SIGCONT)
                time.sleep(0.05)
            else:
                pytest.fail(f"the run ended or timed out before it could be killed (exit {proc.poll()})")
        finally:
            if proc.poll() is None:
                proc.kill()  # killed above, or the test failed: never leave it running
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-training ({proc.returncode}, step {step})"
    assert 80 <= latest_checkpoint_step(checkpoints) == step < evaluated < 200
    (killed,) = runs_in(uri)
    assert killed.info.status == "RUNNING"  # SIGKILL leaves no chance to end the MLflow run

    res = cli(args, env, tmp_path)
    assert res.returncode == 0, tail(res)
    assert "resumed from" in res.stdout + res.stderr
    runs, (reference,) = runs_in(uri), runs_in(f"sqlite:///{tmp_path / 'reference.db'}")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(killed.info.run_id, "FINISHED")]  # one run, not two
    run = runs[0]
    assert run.data.tags["resumed"] == "true" and "error" not in run.data.tags
    assert run.data.tags["config_hash"] == reference.data.tags["config_hash"]
    for key in ["test_auc", "best_test_auc", "best_step", "steps", "test_roc_auc"]:
        assert run.data.metrics[key] == reference.data.metrics[key], key  # bit-identical, not approximately
    client, ref_client = mlflow.MlflowClient(uri), mlflow.MlflowClient(f"sqlite:///{tmp_path / 'reference.db'}")
    for curve in ["curve/test_auc", "curve/best_test_auc", "curve/lr"]:
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, curve))
        want = sorted((m.step, m.value) for m in ref_client.get_metric_history(reference.info.run_id, curve))
        assert got == want, curve  # each evaluation logged once, even those re-done after the resume
    assert [m.step for m in sorted(client.get_metric_history(run.info.run_id, "curve/test_auc"),
                                   key=lambda m: m.step)] == list(range(25, 201, 25))
    assert not list(checkpoints.glob("*.pt"))  # a finished run removes its checkpoint


def test_a_run_resumed_after_its_early_stop_stays_stopped(tmp_path, monkeypatch):
    """Killed between the early stop and the end of the job: the checkpoint says so, training does not go on."""
    from datasets.load import load_dataset
    from datasets.split import load_split
    from datasets.batching import eval_rows
    from models.registry import get_model
    from runners.train.evaluation import TestSetGuard
    from runners.train.runtime import seed_everything
    from runners.step.settings import TrainSettings
    from runners.train.trainer import train

    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    table = load_dataset("tiny", "sample", tmp_path, tmp_path / "cache",
                         {"n_users": 300, "n_items": 200, "n_categories": 10, "seed": 0})
    split = load_split(table, tmp_path / "cache", "paper", 1234)
    settings = TrainSettings(batch_size=32, epochs=100, max_steps=3000, eval_every=5, patience=2, seed=0,
                             checkpoint_path=str(tmp_path / "ckpt.pt"), checkpoint_every=5)

    def fresh_run():
        seed_everything(0)
        model = get_model("bpr")(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                                 item_category=table.item_category, item_dim=8, cat_dim=8)
        return model, train(model, table, split, settings, TestSetGuard(eval_rows(table, split, "test"), None))

    first_model, first = fresh_run()  # leaves its final checkpoint (run.py deletes it once the job is logged)
    assert first.stopped_early and first.steps < 3000
    second_model, second = fresh_run()
    assert (second.steps, second.best_step, second.best_score) == (first.steps, first.best_step, first.best_score)
    assert all(torch.equal(a, b) for a, b in zip(first_model.state_dict().values(),
                                                 second_model.state_dict().values()))


# ---------------------------------------------------------------------------------------------------------------
# 2. Skip finished configs.

def report_tables(path: Path) -> list[str]:
    """The report's table rows (the header line carries the generation time)."""
    return [line for line in path.read_text().splitlines() if line.startswith("|")]


@pytest.mark.slow  # long CLI run: the slow tier (python -m pytest -m slow)
def test_running_a_finished_sweep_again_runs_no_job_and_leaves_the_report_unchanged(tmp_path):
    env = env_for(tmp_path)
    sweep = ["-m", *BPR, "seed=0,1", "++hydra.callbacks.report.name=sweep", "++hydra.callbacks.report.figures=false"]
    first = cli([*sweep, *where(tmp_path, "first")], env, tmp_path)
    assert first.returncode == 0, tail(first)
    assert "2 job(s): 2 finished, 0 skipped (already finished), 0 failed" in first.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = {r.info.run_id: (r.info.status, r.info.end_time, r.data.metrics) for r in runs_in(uri)}

    second = cli([*sweep, *where(tmp_path, "second")], env, tmp_path)
    assert second.returncode == 0, tail(second)
    assert "2 job(s): 0 finished, 2 skipped (already finished), 0 failed" in second.stdout
    for seed in (0, 1):
        assert f"skip bpr/sample/seed{seed}: config" in second.stdout  # each job says what it skipped
        assert f"SKIPPED bpr/sample/seed{seed}: already FINISHED as run" in second.stdout  # and the summary too
    assert "test AUC" not in job_logs(tmp_path / "multirun" / "second")  # no job trained
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "multirun" / "second").glob("*/status.json")]
    assert sorted(s["status"] for s in statuses) == ["SKIPPED", "SKIPPED"]
    assert {s["run_id"] for s in statuses} == set(before)
    after = {r.info.run_id: (r.info.status, r.info.end_time, r.data.metrics) for r in runs_in(uri)}
    assert after == before  # nothing new, nothing touched
    # the skipped configs are still in the report, which is the same as after the first sweep
    first_report, second_report = (tmp_path / "reports" / n / "sweep.md" for n in ("first", "second"))
    assert report_tables(second_report) == report_tables(first_report)
    assert any(line.startswith("| BPR | sample") for line in report_tables(second_report))

    again = cli([*sweep, "skip_finished=false", *NO_REPORT, *where(tmp_path, "forced")], env, tmp_path)
    assert again.returncode == 0 and "2 finished, 0 skipped" in again.stdout  # the switch to run them anyway
    assert len(runs_in(uri)) == 4


# ---------------------------------------------------------------------------------------------------------------
# 4. Failure isolation.

def test_one_job_raising_is_failed_in_mlflow_and_the_sweep_goes_on_and_says_so(tmp_path):
    env = env_for(tmp_path)
    res = cli(["-m", *BPR, "trainer.debug_raise=false,true", *NO_REPORT, *where(tmp_path, "sweep")], env, tmp_path)
    assert res.returncode == 1, tail(res)
    assert "2 job(s): 1 finished, 0 skipped (already finished), 1 failed" in res.stdout
    assert "FAILED bpr/sample/seed0: RuntimeError: trainer.debug_raise=True" in res.stdout
    runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert failed.data.tags["error"].startswith("RuntimeError: trainer.debug_raise=True")
    assert "Traceback" in failed.data.tags["error_traceback"]


def test_out_of_memory_marks_the_run_failed_with_the_reason(tmp_path, monkeypatch):
    from runners.run import run
    from tests.runners.conftest import compose

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder ./mlruns goes to tmp
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose([*BPR, "trainer.debug_raise=MemoryError", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"mlflow.tracking_uri={uri}"])
    with pytest.raises(MemoryError):  # main() records it and lets the sweep go on (as any Exception)
        run(cfg)
    (failed,) = runs_in(uri)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"].startswith("MemoryError: trainer.debug_raise=MemoryError")


# ---------------------------------------------------------------------------------------------------------------
# 5. Concurrent jobs on one sqlite store and one dataset cache.

@pytest.mark.slow  # long CLI run: the slow tier (python -m pytest -m slow)
def test_joblib_two_workers_four_jobs_share_a_fresh_store_and_cache_without_corruption(tmp_path):
    env = env_for(tmp_path)
    res = cli(["-m", *BPR, "seed=0,1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *NO_REPORT,
               *where(tmp_path, "sweep")], env, tmp_path)
    assert res.returncode == 0, tail(res)
    assert "4 job(s): 4 finished, 0 skipped (already finished), 0 failed" in res.stdout
    runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted((r.info.status, r.data.tags["seed"]) for r in runs) == [("FINISHED", s) for s in "0123"]
    assert all(0.5 < r.data.metrics["test_auc"] <= 1.0 for r in runs)
    logs = job_logs(tmp_path / "multirun" / "sweep")
    assert logs.count("dataset sample: cache miss") == 1 and logs.count("dataset sample: cache hit") == 3
    assert len(list((tmp_path / "cache").glob("table_sample_*.npz"))) == 1


# ---------------------------------------------------------------------------------------------------------------
# 6. Scale-out: submitit (the Slurm launcher's local twin) and a shared MLflow tracking server.

@pytest.mark.slow  # ~30 s: a process per job (python -m pytest -m slow)
def test_submitit_local_sweep_finishes_and_logs_to_mlflow(tmp_path):
    env = env_for(tmp_path)
    res = cli(["-m", *BPR, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
               *NO_REPORT, *where(tmp_path, "sweep")], env, tmp_path)
    assert res.returncode == 0, tail(res)
    assert "2 job(s): 2 finished, 0 skipped (already finished), 0 failed" in res.stdout
    assert (tmp_path / "multirun" / "sweep" / ".submitit").is_dir()  # the jobs really went through submitit
    runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted((r.info.status, r.data.tags["seed"]) for r in runs) == [("FINISHED", "0"), ("FINISHED", "1")]


def test_slurm_launcher_config_composes_with_cluster_options():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           "hydra.launcher.timeout_min=120", "hydra.launcher.cpus_per_task=4",
                                           "hydra.launcher.mem_gb=16"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb) == ("gpu", 120, 4, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path):
    """A real `mlflow server` with a database backend on 127.0.0.1:<free port>; stopped by its PID at the end."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # own process group: its workers too
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of the server we started, by its PID
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.mark.slow  # ~40 s: the server alone takes ~20 s to start on a busy 2-core machine
def test_runs_logged_through_a_tracking_server_are_found_through_it(tmp_path, tracking_server):
    env = env_for(tmp_path, MLFLOW_TRACKING_URI=tracking_server)
    res = cli([*BPR, *where(tmp_path, "run", store=None)], env, tmp_path)  # the URI comes from the environment
    assert res.returncode == 0, tail(res)
    mlflow.set_tracking_uri(tracking_server)  # put back after the test (tests/conftest.py)
    runs = mlflow.search_runs(experiment_names=["sample/paper"], filter_string=MODEL_RUNS)  # through the server's REST API
    assert len(runs) == 1 and runs["status"].iloc[0] == "FINISHED"
    assert 0.5 < runs["metrics.test_auc"].iloc[0] <= 1.0 and runs["tags.config_hash"].iloc[0]
    client = mlflow.MlflowClient(tracking_server)
    run_id = runs["run_id"].iloc[0]
    assert {a.path for a in client.list_artifacts(run_id, "outcomes")} == {"outcomes/test_outcomes.csv"}
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["server.db"]  # no local store on the side

    again = cli([*BPR, *where(tmp_path, "again", store=None)], env, tmp_path)  # skip-finished asks the server too
    assert again.returncode == 0 and f"already FINISHED as run {run_id}" in again.stdout, tail(again)


# ---------------------------------------------------------------------------------------------------------------
# 7. Tuning with equal budgets (optuna).

TUNED = ["attrec", "atrank", "bilstm", "bilstm_att", "bpr", "cnn", "din", "gru4rec", "sasrec"]


@pytest.mark.parametrize("model", TUNED)
def test_tune_config_searches_lr_embedding_and_regularisation_with_the_shared_budget(model):
    """Every choice and both ends of every interval build the model and give a finite loss on a tiny batch."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from models.registry import get_model
    from runners.config import model_params
    from tests.models.helpers import random_batch, shape_kwargs

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=tune_{model}"], return_hydra_config=True)
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
        assert sweeper.n_trials == 20 and sweeper.sampler.seed == 0  # the same budget for every model
        assert cfg.model.name == model and cfg.protocol.name == "loo_val" and cfg.protocol.select_on == "valid"
        space = dict(sweeper.params)
        assert "model.lr" in space and any(k.endswith("dim") for k in space)
        assert any(k.split(".")[-1] in ("dropout", "l2", "l2_reg", "weight_decay") for k in space)
        corners = {}
        for key, spec in space.items():
            assert OmegaConf.select(cfg, key) is not None, key  # a typo would add a key the model never reads
            inner = spec.replace("tag(log, ", "")
            if inner.startswith("choice("):
                corners[key] = [v.strip() for v in inner[len("choice("):].rstrip(")").split(",")]
            else:
                lo, hi = inner[len("interval("):].rstrip(")").split(",")
                corners[key] = [lo.strip(), hi.strip()]
        # every choice and both ends of every interval, in max(len) trials
        for i in range(max(len(v) for v in corners.values())):
            values = [v[min(i, len(v) - 1)] for v in corners.values()]
            trial = compose("config", overrides=[f"experiment=tune_{model}",
                                                 *(f"{k}={v}" for k, v in zip(corners, values))])
            net = get_model(model)(**shape_kwargs(), **model_params(trial))
            loss = net.loss(random_batch(lengths=[3, 1, 6, 4]))
            assert torch.isfinite(loss), (model, values)


def test_two_trial_optuna_sweep_runs_and_states_its_budget(tmp_path):
    env = env_for(tmp_path)
    res = cli(["-m", "experiment=tune_bpr", "hydra.sweeper.n_trials=2", *BPR[1:], *NO_REPORT,
               *where(tmp_path, "tune")], env, tmp_path)
    assert res.returncode == 0, tail(res)
    assert "2 job(s): 2 finished, 0 skipped (already finished), 0 failed" in res.stdout
    assert "tuning budget: 2 optuna trial(s) for model bpr, selected on valid (loo_val)" in res.stdout
    result = yaml.safe_load((tmp_path / "multirun" / "tune" / "optimization_results.yaml").read_text())
    runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}", "sample/loo_val")
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert {r.data.tags["tuning_trials"] for r in runs} == {"2"}
    assert len({r.data.params["model.lr"] for r in runs}) == 2  # two different trials
    assert result["best_value"] == max(r.data.metrics["best_valid_auc"] for r in runs)


def test_a_failed_trial_is_a_failed_optuna_trial_and_the_study_goes_on(tmp_path):
    """A failed job returns None (optuna 2.10 rejects NaN and the sweeper then crashes): the trial is FAIL."""
    env = env_for(tmp_path)
    # seeded random sampler: trial 0 raises, trial 1 runs (the grid sampler cannot end on a failed trial in
    # hydra-optuna-sweeper 1.3: its GridSampler.stop() outside optimize() raises)
    res = cli(["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
               "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
               "protocol=loo_val",
               "trainer.debug_raise=choice(false,true)", *BPR, *NO_REPORT, *where(tmp_path, "tune")], env, tmp_path)
    assert res.returncode == 1, tail(res)  # the summary's exit code: one job failed
    assert "2 job(s): 1 finished, 0 skipped (already finished), 1 failed" in res.stdout
    assert "Failed experiment" in res.stdout + res.stderr  # optuna recorded the failed trial
    result = yaml.safe_load((tmp_path / "multirun" / "tune" / "optimization_results.yaml").read_text())
    assert result["best_params"] == {"trainer.debug_raise": False}
    (finished,) = [r for r in runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}", "sample/loo_val")
                   if r.info.status == "FINISHED"]
    assert result["best_value"] == finished.data.metrics["best_valid_auc"]
