"""The main command end to end: Hydra sweep -> training -> MLflow, failures, determinism."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest

from runners.run import run, run_summary
from runners.step.settings import TrainSettings
from tests.runners.conftest import MODEL_RUNS, compose, run_cli

QUICK = ["trainer.max_steps=150", "trainer.eval_every=50", "trainer.num_threads=1"]


ALL_MODELS = "bpr,bilstm,bilstm_att,cnn,din,attrec,atrank,gru4rec,sasrec,bert4rec,caser,pop"


def test_sweep_of_every_model_logs_finished_runs_with_params_curves_and_provenance(isolated, tmp_path):
    res = run_cli(["-m", f"model={ALL_MODELS}", "dataset=sample", *QUICK], isolated, tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "12 finished, 0 skipped (already finished), 0 failed" in res.stdout
    mlflow.set_tracking_uri(isolated["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["sample/paper"], filter_string=MODEL_RUNS)
    assert sorted(runs["tags.model"]) == sorted(ALL_MODELS.split(","))
    assert (runs["status"] == "FINISHED").all()
    assert {"bpr/sample/seed0", "atrank/sample/seed0"} <= set(runs["tags.mlflow.runName"])
    for col in ["params.model.lr", "params.model.batch_size", "params.trainer.max_steps", "params.dataset.name",
                "params.protocol.name", "params.seed"]:
        assert runs[col].notna().all(), col
    for tag in ["git_commit", "git_dirty", "data_hash", "config_hash", "split_hash", "torch_version",
                "python_version", "host", "protocol_label"]:
        assert runs[f"tags.{tag}"].str.len().gt(0).all(), tag
    assert (runs["metrics.examples_per_s"] > 0).all()
    # the paper protocol selects on test: the final test read, with the selected weights loaded, scores exactly
    # the best test AUC of the curve, at the step the run names
    assert (runs["metrics.test_auc"] == runs["metrics.best_test_auc"]).all()
    client = mlflow.MlflowClient()
    for _, r in runs.iterrows():
        steps = int(r["metrics.steps"])
        assert steps == 150 or r["tags.model"] == "pop"  # pop's one epoch is shorter
        curve = client.get_metric_history(r["run_id"], "curve/test_auc")
        assert [m.step for m in curve] == sorted({*range(50, steps + 1, 50), steps})
        best = max(curve, key=lambda m: (m.value, -m.step))  # the first of equal AUCs is the one kept
        assert (best.value, best.step) == (r["metrics.best_test_auc"], r["metrics.best_step"]), r["tags.model"]
        assert {a.path for a in client.list_artifacts(r["run_id"], "outcomes")} == {"outcomes/test_outcomes.csv"}
    # the sweep is one parent run holding the report, its jobs nested; each job names its dataset as an input
    exp = client.get_experiment_by_name("sample/paper")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = client.search_runs([exp.experiment_id], "tags.sweep_parent = 'true'")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_overrides"].startswith(f"model={ALL_MODELS}")
    assert (runs["tags.mlflow.parentRunId"] == parent.info.run_id).all()
    report = [a.path for a in client.list_artifacts(parent.info.run_id, "report")]
    assert any(p.endswith(".md") for p in report) and any(p.endswith("_auc.png") for p in report)
    for _, r in runs.iterrows():
        (data_input,) = client.get_run(r["run_id"]).inputs.dataset_inputs
        assert (data_input.dataset.name, data_input.dataset.digest) == ("sample", r["tags.data_hash"])


def test_nan_job_fails_while_the_other_job_of_the_sweep_finishes(isolated, tmp_path):
    res = run_cli(["-m", "model=bpr", "dataset=sample", "trainer.debug_nan_at_step=null,20", "skip_finished=false",
                   *QUICK], isolated, tmp_path)
    assert res.returncode == 1
    assert "1 finished, 0 skipped (already finished), 1 failed" in res.stdout
    mlflow.set_tracking_uri(isolated["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["sample/paper"], filter_string=MODEL_RUNS)
    assert sorted(runs["status"]) == ["FAILED", "FINISHED"]
    failed = runs[runs["status"] == "FAILED"].iloc[0]
    assert "FloatingPointError" in failed["tags.error"] and "step 20" in failed["tags.error"]


def test_single_run_failure_exits_nonzero(isolated, tmp_path):
    res = run_cli(["model=bpr", "dataset=sample", "trainer.debug_nan_at_step=5", *QUICK], isolated, tmp_path)
    assert res.returncode != 0 and "loss is nan at step 5" in res.stderr


def test_same_seed_twice_gives_identical_auc(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = ["model=atrank", "dataset=sample", *QUICK, f"paths.cache_dir={tmp_path / 'cache'}",
                 f"mlflow.tracking_uri={uri}", "skip_finished=false"]
    first, second = run(compose(overrides)), run(compose(overrides))
    assert first["run_id"] != second["run_id"]
    assert first["test_auc"] == second["test_auc"]  # one thread, same seed: bit-identical
    other_seed = run(compose(overrides + ["seed=1"]))
    assert other_seed["test_auc"] != first["test_auc"]


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="Could not find 'model/nope'"):
        compose(["model=nope"])


def test_atrank_behaviour_groups_train_end_to_end_and_name_their_data(tmp_path):
    """behavior_groups=typed on the generated multi/-shaped data, through the main entry point: a FINISHED run whose
    data hash covers the groups (items only is other data)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["model=atrank", "dataset=hetero_sample", "model.params.behavior_groups=typed", "dataset.options.n_users=300",
            "trainer.max_steps=40", "trainer.eval_every=20", "trainer.num_threads=1", "protocol=loo_val",
            f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}"]
    full, items_only = run(compose(base)), run(compose(base + ["dataset.options.behaviours=[]"]))
    runs = mlflow.MlflowClient(uri).search_runs([mlflow.MlflowClient(uri).get_experiment_by_name(
        "hetero_sample/loo_val").experiment_id], MODEL_RUNS)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["data_hash"] for r in runs}) == 2
    for result in (full, items_only):  # the logged AUC is the one the logged per-user outcomes give
        outcomes = logged_outcomes(uri, result["run_id"], tmp_path / result["run_id"])
        assert len(outcomes) == result["n_test_users"] == 300
        assert (outcomes["correct"] == (outcomes["score_pos"] > outcomes["score_neg"])).all()
        assert outcomes["correct"].mean() == result["test_auc"]


def logged_outcomes(uri: str, run_id: str, dst: Path) -> pd.DataFrame:
    """A run's outcomes/test_outcomes.csv artifact (one row per test user), downloaded into `dst`."""
    dst.mkdir()
    return pd.read_csv(mlflow.MlflowClient(uri).download_artifacts(run_id, "outcomes/test_outcomes.csv", str(dst)))


def test_a_runs_log_line_says_what_it_does_in_one_readable_line():
    job = SimpleNamespace(run_name="atrank/clothing_seq/seed0", model="atrank", data=SimpleNamespace(
        dataset="clothing_seq"), tags={"protocol": "paper"}, label="test-set selection (as in the paper)",
        processes=1, threads=1, select_on="test", select_metric="auc")
    settings = TrainSettings(optimizer="sgd", lr=1.0, batch_size=32, epochs=10, max_steps=2000, eval_every=1000)
    assert run_summary(job, settings, 1234567) == (
        "atrank/clothing_seq/seed0: atrank (1,234,567 params) on clothing_seq, protocol paper: test-set selection "
        "(as in the paper); up to 10 epochs or 2,000 steps of sgd lr 1, batch 32, evaluated every 1,000 steps "
        "(selects on test auc); device cpu fp32, 1 thread")
