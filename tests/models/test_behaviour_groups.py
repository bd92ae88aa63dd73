"""ATRank's behaviour groups by object type (behavior_groups=typed, models/behaviour_groups.py): each group's
input and projection spelled out by hand, shared tables, target projection, per-group bias, one attention over
all groups, masks; on batches of the generated multi/-shaped data."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from datasets.batching import BatchMaker, Rows
from datasets.load import load_dataset
from models.atrank import ATRank
from tests.models.helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    options = {"n_users": 120, "n_items": 90, "n_categories": 6, "seed": 3, "behaviours": ["query", "coupon"]}
    return load_dataset("hetero_sample", "hetero_sample", "/x", tmp_path_factory.mktemp("cache"), options)


def make(table, **kw) -> ATRank:
    torch.manual_seed(0)
    return ATRank(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                  item_category=table.item_category, item_dim=8, cat_dim=8, hidden=16, n_heads=2,
                  behavior_groups="typed", behaviours=table.behaviours, **kw).eval()


def batch_of(table, users=(0, 1, 2, 3), back=1):
    users = np.array(users)
    end = table.indptr[users + 1] - back
    return BatchMaker(table).make(Rows(users, end, table.items[end].astype(np.int64), neg=(table.items[end] + 1)
                                       .astype(np.int64) % table.n_items))


def test_each_group_is_its_features_then_its_own_projection(table):
    model, batch = make(table), batch_of(table)
    enc, b = model.group_encoders, table.behaviours
    T, one_hot = enc.tables, lambda t: nn.functional.one_hot(t, 13).float()
    item = torch.cat([T["item"](batch.hist), T["category"](torch.as_tensor(table.item_category)[batch.hist]),
                      T["brand"](torch.as_tensor(b.item_features["brand"])[batch.hist]),
                      T["shop"](torch.as_tensor(b.item_features["shop"])[batch.hist]),
                      enc.action(batch.hist_rating), one_hot(batch.hist_time)], -1)
    q, c = batch.groups
    query = torch.cat([T["object_query"](q.objects), one_hot(q.time)], -1)
    coupon_f = b.groups[1].features
    coupon = torch.cat([T["object_coupon"](c.objects), T["category"](torch.as_tensor(coupon_f["category"])[c.objects]),
                        T["shop"](torch.as_tensor(coupon_f["shop"])[c.objects]), one_hot(c.time)], -1)
    expected = torch.cat([enc.layers["item"](item), enc.layers["query"](query), enc.layers["coupon"](coupon)], 1)
    h, mask = enc.history(batch)
    assert torch.allclose(h, expected, atol=1e-6)
    assert torch.equal(mask, torch.cat([batch.mask, q.mask, c.mask], 1))
    assert enc.layers["item"].in_features == 8 * 5 + 13 and enc.layers["coupon"].in_features == 8 * 3 + 13


def test_targets_are_projected_by_their_groups_layer_with_zero_action_and_time(table):
    model = make(table)
    enc, items = model.group_encoders, torch.tensor([[0, 5, 7]])
    parts = enc.parts("item", items)
    padded = torch.cat([parts, torch.zeros(*parts.shape[:-1], 8 + 13)], -1)
    assert torch.allclose(enc.targets(items), enc.layers["item"](padded), atol=1e-6)
    coupons = torch.tensor([1, 4])
    with torch.no_grad():
        enc.bias["coupon"].weight[4] = 2.5
    assert enc.targets(coupons, "coupon").shape == (2, 16)
    assert enc.target_bias(coupons, "coupon").tolist() == [0.0, 2.5]  # a group's own bias table


def test_feature_tables_are_shared_across_groups(table):
    enc = make(table).group_encoders
    names = {n for n, _ in enc.named_parameters()}
    assert "tables.category.weight" in names and "tables.shop.weight" in names
    assert not any("coupon" in n and ("category" in n or "shop" in n) for n in names)  # no per-group copies


def test_loss_is_bce_over_one_attention_of_all_groups_plus_l2(table):
    model, batch = make(table, l2_reg=0.0), batch_of(table)
    enc = model.group_encoders
    h, mask = enc.history(batch)
    for att, ff in zip(model.self_att, model.self_ff):
        h = ff(att(h, h, mask))
    cands = torch.stack([batch.target, batch.neg], 1)
    t = enc.targets(cands)
    u = model.target_ff[0](model.target_att[0](t, h, mask))
    logits = enc.target_bias(cands) + (u * t).sum(-1)
    labels = torch.tensor([[1.0, 0.0]]).expand_as(logits)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert torch.allclose(model.loss(batch), bce, atol=1e-6)


def test_groups_change_scores_and_padding_does_not(table):
    model, batch = make(table), batch_of(table)
    cands = torch.stack([batch.target, batch.neg], 1)
    with torch.no_grad():
        s = model.score(batch, cands)
        q, c = batch.groups
        wide = [replace(g, objects=torch.cat([g.objects, torch.full_like(g.objects[:, :3], 5)], 1),
                        time=torch.cat([g.time, torch.full_like(g.time[:, :3], 7)], 1),
                        mask=torch.cat([g.mask, torch.zeros_like(g.mask[:, :3])], 1)) for g in (q, c)]
        assert torch.allclose(model.score(replace(batch, groups=tuple(wide)), cands), s, atol=1e-5)
        no_queries = replace(q, mask=torch.zeros_like(q.mask))
        assert not torch.allclose(model.score(replace(batch, groups=(no_queries, c)), cands), s, atol=1e-4)


def test_full_scores_agree_with_score(table):
    model, batch = make(table), batch_of(table)
    full = model.full_scores(batch, chunk=32)
    some = torch.tensor([[0, 3, 17]] * len(batch))
    assert torch.allclose(model.score(batch, some), full.gather(1, some), atol=1e-5)


def test_lookup_time_encoding_and_missing_groups(table):
    model = make(table, time_encoding="lookup")
    enc = model.group_encoders
    assert enc.time.weight.shape == (13, 8) and enc.layers["query"].in_features == 8 * 2
    batch = batch_of(table)
    with pytest.raises(ValueError, match="behaviour groups \\['query', 'coupon'\\] but the batch carries 0"):
        model.score(replace(batch, groups=()), batch.target[:, None])
    with pytest.raises(ValueError, match="time_encoding"):
        make(table, time_encoding="sin")
    items_only = ATRank(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                        item_category=table.item_category, behavior_groups="typed")
    enc = items_only.group_encoders
    assert list(enc.layers) == ["item"] and enc.item_features == ["category"]
