"""ATRank specifics: time one-hot variants, behaviour groups, attention masks, the reference's L2, a planted fit."""
from __future__ import annotations

from dataclasses import replace

import torch

from models.atrank import ATRank, MultiHeadAttention
from tests.models.helpers import fit, planted_batch, random_batch, random_candidates, shape_kwargs
from tests.models.helpers import one_thread  # noqa: F401
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def make(**kw) -> ATRank:
    torch.manual_seed(0)
    return ATRank(**shape_kwargs(), item_dim=16, cat_dim=16, hidden=32, n_heads=4, **kw).eval()


def test_padded_keys_get_no_attention_weight():
    att = MultiHeadAttention(8, n_heads=2)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    k2 = k.clone()
    k2[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)  # huge junk in padded keys
    assert torch.allclose(att(q, k, mask), att(q, k2, mask), atol=1e-6)


def test_reference_time_one_hot_drops_bucket_12():
    batch = random_batch()
    all_12 = replace(batch, hist_time=torch.where(batch.mask, 12, 0))
    ref, full = make(time_slots=12), make(time_slots=13)
    assert ref.group_layers[0].in_features == 32 + 12 and full.group_layers[0].in_features == 32 + 13
    with torch.no_grad():
        h_ref, h_full = ref.encode_history(all_12)[0], full.encode_history(all_12)[0]
        ref.group_layers[0].weight[:, 32:] = 0  # remove the time input entirely
        full.group_layers[0].weight[:, 32:] = 0
        # 12 slots: bucket 12 is an all-zero one-hot, exactly as if there were no time input
        real = batch.mask  # (padded slots hold bucket 0, which does have a slot)
        assert torch.allclose(ref.encode_history(all_12)[0][real], h_ref[real], atol=1e-6)
        # 13 slots: bucket 12 has its own slot, so it does contribute
        assert not torch.allclose(full.encode_history(all_12)[0][real], h_full[real], atol=1e-4)


def test_behavior_groups_by_rating_change_scores_only_through_ratings():
    model = make(behavior_groups="rating")
    assert len(model.group_layers) == 3
    batch = random_batch()
    cands = random_candidates(batch)
    with torch.no_grad():
        s = model.score(batch, cands)
        same_group = replace(batch, hist_rating=torch.where(batch.hist_rating == 5, 4, batch.hist_rating))
        assert torch.allclose(model.score(same_group, cands), s, atol=1e-6)  # 4 and 5 share a group
        other = replace(batch, hist_rating=torch.where(batch.mask, 1, 0))
        assert not torch.allclose(model.score(other, cands), s, atol=1e-6)


def test_loss_is_bce_plus_reference_l2():
    model = make(l2_reg=0.0)
    batch = planted_batch(n_rows=16)
    logits = model.score(batch, batch.target[:, None])[:, 0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
    assert torch.allclose(model.loss(batch), bce, atol=1e-6)
    reg = make(l2_reg=1.0)
    assert reg.loss(batch) > model.loss(batch) + 1.0  # sum(x^2)/2 over a batch of 128-d... vectors is large


def test_a_few_sgd_steps_learn_a_planted_rule():
    model = make().train()
    first, last = fit(model, planted_batch(n_rows=64), torch.optim.SGD(model.parameters(), lr=0.5), steps=60)
    assert last < 0.7 * first
