"""The shared interface, checked on every registered model built from its own conf/model/<name>.yaml (plus the
variants a yaml switches between: CNN's reference padding, DIN's PReLU, multi-head SASRec)."""
from __future__ import annotations

import importlib

import pytest
import torch

from models.registry import available_models, get_model
from tests.models.helpers import (CONF, N_ITEMS, assert_loss_ignores_padding, assert_padding_invariant,
                                  build_from_yaml, random_batch, random_candidates)
from tests.models.helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
# name -> (class in models/<name>.py, train_format)
REGISTRY = {"atrank": ("ATRank", "pointwise"), "attrec": ("AttRec", "sequence"), "bilstm": ("BiLSTM", "pointwise"),
            "bilstm_att": ("BiLSTMAttention", "pointwise"), "bpr": ("BPR", "pairwise"), "cnn": ("CNN", "pointwise"),
            "din": ("DIN", "pointwise"), "gru4rec": ("GRU4Rec", "pointwise"), "pop": ("Pop", "pairwise"),
            "sasrec": ("SASRec", "sequence")}
ALL_MODELS = sorted(REGISTRY)
VARIANTS = [pytest.param(name, {}, id=name) for name in ALL_MODELS] + [
    pytest.param("cnn", {"padding_mode": "reference"}, id="cnn-reference"),
    pytest.param("din", {"activation": "prelu"}, id="din-prelu"),
    pytest.param("sasrec", {"n_heads": 2}, id="sasrec-2heads"),
]
# allclose tolerances (always rtol=0): 1e-6 unless a yaml-sized model's float error needs more
SCORE_ATOL = {"atrank": 1e-5, "cnn": 1e-5, "cnn-reference": 1e-5,  # C = 1 vs C > 1, padding (float32 sums of 320 filters)
              "sasrec": 1e-5}  # full scores reach ~8 (float32 step 1e-6); a wider matmul may take another kernel (AMD)
FULL_ATOL = {"sasrec": 1e-5}  # full_scores vs score


def test_every_model_is_registered_with_a_yaml():
    assert available_models() == ALL_MODELS
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_name_maps_to_its_class_and_train_format(name):
    cls_name, train_format = REGISTRY[name]
    cls = get_model(name)
    assert cls is getattr(importlib.import_module(f"models.{name}"), cls_name)
    assert cls.name == name and cls.train_format == train_format


@pytest.mark.parametrize("name, over", VARIANTS)
def test_interface_shapes_and_consistency(name, over):
    model, batch = build_from_yaml(name, **over), random_batch()
    score_atol, full_atol = SCORE_ATOL.get(name, 1e-6), FULL_ATOL.get(name, 1e-6)
    model.train()
    loss = model.loss(batch)
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    model.eval()
    loss = model.loss(batch)
    assert loss.shape == () and torch.isfinite(loss)
    cands = random_candidates(batch)
    with torch.no_grad():
        scores = model.score(batch, cands)
        assert scores.shape == (4, 5) and torch.isfinite(scores).all()
        for c in range(cands.shape[1]):  # C = 1 equals the matching column of a C > 1 call
            assert torch.allclose(model.score(batch, cands[:, c:c + 1])[:, 0], scores[:, c], atol=score_atol, rtol=0)
        full, chunked = model.full_scores(batch), model.full_scores(batch, chunk=7)  # chunk 7: the last one short
        every_item = model.score(batch, torch.arange(N_ITEMS).expand(4, -1))
        assert full.shape == (4, N_ITEMS)
        assert torch.allclose(full.gather(1, cands), scores, atol=full_atol, rtol=0)
        assert torch.allclose(full, every_item, atol=full_atol, rtol=0)
        assert torch.allclose(chunked, every_item, atol=full_atol, rtol=0)
        assert torch.allclose(chunked, full, atol=full_atol, rtol=0)


@pytest.mark.parametrize("name, over", VARIANTS)
def test_padding_never_changes_a_score_or_the_loss(name, over):
    model, batch = build_from_yaml(name, **over).eval(), random_batch()
    assert_padding_invariant(model, batch, random_candidates(batch), atol=SCORE_ATOL.get(name, 1e-6))
    for training in (True, False):
        assert_loss_ignores_padding(model.train(training), batch)


def assert_short_histories_work(model, lengths: list[int]) -> None:
    batch = random_batch(lengths)
    with torch.no_grad():
        scores = model.eval().score(batch, random_candidates(batch))
    assert scores.shape == (len(lengths), 5) and torch.isfinite(scores).all()
    for training in (True, False):
        assert torch.isfinite(model.train(training).loss(batch))


@pytest.mark.parametrize("name, over", VARIANTS)
def test_history_of_length_one_scores(name, over):
    model = build_from_yaml(name, **over)
    for lengths in ([1], [1, 1], [1, 1, 1]):
        assert_short_histories_work(model, lengths)


@pytest.mark.parametrize("name, over", VARIANTS)
def test_history_of_length_zero_scores(name, over):
    model = build_from_yaml(name, **over)
    assert_short_histories_work(model, [0, 2])
