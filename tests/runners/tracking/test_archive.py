"""runners/archive.py: a store exported, deleted and restored gives back its runs and their outcomes."""
from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest

from reports.runs import OUTCOMES_ARTIFACT, load_outcomes
from runners import archive
from runners.tracking.tracking import ensure_store, get_or_create_experiment


def make_store(tmp_path, n_runs=3):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    ensure_store(uri)
    experiment_id = get_or_create_experiment(mlflow.MlflowClient(uri), "clothing_seq/loo_val", uri)
    mlflow.set_tracking_uri(uri)
    rng = np.random.default_rng(0)
    keys = pd.DataFrame({"reviewerID": [f"A{i:05d}" for i in range(50)], "pos": [f"B{i:04d}" for i in range(50)],
                         "neg": [f"C{i:04d}" for i in range(50)]})
    ids = []
    for r in range(n_runs):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            pos, neg = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32)
            df = keys.assign(score_pos=pos, score_neg=neg, correct=(pos > neg).astype(int))
            mlflow.log_text(df.to_csv(index=False), OUTCOMES_ARTIFACT)
            mlflow.set_tag("model", f"m{r}")
            ids.append(run.info.run_id)
    return uri, ids


def test_export_then_restore_gives_back_every_run_and_its_outcomes(tmp_path):
    uri, ids = make_store(tmp_path)
    before = load_outcomes(uri, ids)
    result = archive.export(uri, tmp_path / "archive")
    assert result == {"runs_added": 3, "runs_archived": 3}
    assert len(list((tmp_path / "archive" / "outcomes").glob("keys_*.csv.xz"))) == 1  # the keys once
    assert archive.export(uri, tmp_path / "archive")["runs_added"] == 0  # incremental
    shutil.rmtree(tmp_path / "mlruns")
    assert archive.restore(tmp_path / "archive", uri) == {"runs_restored": 3}
    after = load_outcomes(uri, ids)
    for rid in ids:
        pd.testing.assert_frame_equal(after[rid], before[rid], check_dtype=False)
    assert mlflow.MlflowClient(uri).get_run(ids[1]).data.tags["model"] == "m1"


def test_restore_never_overwrites_a_store(tmp_path):
    uri, _ = make_store(tmp_path, n_runs=1)
    archive.export(uri, tmp_path / "archive")
    with pytest.raises(FileExistsError, match="exists: restore into a new store"):
        archive.restore(tmp_path / "archive", uri)
    with pytest.raises(ValueError, match="must be a sqlite URI"):
        archive.export("http://localhost:5000", tmp_path / "x")
