"""Bad settings stop before anything runs, with the key and what was expected (never a FINISHED run of an
untrained model)."""
from __future__ import annotations

import pytest

from tests.runners.conftest import compose

BASE = ["model=bpr", "dataset=sample"]


@pytest.mark.parametrize("override,message", [
    ("model.batch_size=-32", "model.batch_size must be an integer >= 1, got -32"),
    ("model.batch_size=0", "model.batch_size must be an integer >= 1, got 0"),
    ("trainer.epochs=0", "must be >= 1, got 0"),
    ("trainer.max_steps=0", "trainer.max_steps must be >= 1 or null, got 0"),
    ("model.lr=nan", "model.lr must be a finite number > 0, got nan"),
    ("model.lr=-1", "model.lr must be a finite number > 0, got -1"),
    ("model.optimizer=rmsprop", "model.optimizer must be one of sgd, adam, adagrad, got 'rmsprop'"),
    ("+trainer.max_step=200", "unknown trainer setting(s) ['max_step']"),
    ("trainer.bucket_chunk=0", "trainer.bucket_chunk must be an integer >= 1, got 0"),
])
def test_bad_setting_stops_before_any_run_with_its_key(override, message, tmp_path, monkeypatch):
    from runners.run import run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose([*BASE, override, f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}"])
    with pytest.raises(ValueError) as err:
        run(cfg)
    assert message in str(err.value)
    assert not (tmp_path / "mlflow.db").exists()  # stopped before the store, the data and any MLflow run


def test_good_settings_pass():
    from runners.config import check_config

    check_config(compose([*BASE, "trainer.max_steps=5", "model.batch_size=16"]))


def test_bert4rec_random_windows_need_the_whole_sequence_in_batches():
    from runners.config import check_config

    random = ["model=bert4rec", "dataset=sample", "model.params.train_window=random"]
    with pytest.raises(ValueError, match="model.max_len=50 cuts every batch to the last 50 items: set "
                                         "model.max_len=null"):
        check_config(compose(random))
    check_config(compose([*random, "model.max_len=null"]))
    check_config(compose(["model=bert4rec", "dataset=sample"]))


@pytest.mark.parametrize("override, message", [
    pytest.param("model.batch_size=-32", "model.batch_size must be an integer >= 1", id="negative-batch",
                 marks=pytest.mark.slow),  # (in-process above; one CLI case stays in the default tier)
    pytest.param("trainer.epochs=0", "must be >= 1", id="zero-epochs", marks=pytest.mark.slow),
    pytest.param("+trainer.max_step=200", "unknown trainer setting(s) ['max_step']", id="typo-key"),
])
def test_bad_setting_exits_1_from_the_command_line_and_logs_no_run(override, message, tmp_path):
    import mlflow

    from tests.runners.conftest import isolated_env, run_cli

    env = isolated_env(tmp_path)
    res = run_cli(["model=bpr", "dataset=sample", override], env, tmp_path)
    assert res.returncode == 1 and message in res.stderr, res.stderr[-2000:]
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
