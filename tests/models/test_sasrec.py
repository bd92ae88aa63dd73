"""SASRec: interface shapes, causality, padding never leaks, truncation to max_len, a tiny fit."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from models.registry import get_model
from models.sasrec import SASRec
from tests.models.helpers import (N_ITEMS, extend_padding, random_batch, random_candidates, row_alone,
                                  scramble_padding, shape_kwargs)
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

CONF = Path(__file__).resolve().parents[2] / "conf" / "model" / "sasrec.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is far faster on a shared CPU


def make_model(seed: int = 0, **kw) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(**shape_kwargs(), **{"dim": 8, "n_blocks": 2, "n_heads": 2, "max_len": 10, **kw}).eval()


def test_registered_and_yaml_builds():
    cfg = yaml.safe_load(CONF.read_text())
    assert get_model(cfg["name"]) is SASRec and cfg["train_format"] == SASRec.train_format == "sequence"
    model = SASRec(**shape_kwargs(), **cfg["params"])
    assert (model.max_len, len(model.blocks), model.dim) == (50, 2, 64)


def test_shapes_and_full_scores_agree_with_score():
    model, batch = make_model(), random_batch()
    loss = model.train().loss(batch)
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    model.eval()
    assert model.score(batch, random_candidates(batch)).shape == (4, 5)
    full = model.full_scores(batch)
    assert full.shape == (4, N_ITEMS)
    assert torch.allclose(full, model.score(batch, torch.arange(N_ITEMS).expand(4, -1)), atol=1e-5)


def test_causal_outputs_ignore_later_items():
    model = make_model()
    g = torch.Generator().manual_seed(0)
    items = torch.randint(0, N_ITEMS, (1, 8), generator=g)
    mask = torch.ones(1, 8, dtype=torch.bool)
    out = model.encode(items, mask)
    for t in range(7):
        changed = items.clone()
        changed[0, t + 1:] = torch.randint(0, N_ITEMS, (7 - t,), generator=g)
        assert torch.allclose(model.encode(changed, mask)[0, :t + 1], out[0, :t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(model.encode(changed, mask)[0, t + 1:], out[0, t + 1:])


def test_padding_never_changes_scores_or_loss():
    model, batch = make_model(), random_batch([3, 1, 6, 4])
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    for other in (scramble_padding(batch), extend_padding(batch)):
        assert torch.allclose(scores, model.score(other, cands), atol=1e-6, rtol=0)
        assert torch.allclose(model.full_scores(batch), model.full_scores(other), atol=1e-5, rtol=0)
    for i in range(len(batch)):
        assert torch.allclose(scores[i], model.score(row_alone(batch, i), cands[i:i + 1])[0], atol=1e-6, rtol=0)
    torch.manual_seed(5)
    loss = model.loss(batch)
    torch.manual_seed(5)
    assert torch.allclose(loss, model.loss(scramble_padding(batch)), atol=1e-6, rtol=0)


def test_one_candidate_equals_its_column():
    model, batch = make_model(), random_batch()
    cands = random_candidates(batch)
    many = model.score(batch, cands)
    for c in range(cands.shape[1]):
        assert torch.allclose(model.score(batch, cands[:, c:c + 1])[:, 0], many[:, c], atol=1e-6, rtol=0)


def test_length_one_histories():
    model, batch = make_model(), random_batch([1, 1, 1])
    assert torch.isfinite(model.score(batch, random_candidates(batch))).all()
    loss = model.train().loss(batch)  # no transition: a zero loss that still back-propagates
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss = model.loss(random_batch([2, 1]))
    assert torch.isfinite(loss)


def test_only_the_last_max_len_items_count():
    model = make_model(max_len=4)
    batch = random_batch([7, 3, 9])
    cands = random_candidates(batch)
    keep = batch.lengths.clamp(max=4)
    cut = torch.stack([torch.cat([batch.hist[b, n - k:n], batch.hist.new_zeros(4 - k)])
                       for b, (n, k) in enumerate(zip(batch.lengths.tolist(), keep.tolist()))])
    short = replace(batch, hist=cut, hist_time=torch.zeros_like(cut), hist_rating=torch.zeros_like(cut),
                    mask=torch.arange(4)[None, :] < keep[:, None], lengths=keep)
    assert torch.allclose(model.score(batch, cands), model.score(short, cands), atol=1e-6, rtol=0)


def test_negatives_avoid_the_users_items():
    model = make_model()
    batch = random_batch([6, 6, 6])
    torch.manual_seed(0)
    neg = model.sample_negatives((3, 200), batch.hist, batch.mask)
    for b in range(3):
        assert not set(neg[b].tolist()) & set(batch.hist[b].tolist())


def test_fits_next_items():
    model = make_model(dim=16, dropout=0.0).train()
    batch = random_batch([8, 6, 8, 5], seed=4)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    torch.manual_seed(0)
    first = float(model.loss(batch).detach())
    for _ in range(60):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    torch.manual_seed(0)
    assert float(model.loss(batch).detach()) < 0.5 * first
