"""BPR specifics: the reference's loss, written out, and a user-only score (exactly equal under padding junk)."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch.nn.functional import logsigmoid

from models.bpr import BPR
from tests.models.helpers import random_batch, random_candidates, shape_kwargs


def test_loss_matches_reference_formula():
    torch.manual_seed(0)
    model = BPR(**shape_kwargs(), item_dim=8, cat_dim=8, l2_reg=0.1)
    b = random_batch()
    u = model.user(b.user)
    e_i, e_j = model.emb(b.target), model.emb(b.neg)
    with torch.no_grad():
        model.emb.bias.weight.normal_()
    b_i, b_j = model.emb.bias.weight[b.target, 0], model.emb.bias.weight[b.neg, 0]
    x = b_i - b_j + (u * (e_i - e_j)).sum(-1)
    l2 = (u.pow(2).sum() + e_i.pow(2).sum() + e_j.pow(2).sum()) / 2  # tf.nn.l2_loss
    assert torch.allclose(model.loss(b), -logsigmoid(x).mean() + 0.1 * l2, atol=1e-6)


def test_score_ignores_history_entirely():
    model = BPR(**shape_kwargs(), item_dim=8, cat_dim=8)
    b = random_batch()
    c = random_candidates(b)
    other_history = random_batch(seed=9)  # different real items, lengths and times; same users
    other_history = replace(other_history, user=b.user)
    assert not torch.equal(other_history.hist, b.hist)
    assert torch.equal(model.score(b, c), model.score(other_history, c))


def test_reference_item_bias_init_is_tfs_glorot_for_a_vector():
    torch.manual_seed(0)
    zero = BPR(**shape_kwargs(), item_dim=8, cat_dim=8).emb.bias.weight.detach()
    tf = BPR(**shape_kwargs(n_items=3000), item_dim=8, cat_dim=8, item_bias_init="tf_default").emb.bias.weight.detach()
    limit = (3.0 / 3000) ** 0.5
    assert zero.abs().max() == 0
    assert tf.abs().max() <= limit and tf.abs().max() > 0.95 * limit  # U(-limit, limit) fills its range
    assert abs(float(tf.std()) - limit / 3 ** 0.5) < 0.1 * limit / 3 ** 0.5
