"""The shared interface, checked on every registered model built from its own conf/model/<name>.yaml (plus the
variants a yaml switches between: CNN's reference padding, DIN's PReLU, multi-head SASRec)."""
from __future__ import annotations

import importlib

import pytest
import torch
import yaml

from models.registry import available_models, get_model
from tests.models.helpers import (CONF, N_ITEMS, assert_loss_ignores_padding, assert_padding_invariant,
                                  build_from_yaml, extend_padding, random_batch, random_candidates)
from tests.models.helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
# name -> (class in models/<name>.py, train_format)
REGISTRY = {"atrank": ("ATRank", "pointwise"), "attrec": ("AttRec", "sequence"), "bilstm": ("BiLSTM", "pointwise"),
            "bert4rec": ("BERT4Rec", "sequence"), "caser": ("Caser", "sequence"),
            "bilstm_att": ("BiLSTMAttention", "pointwise"), "bpr": ("BPR", "pairwise"), "cnn": ("CNN", "pointwise"),
            "din": ("DIN", "pointwise"), "gru4rec": ("GRU4Rec", "pointwise"), "pop": ("Pop", "pairwise"),
            "sasrec": ("SASRec", "sequence")}
ALL_MODELS = sorted(REGISTRY)


def reference_params(name: str) -> dict:
    """experiment=reference's constructor overrides for `name` (its yaml's reference_params)."""
    return yaml.safe_load((CONF / f"{name}.yaml").read_text()).get("reference_params") or {}


VARIANTS = [pytest.param(name, {}, id=name) for name in ALL_MODELS] + [
    pytest.param(name, reference_params(name), id=f"{name}-reference") for name in ALL_MODELS
    if reference_params(name)] + [
    pytest.param("din", {"activation": "prelu"}, id="din-prelu"),
    pytest.param("sasrec", {"n_heads": 2}, id="sasrec-2heads"),
    pytest.param("sasrec", {"loss": "ce", "activation": "gelu", "init_std": 0.02}, id="sasrec-ce"),
    pytest.param("sasrec", {"loss": "gbce", "gbce_negatives": 16}, id="sasrec-gbce"),
]
# allclose tolerances (always rtol=0): 1e-6 unless a yaml-sized model's float error needs more
SCORE_ATOL = {"atrank": 1e-5, "cnn": 1e-5, "cnn-reference": 1e-5,  # C = 1 vs C > 1, padding (float32 sums of 320 filters)
              "sasrec": 1e-5}  # full scores reach ~8 (float32 step 1e-6); a wider matmul may take another kernel (AMD)
FULL_ATOL = {"sasrec": 1e-5}  # full_scores vs score


def test_every_model_is_registered_with_a_yaml():
    assert available_models() == ALL_MODELS
    assert sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "custom") == ALL_MODELS  # custom: models/external.py


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


def width_invariant_negatives(shape: torch.Size) -> torch.Tensor:
    """A negative per slot that depends on the slot's indices only, not on how wide the batch is padded."""
    idx = torch.zeros(shape, dtype=torch.long)
    for d, prime in zip(range(len(shape)), (7, 13, 5, 3)):
        view = [1] * len(shape)
        view[d] = shape[d]
        idx = idx + prime * torch.arange(shape[d]).view(view)
    return (idx + 1) % N_ITEMS


@pytest.mark.parametrize("name, over", VARIANTS)
def test_wider_padding_gives_the_same_loss_and_gradients(name, over):
    """Static-width batches (rounded up to a fixed set of widths) must train exactly as the narrow ones: the
    loss and every parameter's gradient are unchanged by extra padded slots (torch's RNG reset for dropout; the
    sequence models' in-model negatives, drawn per slot, fixed by slot index)."""
    if name in ("sasrec", "bert4rec"):  # dropout draws one mask per padded slot too; its function is tested
        over = {**over, "dropout": 0.0, **({"attn_dropout": 0.0} if name == "bert4rec" else {})}
    model, batch = build_from_yaml(name, **over).train(), random_batch()
    if hasattr(model, "sample_negatives"):  # sequence models draw one negative per padded slot: fix the draws
        fixed = width_invariant_negatives
        model.sample_negatives = (lambda pos, pmask: fixed(pos.shape)) if name == "attrec" else (
            lambda shape, seq, seq_mask: fixed(shape))
    if hasattr(model, "uniform_negatives"):  # SASRec's gbce: k negatives per slot [B, W, k], fixed the same way
        model.uniform_negatives = lambda shape, device: fixed(shape)
    results = []
    for b in (batch, extend_padding(batch, extra=5)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(11)
        loss = model.loss(b)
        loss.backward()
        grads = {n: None if p.grad is None else p.grad.to_dense().clone() for n, p in model.named_parameters()}
        results.append((float(loss.detach()), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_b == pytest.approx(loss_a, abs=1e-6, rel=1e-5)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_a.values()) or name == "pop"
    for n, g in grads_a.items():
        assert (g is None) == (grads_b[n] is None), n
        if g is not None:
            assert torch.allclose(grads_b[n], g, atol=1e-6, rtol=1e-5), n


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
