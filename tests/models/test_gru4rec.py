"""GRU4Rec: interface shapes, padding never leaks, candidates share the user vector, a tiny fit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from models.gru4rec import GRU4Rec
from models.registry import get_model
from tests.models.helpers import (N_ITEMS, extend_padding, planted_batch, random_batch, random_candidates, row_alone,
                                  scramble_padding, shape_kwargs)
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

CONF = Path(__file__).resolve().parents[2] / "conf" / "model" / "gru4rec.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is far faster on a shared CPU


def make_model(seed: int = 0) -> GRU4Rec:
    torch.manual_seed(seed)
    return GRU4Rec(**shape_kwargs(), item_dim=8, cat_dim=8, hidden=12).eval()


def test_registered_and_yaml_builds():
    cfg = yaml.safe_load(CONF.read_text())
    assert get_model(cfg["name"]) is GRU4Rec and cfg["train_format"] == GRU4Rec.train_format
    GRU4Rec(**shape_kwargs(), **cfg["params"])


def test_shapes_and_full_scores_agree_with_score():
    model, batch = make_model(), random_batch()
    loss = model.loss(batch)
    assert loss.shape == () and torch.isfinite(loss)
    assert model.score(batch, random_candidates(batch)).shape == (4, 5)
    full = model.full_scores(batch)
    assert full.shape == (4, N_ITEMS)
    assert torch.allclose(full, model.score(batch, torch.arange(N_ITEMS).expand(4, -1)), atol=1e-5)


def test_padding_never_changes_scores():
    model, batch = make_model(), random_batch([3, 1, 6, 4])
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    assert torch.allclose(scores, model.score(scramble_padding(batch), cands), atol=1e-6, rtol=0)
    assert torch.allclose(scores, model.score(extend_padding(batch), cands), atol=1e-6, rtol=0)
    assert torch.allclose(model.full_scores(batch), model.full_scores(scramble_padding(batch)), atol=1e-6, rtol=0)
    for i in range(len(batch)):
        assert torch.allclose(scores[i], model.score(row_alone(batch, i), cands[i:i + 1])[0], atol=1e-6, rtol=0)


def test_one_candidate_equals_its_column():
    model, batch = make_model(), random_batch()
    cands = random_candidates(batch)
    many = model.score(batch, cands)
    for c in range(cands.shape[1]):
        assert torch.allclose(model.score(batch, cands[:, c:c + 1])[:, 0], many[:, c], atol=1e-6, rtol=0)


def test_length_one_histories():
    model, batch = make_model(), random_batch([1, 1, 1])
    assert torch.isfinite(model.score(batch, random_candidates(batch))).all()
    assert torch.isfinite(model.loss(batch))


def test_fits_a_planted_rule():
    torch.manual_seed(0)
    model, batch = make_model().train(), planted_batch()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = float(model.loss(batch).detach())
    for _ in range(60):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    assert float(model.loss(batch).detach()) < 0.5 * first
