"""experiment=reference composes the official code's recipe for every Table 3 model."""
from __future__ import annotations

import pytest

from runners.config import model_params, train_settings
from tests.runners.conftest import compose

# model: (epochs, clip_norm, lr_decay_step, reshuffle, params the reference mode must set)
OFFICIAL = {
    "bpr": (50, None, None, False, {}),
    "bilstm": (50, 5.0, 336000, True, {}),
    "bilstm_att": (50, 5.0, 336000, True, {}),
    "cnn": (50, 5.0, 336000, True, {"padding_mode": "reference"}),
    "atrank": (10, 5.0, 336000, True, {"time_slots": 12}),
}


@pytest.mark.parametrize("model", sorted(OFFICIAL))
def test_reference_recipe(model):
    cfg = compose([f"model={model}", "experiment=reference"])
    s = train_settings(cfg, None)
    epochs, clip, decay, reshuffle, params = OFFICIAL[model]
    assert cfg.protocol.name == "paper" and cfg.protocol.split_seed == 1234 and s.select_on == "test"
    assert (s.optimizer, s.lr, s.batch_size, s.eval_every, s.bucket_by_length) == ("sgd", 1.0, 32, 1000, False)
    assert (s.epochs, s.clip_norm, s.lr_decay_step, s.reshuffle) == (epochs, clip, decay, reshuffle)
    assert s.lr_decay_step is None or s.lr_after_decay == 0.1
    got = model_params(cfg)
    assert got["l2_reg"] == 5e-5 and {k: got[k] for k in params} == params


def test_default_recipe_is_the_cleaner_one():
    cnn, atrank = compose(["model=cnn"]), compose(["model=atrank"])
    assert model_params(cnn)["padding_mode"] == "valid" and model_params(atrank)["time_slots"] == 13
    assert train_settings(cnn, None).bucket_by_length and train_settings(cnn, None).bucket_chunk == 1024
    assert train_settings(compose(["model=cnn", "trainer.bucket_chunk=64"]), None).bucket_chunk == 64
    assert train_settings(compose(["model=cnn", "experiment=reference", "trainer.epochs=1"]), None).epochs == 1


def test_reference_run_logs_the_params_it_built(tmp_path):
    import mlflow

    from runners.run import run

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    out = run(compose(["model=cnn", "experiment=reference", "dataset=sample", "trainer.max_steps=3",
                       "trainer.eval_every=3", "trainer.num_threads=1", f"paths.cache_dir={tmp_path / 'c'}",
                       f"mlflow.tracking_uri={uri}"]))
    mlflow.set_tracking_uri(uri)
    params = mlflow.get_run(out["run_id"]).data.params
    assert params["model.params.padding_mode"] == "reference" and params["recipe"] == "reference"
