"""SASRec specifics: the yaml's paper settings, causality, length-1 histories give no transition, truncation to
max_len, negatives avoid the user's items, fitting next items."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.sasrec import SASRec
from tests.models.helpers import N_ITEMS, build_from_yaml, fit, random_batch, random_candidates, shape_kwargs
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is far faster on a shared CPU


def make_model(seed: int = 0, **kw) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(**shape_kwargs(), **{"dim": 8, "n_blocks": 2, "n_heads": 2, "max_len": 10, **kw}).eval()


def test_yaml_has_the_papers_settings():
    model = build_from_yaml("sasrec")
    assert (model.max_len, len(model.blocks), model.dim) == (50, 2, 64)


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


def test_length_one_histories():
    model, batch = make_model(), random_batch([1, 1, 1])
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
    first, last = fit(model, batch, torch.optim.Adam(model.parameters(), lr=0.02), steps=60, seed=0)
    assert last < 0.5 * first
