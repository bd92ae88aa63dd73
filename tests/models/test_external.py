"""model=custom: a class from a temporary package (or a `seqrec.models` entry point) is found, checked and built;
a class that breaks the interface is refused with one error naming the target and each missing piece."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from models.external import external_model, load_target, model_class, source_file
from tests.models.helpers import N_ITEMS, random_batch, random_candidates, shape_kwargs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "my_model.py"
BROKEN = '''
import torch
from models.interface import PointwiseModel, SeqRecModel


class NoLoss(SeqRecModel):
    train_format = "sequence"

    def __init__(self, n_users, n_items, n_categories, item_category):
        super().__init__()

    def score(self, batch, candidates):
        return candidates.float()


class NoLossOddFormat(NoLoss):
    train_format = "listwise"

    def score(self, batch, candidates):  # still no loss
        return candidates.float()


class WrongConstructor(SeqRecModel):
    def __init__(self, n_items, width):
        super().__init__()

    def loss(self, batch):
        return torch.zeros(())

    def score(self, batch, candidates):
        return candidates.float()


class NoLogits(PointwiseModel):
    def __init__(self, n_users, n_items, n_categories, item_category):
        super().__init__()


class NotAModel:
    def __init__(self, n_users, n_items, n_categories, item_category):
        pass
'''


@pytest.fixture
def package(tmp_path, monkeypatch) -> Path:
    """A package `mine_tmp` outside the repository: tiny.py (the README's example) and broken.py; on sys.path."""
    root = tmp_path / "mine_tmp"
    root.mkdir()
    (root / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, root / "tiny.py")
    (root / "broken.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    import sys

    for name in [m for m in sys.modules if m.split(".")[0] == "mine_tmp"]:
        del sys.modules[name]


def test_the_example_model_is_found_checked_built_and_scores(package):
    cls = model_class("custom", "mine_tmp.tiny:MeanOfHistory", ["dim"])
    assert cls.__name__ == "MeanOfHistory" and cls.train_format == "pairwise"
    model = cls(**shape_kwargs(), dim=8)
    batch = random_batch()
    assert model.score(batch, random_candidates(batch)).shape == (len(batch), 5)
    assert model.full_scores(batch).shape == (len(batch), N_ITEMS)
    pairwise = random_batch([3, 0, 2, 4])
    assert torch.isfinite(model.loss(type(pairwise)(**{**pairwise.__dict__, "label": None})))
    path, sha = source_file(cls)
    assert path == str((package / "tiny.py").resolve())
    assert sha == hashlib.sha256((package / "tiny.py").read_bytes()).hexdigest()


def test_an_entry_point_names_the_class(package, tmp_path):
    dist = tmp_path / "mine_tmp-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mine_tmp\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[seqrec.models]\nmean_of_history = mine_tmp.tiny:MeanOfHistory\n")
    assert load_target("mean_of_history").__name__ == "MeanOfHistory"
    with pytest.raises(ValueError, match=r"no 'seqrec.models' entry point of that name \(installed: mean_of_history\)"):
        load_target("mean_of_histories")


@pytest.mark.parametrize("target, params, said", [
    ("mine_tmp.broken:NoLoss", [], ["no loss(batch) -> Tensor []"]),
    ("mine_tmp.broken:NoLossOddFormat", [], ["no loss(batch)", "train_format = 'listwise', expected one of"]),
    ("mine_tmp.broken:WrongConstructor", ["depth"],
     ["without the data argument(s) n_users, n_categories, item_category", "model.params argument(s) depth",
      "width have no default and are not in model.params"]),
    ("mine_tmp.broken:NoLogits", [], ["no logits_and_penalty(batch, candidates, penalty)"]),
    ("mine_tmp.broken:NotAModel", [], ["is not a subclass of models.interface.SeqRecModel"]),
])
def test_a_class_that_breaks_the_interface_is_refused_with_what_is_missing(package, target, params, said):
    with pytest.raises(ValueError) as err:
        external_model(target, params)
    message = str(err.value)
    assert message.startswith(f"model.target={target!r} (") and "does not fit the model interface" in message
    assert str(package / "broken.py") in message
    for part in said:
        assert part in message, message


@pytest.mark.parametrize("name, target, said", [
    ("custom", "mine_tmp.nowhere:Model", "cannot import 'mine_tmp.nowhere' (ModuleNotFoundError"),
    ("custom", "not_a_package_anywhere.tiny:Model", "put its folder on PYTHONPATH or install its package"),
    ("custom", "mine_tmp.tiny:Nope", "'mine_tmp.tiny' has no attribute 'Nope'"),
    ("custom", "mine_tmp/tiny.py:MeanOfHistory", "expected package.module:Class, or the name of a 'seqrec.models'"),
    ("custom", "mine_tmp.tiny:", "expected package.module:Class"),
    ("custom", "", "expected package.module:Class"),
    ("custom", None, "model.name='custom' is not a registered model"),
    ("sasrec", "mine_tmp.tiny:MeanOfHistory", "with model.name='sasrec', a registered model's name"),
])
def test_a_target_that_names_no_class_is_refused(package, name, target, said):
    with pytest.raises(ValueError) as err:
        model_class(name, target)
    assert said in str(err.value), str(err.value)


def test_a_registered_model_needs_no_target():
    assert model_class("sasrec", None).__name__ == "SASRec"
