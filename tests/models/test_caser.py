"""Caser specifics: the yaml's paper settings, the training windows (sliding L + T, one per short user; RecBole's
every item), the loss against the authors' formula and CE's softmax, the convolutions against a hand-written loop,
negatives avoiding the user's items, the last L items at scoring, fitting next items, the n_v / n_h ablations."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from models.caser import Caser
from tests.models.helpers import N_ITEMS, build_from_yaml, fit, random_batch, random_candidates, shape_kwargs
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")
PAD = N_ITEMS


def make_model(seed: int = 0, **kw) -> Caser:
    torch.manual_seed(seed)
    return Caser(**shape_kwargs(), **{"dim": 8, "n_v": 2, "n_h": 3, **kw}).eval()


def test_yaml_has_the_papers_settings():
    model = build_from_yaml("caser")
    assert (model.dim, model.L, model.T, model.n_v, model.n_h, model.n_neg) == (50, 5, 3, 4, 16, 3)
    assert model.dropout.p == 0.5 and len(model.conv_h) == 5 and model.W2.embedding_dim == 100


def test_windows_slide_over_long_users_and_take_one_from_short_ones():
    model = make_model()
    batch = random_batch([10, 4, 1, 2])
    row, inputs, targets, tmask = model.windows(batch)
    h = batch.hist
    assert row.tolist() == [0, 0, 0, 1, 3]  # starts 5, 6, 7 of the 10-item row; start 1 of the short rows
    for k, s in enumerate([5, 6, 7]):
        assert inputs[k].tolist() == h[0, s - 5:s].tolist() and targets[k].tolist() == h[0, s:s + 3].tolist()
    assert inputs[3].tolist() == [PAD] * 4 + [h[1, 0].item()] and targets[3].tolist() == h[1, 1:4].tolist()
    assert inputs[4].tolist() == [PAD] * 4 + [h[3, 0].item()] and tmask[4].tolist() == [True, False, False]
    assert tmask[:4].all()


def test_loss_is_the_authors_bce():
    model = make_model(dropout=0.0)
    batch = random_batch([10, 4, 2])
    row, inputs, targets, tmask = model.windows(batch)
    neg = torch.randint(0, N_ITEMS, (len(row), 9), generator=torch.Generator().manual_seed(0))
    model.sample_negatives = lambda shape, seq, seq_mask: neg
    x = model.hidden(inputs, batch.user[row])

    def y(items):
        return (x[:, None, :] * model.W2(items)).sum(-1) + model.b2(items)[..., 0]

    pos = torch.cat([y(targets)[m, tmask[m]] for m in range(len(row))])
    negs = torch.cat([y(neg)[m, :3 * int(tmask[m].sum())] for m in range(len(row))])
    expected = -torch.log(torch.sigmoid(pos)).mean() - torch.log(1 - torch.sigmoid(negs)).mean()
    assert torch.allclose(model.loss(batch), expected, atol=1e-5, rtol=0)


def test_every_item_windows_make_every_item_after_the_first_a_target():
    model = make_model(windows="every_item")
    batch = random_batch([10, 4, 1, 2])
    row, inputs, targets, tmask = model.windows(batch)
    h = batch.hist
    assert row.tolist() == [0] * 9 + [1] * 3 + [3]  # starts 1..n-1 of every row; none for the 1-item row
    for k, s in enumerate(range(1, 10)):
        padded = [PAD] * max(0, 5 - s) + h[0, max(0, s - 5):s].tolist()
        assert inputs[k].tolist() == padded
        assert tmask[k].tolist() == [s + j < 10 for j in range(3)]
        assert targets[k][tmask[k]].tolist() == h[0, s:min(s + 3, 10)].tolist()
    assert {t for k in range(9) for t in targets[k][tmask[k]].tolist()} == set(h[0, 1:10].tolist())
    assert inputs[12].tolist() == [PAD] * 4 + [h[3, 0].item()] and tmask[12].tolist() == [True, False, False]


def test_ce_loss_is_softmax_over_the_catalogue():
    model = make_model(dropout=0.0, windows="every_item", loss="ce", T=1)
    batch = random_batch([10, 4, 2])
    row, inputs, targets, tmask = model.windows(batch)
    x = model.hidden(inputs, batch.user[row])
    logits = x @ model.W2.weight.T + model.b2.weight[:, 0]  # [M, n_items]
    expected = torch.stack([torch.logsumexp(logits[m], 0) - logits[m, targets[m, 0]] for m in range(len(row))]).mean()
    assert len(row) == 9 + 3 + 1 and torch.allclose(model.loss(batch), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("option, message", [
    ({"windows": "all"}, "model.params.windows='all': expected one of sliding, every_item"),
    ({"loss": "bpr"}, "model.params.loss='bpr': expected one of bce, ce"),
])
def test_unknown_windows_or_loss_is_refused(option, message):
    with pytest.raises(ValueError, match=message):
        make_model(**option)


def test_convolutions_equal_a_hand_written_loop():
    model = make_model(L=3, dropout=0.0)
    window, user = torch.tensor([[3, 7, PAD]]), torch.tensor([2])
    e = model.item(window)[0]  # [L, d]
    vertical = torch.cat([(model.conv_v.weight[f, 0, :, 0][:, None] * e).sum(0) + model.conv_v.bias[f]
                          for f in range(2)])  # [n_v * d], filter-major as the authors' view
    horizontal = []
    for h, conv in enumerate(model.conv_h, start=1):
        acts = torch.stack([(conv.weight[:, 0] * e[t:t + h]).sum((1, 2)) + conv.bias for t in range(3 - h + 1)])
        horizontal.append(F.relu(acts).max(0).values)
    z = F.relu(model.fc1(torch.cat([vertical, *horizontal])))
    expected = torch.cat([z, model.user.weight[2]])
    assert torch.allclose(model.hidden(window, user)[0], expected, atol=1e-6, rtol=0)


def test_negatives_avoid_the_users_items():
    model = make_model()
    batch = random_batch([6, 6, 6])
    torch.manual_seed(0)
    neg = model.sample_negatives((3, 200), batch.hist, batch.mask)
    for b in range(3):
        assert not set(neg[b].tolist()) & set(batch.hist[b].tolist())


def test_only_the_last_L_items_count():
    model = make_model()
    batch = random_batch([9, 3, 7])
    cands = random_candidates(batch)
    older = replace(batch, hist=batch.hist.clone())
    older.hist[0, :4] = (batch.hist[0, :4] + 1) % N_ITEMS
    older.hist[2, :2] = (batch.hist[2, :2] + 1) % N_ITEMS
    assert torch.allclose(model.score(older, cands), model.score(batch, cands), atol=1e-6, rtol=0)
    newer = replace(batch, hist=batch.hist.clone())
    newer.hist[0, 4] = (batch.hist[0, 4] + 1) % N_ITEMS
    assert not torch.allclose(model.score(newer, cands)[0], model.score(batch, cands)[0])


def test_short_histories_are_left_padded_at_scoring():
    model = make_model()
    batch = random_batch([3, 0, 6])
    cands = random_candidates(batch)
    windows = torch.stack([torch.tensor([PAD, PAD, *batch.hist[0, :3].tolist()]), torch.full((5,), PAD),
                           batch.hist[2, 1:6]])
    x = model.hidden(windows, batch.user)
    expected = (x[:, None, :] * model.W2(cands)).sum(-1) + model.b2(cands)[..., 0]
    assert torch.allclose(model.score(batch, cands), expected, atol=1e-6, rtol=0)


def test_fits_next_items():
    model = make_model(dim=16, dropout=0.0).train()
    batch = random_batch([12, 9, 12, 10], seed=4)
    first, last = fit(model, batch, torch.optim.Adam(model.parameters(), lr=0.02), steps=60, seed=0)
    assert last < 0.5 * first


@pytest.mark.parametrize("n_v, n_h", [(0, 3), (2, 0)])
def test_either_convolution_alone_works(n_v, n_h):
    model = make_model(n_v=n_v, n_h=n_h)
    batch = random_batch()
    assert torch.isfinite(model.train().loss(batch))
    assert model.eval().score(batch, random_candidates(batch)).shape == (4, 5)
    with pytest.raises(ValueError, match="n_v and n_h must be >= 0 and not both 0"):
        make_model(n_v=0, n_h=0)
