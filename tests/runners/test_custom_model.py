"""Your own model (README): `model=custom model.target=package.module:Class` runs a class from a temporary package
through the main command to a FINISHED MLflow run that records the target and its source file's sha256; the gate
before training refuses a class that breaks the interface, before any data is read."""
from __future__ import annotations

import hashlib
import shutil

import mlflow
import pytest

from runners.config import check_config, job_settings
from tests.runners.conftest import REPO_ROOT, compose, run_cli

EXAMPLE = REPO_ROOT / "examples" / "my_model.py"


def test_a_model_from_a_temporary_package_runs_to_a_finished_run(isolated, tmp_path):
    (tmp_path / "mine_cli").mkdir()
    (tmp_path / "mine_cli" / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, tmp_path / "mine_cli" / "tiny.py")
    env = {**isolated, "PYTHONPATH": str(tmp_path)}
    res = run_cli(["model=custom", "model.target=mine_cli.tiny:MeanOfHistory", "+model.params.dim=16",
                   "dataset=sample", "trainer.max_steps=30", "trainer.eval_every=15", "trainer.num_threads=1"],
                  env, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("sample/paper").experiment_id])
    sha = hashlib.sha256((tmp_path / "mine_cli" / "tiny.py").read_bytes()).hexdigest()
    assert run.info.status == "FINISHED" and run.info.run_name == "custom/sample/seed0"
    assert run.data.params["model.target"] == "mine_cli.tiny:MeanOfHistory"
    assert run.data.params["model.source_sha256"] == run.data.tags["model_source_sha256"] == sha
    assert run.data.params["model.params.dim"] == "16" and run.data.tags["model"] == "custom"
    assert 0.0 <= run.data.metrics["test_auc"] <= 1.0 and run.data.metrics["steps"] == 30


def test_the_gate_refuses_a_broken_class_and_a_missing_target(tmp_path, monkeypatch):
    (tmp_path / "mine_gate.py").write_text("from models.interface import SeqRecModel\n\n\n"
                                           "class Half(SeqRecModel):\n    train_format = 'sequence'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"(?s)model.target='mine_gate:Half' .*does not fit the model interface.*"
                                         r"no loss\(batch\).*no score\(batch, candidates"):
        check_config(compose(["model=custom", "model.target=mine_gate:Half"]))
    with pytest.raises(ValueError, match=r"model.name='custom' is not a registered model \(.*\) and model.target is "
                                         "not set"):
        check_config(compose(["model=custom"]))


def test_a_registered_model_records_no_target():
    job = job_settings(compose(["model=sasrec"]))
    assert job.model_target is None and "model_source_sha256" not in job.tags
    assert job.resolved["model"].get("target") is None and "source_sha256" not in job.resolved["model"]
