"""The shared interface, checked on every registered model built from its own conf/model/<name>.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from models.registry import available_models, get_model
from tests.models.helpers import (N_ITEMS, extend_padding, random_batch, random_candidates, row_alone,
                                  scramble_padding, shape_kwargs)
from tests.models.helpers import one_thread  # noqa: F401

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
pytestmark = pytest.mark.usefixtures("one_thread")
ALL_MODELS = ["atrank", "attrec", "bilstm", "bilstm_att", "bpr", "cnn", "din", "gru4rec", "pop", "sasrec"]


def build(name: str, seed: int = 0):
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert cfg["name"] == name
    torch.manual_seed(seed)
    model = get_model(name)(**shape_kwargs(), **(cfg["params"] or {}))
    assert model.train_format == cfg["train_format"]
    return model


def test_every_model_is_registered_with_a_yaml():
    assert available_models() == sorted(ALL_MODELS)
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_interface_shapes_and_consistency(name):
    model = build(name)
    batch = random_batch()
    model.train()
    loss = model.loss(batch)
    assert loss.shape == () and torch.isfinite(loss)
    model.eval()
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    assert scores.shape == (4, 5) and torch.isfinite(scores).all()
    one = model.score(batch, cands[:, 2:3])  # C = 1 equals the matching column of a C > 1 call
    assert torch.allclose(one[:, 0], scores[:, 2], atol=1e-5)
    full = model.full_scores(batch)
    assert full.shape == (4, N_ITEMS)
    assert torch.allclose(full.gather(1, cands), scores, atol=1e-4)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_padding_never_changes_a_score(name):
    model = build(name).eval()
    batch = random_batch()
    cands = random_candidates(batch)
    with torch.no_grad():
        base = model.score(batch, cands)
        assert torch.allclose(model.score(scramble_padding(batch), cands), base, atol=1e-5)
        assert torch.allclose(model.score(extend_padding(batch), cands), base, atol=1e-5)
        for i in range(len(batch)):  # a row alone, padded to its own length, scores the same
            assert torch.allclose(model.score(row_alone(batch, i), cands[i:i + 1]), base[i:i + 1], atol=1e-5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_history_of_length_one_scores(name):
    model = build(name).eval()
    batch = random_batch(lengths=[1, 1])
    with torch.no_grad():
        assert torch.isfinite(model.score(batch, random_candidates(batch))).all()
