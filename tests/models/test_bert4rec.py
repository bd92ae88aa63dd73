"""BERT4Rec specifics: the yaml's settings, bidirectional attention, the cloze mask's size, the loss against the
hand-written cross-entropy, [MASK] appended at scoring with the oldest item dropped, fitting masked items."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from models.bert4rec import BERT4Rec
from tests.models.helpers import N_ITEMS, build_from_yaml, fit, random_batch, random_candidates, shape_kwargs
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0, **kw) -> BERT4Rec:
    torch.manual_seed(seed)
    return BERT4Rec(**shape_kwargs(), **{"dim": 8, "n_blocks": 2, "n_heads": 2, "max_len": 10, **kw}).eval()


def test_yaml_has_the_authors_beauty_settings():
    model = build_from_yaml("bert4rec")
    assert (model.max_len, len(model.blocks), model.blocks[0].attn.n_heads, model.item.embedding_dim) == (50, 2, 2, 64)
    assert (model.mask_prob, model.max_predictions, model.blocks[0].attn.attn_dropout) == (0.6, 30, 0.2)
    assert model.item.num_embeddings == N_ITEMS + 1 and model.bias.shape == (N_ITEMS,)


def test_outputs_see_later_items():
    model = make_model()
    items = torch.randint(0, N_ITEMS, (1, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 8, dtype=torch.bool)
    out = model.encode(items, mask)
    changed = items.clone()
    changed[0, 7] = (items[0, 7] + 1) % N_ITEMS
    assert not torch.allclose(model.encode(changed, mask)[0, 0], out[0, 0])  # bidirectional: the first sees the last


@pytest.mark.parametrize("mask_prob, expected", [(0.6, [2, 1, 4, 2, 6]), (0.2, [1, 1, 1, 1, 2])])
def test_cloze_mask_takes_round_n_times_p_real_positions(mask_prob, expected):
    model = make_model(mask_prob=mask_prob, max_predictions=6)
    batch = random_batch([3, 1, 6, 4, 10])
    for seed in range(5):
        torch.manual_seed(seed)
        masked = model.cloze_mask(batch.mask, batch.lengths)  # round(10 * 0.6) = 6: the cap, as max_predictions
        assert masked.sum(1).tolist() == expected and not (masked & ~batch.mask).any()


def test_loss_is_cross_entropy_at_the_masked_positions():
    model = make_model(dropout=0.0, attn_dropout=0.0)
    batch = random_batch([3, 1, 6, 4])
    fixed = batch.mask & (torch.arange(batch.hist.shape[1])[None, :] % 2 == 0)  # positions 0, 2, 4 of each row
    model.cloze_mask = lambda mask, keep: fixed
    out = model.encode(batch.hist.masked_fill(fixed, N_ITEMS), batch.mask)
    logits = model.head(out[fixed]) @ model.item.weight[:N_ITEMS].T + model.bias
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(int(fixed.sum())), batch.hist[fixed]].mean()
    assert torch.allclose(model.loss(batch), expected, atol=1e-6, rtol=0)
    assert torch.allclose(expected, F.cross_entropy(logits, batch.hist[fixed]), atol=1e-6, rtol=0)


def test_scoring_appends_mask_after_the_last_max_len_minus_one_items():
    model = make_model(max_len=5)
    batch = random_batch([7, 3, 2])
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    for b, n in enumerate(batch.lengths.tolist()):
        kept = batch.hist[b, max(n - 4, 0):n]
        items = torch.cat([kept, torch.tensor([N_ITEMS])])[None]
        h = model.encode(items, torch.ones_like(items, dtype=torch.bool))[0, -1]
        expected = model.head(h) @ model.item(cands[b]).T + model.bias[cands[b]]
        assert torch.allclose(scores[b], expected, atol=1e-6, rtol=0)
    older = replace(batch, hist=batch.hist.clone())
    older.hist[0, :3] = (batch.hist[0, :3] + 1) % N_ITEMS  # items 0..2 of the 7-item row: beyond the last 4
    assert torch.allclose(model.score(older, cands), scores, atol=1e-6, rtol=0)


def test_fits_masked_items():
    model = make_model(dim=16, dropout=0.0, attn_dropout=0.0).train()
    batch = random_batch([8, 6, 8, 5], seed=4)
    first, last = fit(model, batch, torch.optim.Adam(model.parameters(), lr=0.01), steps=80, seed=0)
    assert last < 0.5 * first


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="mask_prob must be in"):
        make_model(mask_prob=0.0)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        make_model(dim=9, n_heads=2)


def test_random_windows_are_consecutive_items_from_anywhere_in_a_long_row():
    model = make_model(max_len=4, train_window="random")
    batch = random_batch([9, 3], seed=2)
    hist = batch.hist.masked_fill(~batch.mask, 0)
    ends = set()
    torch.manual_seed(0)
    for _ in range(200):
        items, mask, keep = model.random_windows(hist, batch.lengths)
        assert keep.tolist() == [4, 3]
        rows = [hist[0, s:s + 4].tolist() for s in range(6)]  # the 6 windows of the 9-item row
        assert items[0].tolist() in rows
        ends.add(rows.index(items[0].tolist()))
        assert items[1, :3].tolist() == hist[1, :3].tolist() and not mask[1, 3]  # a short row is kept whole
    assert ends == set(range(6))  # every start is drawn


def test_the_default_window_is_the_last_max_len_items():
    model = make_model(max_len=4)
    batch = random_batch([9, 3], seed=2)
    seen = []
    model.encode = lambda items, mask: seen.append(items.clone()) or torch.zeros(*items.shape, 8)
    model.loss(batch)
    last = batch.hist[0, 5:9].tolist()
    assert all(t in (N_ITEMS, last[j]) for j, t in enumerate(seen[0][0].tolist()))  # [MASK] or the last 4 items
    assert seen[0][0].tolist().count(N_ITEMS) == 2  # round(4 * 0.6) of them masked


def test_an_unknown_window_is_refused():
    with pytest.raises(ValueError, match="train_window must be"):
        make_model(train_window="sliding")
