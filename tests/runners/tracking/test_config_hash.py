"""The config hash (skip_finished's identity of a run) covers the code of every package a run executes."""
from __future__ import annotations

import shutil

from runners.tracking.tracking import CODE_PACKAGES, code_hash, config_hash
from tests.runners.conftest import REPO_ROOT


def copy_code(dst):
    for package in CODE_PACKAGES:
        shutil.copytree(REPO_ROOT / package, dst / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_an_edit_to_shared_model_code_or_the_trainer_makes_a_new_hash(tmp_path):
    root = copy_code(tmp_path)
    before = code_hash(root)
    assert code_hash(root) == before and before == code_hash(REPO_ROOT)  # deterministic, location-independent
    cfg = {"model": {"name": "atrank"}, "trainer": {"epochs": 1}}
    for edited in ["models/layers.py", "runners/train/trainer.py", "runners/train/evaluation.py",
                   "datasets/batching.py"]:
        path = root / edited
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        assert code_hash(root) != before, edited
        assert config_hash(cfg, "data", code_hash(root)) != config_hash(cfg, "data", before), edited
        path.write_text(original)
    assert code_hash(root) == before


def test_where_a_run_writes_does_not_change_its_hash():
    cfg = {"model": {"name": "bpr"}, "trainer": {"epochs": 1, "num_threads": 1, "progress": False},
           "paths": {"cache_dir": "/a"}, "mlflow": {"tracking_uri": "x"}}
    moved = {**cfg, "trainer": {**cfg["trainer"], "progress": True}, "paths": {"cache_dir": "/b"},
             "mlflow": {"tracking_uri": "y"}}
    assert config_hash(cfg, "d", "c") == config_hash(moved, "d", "c")
    assert config_hash(cfg, "d", "c") != config_hash(cfg, "other data", "c")
    other_threads = {**cfg, "trainer": {**cfg["trainer"], "num_threads": 2}}  # results depend on the count
    assert config_hash(cfg, "d", "c") != config_hash(other_threads, "d", "c")
