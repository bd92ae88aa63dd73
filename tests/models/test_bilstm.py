"""Bi-LSTM: interface shapes, padding never leaks, candidates share the user vector, a tiny fit."""
from __future__ import annotations

import pytest
import torch

from models.bilstm import BiLSTM
from models.registry import get_model
from tests.models.helpers import (N_ITEMS, extend_padding, one_thread, planted_batch, random_batch,  # noqa: F401
                                  random_candidates, row_alone, scramble_padding, shape_kwargs)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0) -> BiLSTM:
    torch.manual_seed(seed)
    return BiLSTM(**shape_kwargs(), item_dim=8, cat_dim=8, dim=12).eval()


def test_registered():
    assert get_model("bilstm") is BiLSTM


def test_shapes_and_full_scores_agree_with_score():
    model, batch = make_model(), random_batch()
    loss = model.loss(batch)
    assert loss.shape == () and torch.isfinite(loss)
    assert model.score(batch, random_candidates(batch)).shape == (4, 5)
    full = model.full_scores(batch)
    assert full.shape == (4, N_ITEMS)
    every_item = torch.arange(N_ITEMS).expand(4, -1)
    assert torch.allclose(full, model.score(batch, every_item), atol=1e-6)


def test_padding_never_changes_scores():
    model, batch = make_model(), random_batch([3, 1, 6, 4])
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    assert torch.allclose(scores, model.score(scramble_padding(batch), cands), atol=1e-6, rtol=0)
    assert torch.allclose(scores, model.score(extend_padding(batch), cands), atol=1e-6, rtol=0)
    for i in range(len(batch)):  # a row's score does not depend on how far its batch is padded
        assert torch.allclose(scores[i], model.score(row_alone(batch, i), cands[i:i + 1])[0], atol=1e-6, rtol=0)


def test_one_candidate_equals_its_column():
    model, batch = make_model(), random_batch()
    cands = random_candidates(batch)
    many = model.score(batch, cands)
    for c in range(cands.shape[1]):
        assert torch.allclose(model.score(batch, cands[:, c:c + 1])[:, 0], many[:, c], atol=1e-6, rtol=0)


def test_length_one_and_zero_histories():
    model = make_model()
    batch = random_batch([1, 1])
    assert torch.isfinite(model.score(batch, random_candidates(batch))).all()
    empty = random_batch([0, 2])
    assert torch.isfinite(model.score(empty, random_candidates(empty))).all()


def test_sgd_reduces_loss():
    model, batch = make_model().train(), planted_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = model.loss(batch).item()
    for _ in range(30):
        opt.zero_grad()
        model.loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    assert model.loss(batch).item() < first - 0.1
