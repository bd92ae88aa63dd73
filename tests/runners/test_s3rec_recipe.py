"""experiment=s3rec: the S3Rec repository's settings, common ones from conf/experiment/s3rec.yaml and each model's
own from conf/model_recipe/s3rec/<model>.yaml (merged by conf/config.yaml's `model_recipe` default); a
command-line override still wins; every shipped recipe file composes, passes the gate and builds."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from runners.config import check_config, job_settings
from runners.run import build_model
from tests.runners.conftest import REPO_ROOT, compose

RECIPES = REPO_ROOT / "conf" / "model_recipe"


def test_sasrec_gets_s3recs_transformer():
    cfg = compose(["model=sasrec", "experiment=s3rec"])
    check_config(cfg)
    job = job_settings(cfg)
    assert {k: job.params[k] for k in ("dim", "n_blocks", "n_heads", "dropout", "max_len", "activation", "init_std",
                                       "loss")} == {"dim": 64, "n_blocks": 2, "n_heads": 2, "dropout": 0.5,
                                                    "max_len": 50, "activation": "gelu", "init_std": 0.02,
                                                    "loss": "bce"}
    s = job.settings
    assert (s.optimizer, s.lr, s.weight_decay, s.batch_size, s.epochs, s.max_len, s.eval_every, s.patience,
            s.clip_norm, s.lr_decay_step) == ("adam", 1e-3, 0.0, 256, 200, 51, 0, 10, None, None)
    assert job.tags["recipe"] == "s3rec" and job.select_on == "valid"
    assert job.resolved["model"]["params"]["activation"] == "gelu"  # logged as model.params.activation


def test_the_common_settings_reach_a_model_without_a_recipe_file_and_the_command_line_wins():
    job = job_settings(compose(["model=atrank", "experiment=s3rec"]))
    assert (job.settings.batch_size, job.settings.max_len, job.settings.optimizer) == (256, 50, "adam")
    assert job.params == job_settings(compose(["model=atrank"])).params  # no atrank block: its own params
    job = job_settings(compose(["model=sasrec", "experiment=s3rec", "model.params.n_heads=4", "model.batch_size=64",
                                "model.params.loss=ce"]))
    assert (job.params["n_heads"], job.settings.batch_size, job.params["loss"]) == (4, 64, "ce")
    assert job_settings(compose(["model=sasrec"])).params["activation"] == "relu"  # no experiment: no recipe


def test_gru4rec_and_pop():
    job = job_settings(compose(["model=gru4rec", "experiment=s3rec"]))
    assert (job.params["hidden"], job.params["dropout"], job.params["l2_reg"], job.settings.max_len) == (64, 0.5, 0.0,
                                                                                                        50)
    job = job_settings(compose(["model=pop", "experiment=s3rec"]))
    assert (job.settings.epochs, job.settings.lr, job.settings.optimizer) == (1, 0.0, "sgd")


def recipe_files() -> list:
    return sorted(RECIPES.glob("*/*.yaml"))


@pytest.mark.parametrize("path", recipe_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recipe_file_composes_passes_the_gate_and_builds(path):
    experiment, model = path.parent.name, path.stem
    assert (REPO_ROOT / "conf" / "experiment" / f"{experiment}.yaml").is_file()
    if not (REPO_ROOT / "conf" / "model" / f"{model}.yaml").is_file():  # a marked entry for a model to come
        assert not yaml.safe_load(path.read_text()) and "LEAD: fill" in path.read_text()
        return
    cfg = compose([f"model={model}", f"experiment={experiment}"])
    check_config(cfg)
    block = yaml.safe_load(path.read_text())
    for key, value in block.items():  # every value of the file is what the run gets
        got = cfg.model[key]
        assert (dict(got) if key == "params" else got) == ({**cfg.model.params, **value} if key == "params" else value)
    table = SimpleNamespace(n_users=9, n_items=40, n_categories=3, item_category=np.arange(40) % 3, behaviours=())
    assert sum(p.numel() for p in build_model(job_settings(cfg), table).parameters()) > 0
