"""Behaviour groups (datasets/behaviours.py): raw keys onto table ids, shared vocabularies, strictly-before
histories, on the generated multi/-shaped data and on the real amazon_hin files."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datasets.batching import BatchMaker, Rows
from datasets.behaviours import RawGroup, build_behaviours
from datasets.load import load_dataset
from tests.datasets.conftest import make_table


@pytest.fixture(scope="module")
def hetero(tmp_path_factory):
    return load_dataset("hetero_sample", "hetero_sample", "/nonexistent", tmp_path_factory.mktemp("cache"),
                        {"n_users": 400, "n_items": 300, "n_categories": 12, "seed": 1,
                         "behaviours": ["query", "coupon"]})


def last_rows(table) -> Rows:
    end = table.indptr[1:] - 1
    return Rows(np.arange(table.n_users), end, table.items[end].astype(np.int64))


def test_group_histories_hold_only_events_before_the_target(hetero):
    rows = last_rows(hetero)
    batch = BatchMaker(hetero).make(rows)
    target_time = hetero.times[rows.end]
    for g, gh in zip(hetero.behaviours.groups, batch.groups):
        for u in range(0, hetero.n_users, 37):
            events = g.times[g.indptr[u]:g.indptr[u + 1]]
            expected = g.objects[g.indptr[u]:g.indptr[u + 1]][events < target_time[u]]
            assert gh.objects[u][gh.mask[u]].tolist() == expected.tolist()
        assert (gh.time[gh.mask] >= 0).all() and (gh.time[~gh.mask] == 0).all()


def test_the_planted_signal_is_in_the_query_group(hetero):
    """The last query before a purchase is about the purchase's category for ~80% of rows (chance: 1/12)."""
    rows = last_rows(hetero)
    q = BatchMaker(hetero).make(rows).groups[0]
    last = q.objects[np.arange(len(rows)), q.mask.sum(1) - 1].numpy()
    query_category = np.array([int(k[1:]) // 8 for k in hetero.behaviours.groups[0].object_keys])
    target_category = np.array([int(k[1:]) for k in hetero.category_keys])[hetero.item_category[rows.target]]
    assert 0.7 < (query_category[last] == target_category).mean() < 0.9


def test_coupon_features_share_the_items_vocabularies(hetero):
    b = hetero.behaviours
    coupon = b.groups[1]
    assert set(coupon.features) == {"shop", "category"} and set(b.item_features) == {"shop", "brand"}
    assert list(b.vocab["category"]) == list(hetero.category_keys)
    assert coupon.features["category"].max() < hetero.n_categories
    assert b.item_features["shop"].max() < len(b.vocab["shop"]) and coupon.features["shop"].max() < len(b.vocab["shop"])


def test_behaviours_change_the_content_hash_and_an_empty_list_keeps_item_features(tmp_path):
    opts = {"n_users": 200, "n_items": 200, "n_categories": 8, "seed": 0}
    plain = load_dataset("h", "hetero_sample", "/x", tmp_path, opts)
    items_only = load_dataset("h", "hetero_sample", "/x", tmp_path, {**opts, "behaviours": []})
    full = load_dataset("h", "hetero_sample", "/x", tmp_path, {**opts, "behaviours": ["query", "coupon"]})
    assert plain.behaviours is None and items_only.behaviours.groups == ()
    assert len({plain.content_hash, items_only.content_hash, full.content_hash}) == 3
    assert BatchMaker(items_only).make(last_rows(items_only)).groups == ()


def test_unknown_groups_and_kinds_without_groups_are_refused(tmp_path, shared_data):
    with pytest.raises(ValueError, match=r"unknown group\(s\) \['clicks'\].*\['coupon', 'query'\]"):
        load_dataset("h", "hetero_sample", "/x", tmp_path, {"n_users": 100, "behaviours": ["clicks"]})
    with pytest.raises(ValueError, match="loader kind 'clothing_seq' has no behaviour groups"):
        load_dataset("clothing_seq", "clothing_seq", shared_data, tmp_path, {"behaviours": ["brand"]})


def test_a_group_category_outside_the_table_is_refused():
    table = make_table({"u1": ["a", "b", "c"], "u2": ["b", "c", "a"]})
    events = pd.DataFrame({"user": ["u1"], "object": ["k1"], "time": [5]})
    with pytest.raises(ValueError, match="category values \\['zzz'\\]"):
        build_behaviours(table, {}, [RawGroup("coupon", events, {"category": {"k1": "zzz"}})])


def test_amazon_hin_brand_and_category_behaviours(shared_data, tmp_path):
    table = load_dataset("amazon_hin", "amazon_hin", shared_data, tmp_path, {"behaviours": ["brand", "category"]})
    b = table.behaviours
    assert len(b.vocab["brand"]) == 334 + 1  # 334 brands (the data README) + "<unknown>", which no item has
    assert (b.vocab["brand"][b.item_features["brand"]] != "<unknown>").all()
    brand, category = b.groups
    assert brand.entity == "brand" and category.entity == "category"
    assert len(brand.objects) == len(category.objects) == table.n_interactions
    # one event per review: the reviewed item's brand and category
    order_is_table_order = (brand.times == table.times).all()
    assert order_is_table_order
    assert (brand.objects == b.item_features["brand"][table.items]).all()
    assert (category.objects == table.item_category[table.items]).all()
    # a target's own brand event (same time) is never in its history
    rows = last_rows(table)
    batch = BatchMaker(table).make(rows)
    same_day = table.times[rows.end - 1] == table.times[rows.end]
    assert ((batch.groups[0].mask.sum(1) < batch.mask.sum(1)).numpy() == same_day).all()
