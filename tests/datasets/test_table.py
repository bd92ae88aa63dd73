"""Table stage: sorted-key remaps, stable (user, time) sort, cache by content hash, crash safety."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from datasets.raw_types import RawData
from datasets.table import build_table, check_stats, load_table


def raw(rows, meta) -> RawData:
    return RawData(pd.DataFrame(rows, columns=["user", "item", "time", "rating"]),
                   pd.DataFrame(meta, columns=["item", "category"]))


def test_remap_by_sorted_key_and_stable_time_sort():
    r = raw([("ub", "i9", 20, 5.0), ("ua", "i5", 30, 4.0), ("ub", "i1", 10, 3.0), ("ua", "i9", 30, 1.0),
             ("ua", "i1", 5, np.nan)],
            [("i9", "cz"), ("i1", "ca"), ("i5", "cz"), ("i_unreviewed", "cq")])
    t = build_table(r, "t", min_user_interactions=2)
    assert t.user_keys.tolist() == ["ua", "ub"]
    assert t.item_keys.tolist() == ["i1", "i5", "i9"]  # meta of unreviewed items is dropped
    assert t.category_keys.tolist() == ["ca", "cz"]
    assert t.item_category.tolist() == [0, 1, 1]
    # ua: i1@5, then i5@30 and i9@30 keep raw file order (i5 first); ub: i1@10, i9@20
    assert t.items.tolist() == [0, 1, 2, 0, 2] and t.indptr.tolist() == [0, 3, 5]
    assert t.ratings.tolist() == [0, 4, 1, 3, 5]


def test_items_without_meta_get_unknown_category(caplog):
    r = raw([("u", "a", 1, 1.0), ("u", "b", 2, 1.0), ("u", "c", 3, 1.0)], [("a", "x")])
    with caplog.at_level(logging.WARNING):
        t = build_table(r, "t")
    assert t.category_keys.tolist() == ["<unknown>", "x"] and "have no metadata" in caplog.text


def test_short_users_are_rejected_by_name():
    r = raw([("u1", "a", 1, 1.0), ("u1", "b", 2, 1.0), ("u2", "a", 1, 1.0)], [("a", "x"), ("b", "x")])
    with pytest.raises(ValueError, match="fewer than 2 interactions.*'u2'"):
        build_table(r, "t", min_user_interactions=2)


def test_second_load_hits_cache_and_parser_is_not_called(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("anything")
    calls = []

    def parse():
        calls.append(1)
        return raw([("u", "a", 1, 1.0), ("u", "b", 2, 1.0), ("u", "c", 3, 1.0)], [("a", "x")])

    t1 = load_table("d", [src], {"k": 1}, parse, tmp_path / "cache")
    t2 = load_table("d", [src], {"k": 1}, parse, tmp_path / "cache")
    assert calls == [1] and t1.content_hash == t2.content_hash and np.array_equal(t1.items, t2.items)
    load_table("d", [src], {"k": 2}, parse, tmp_path / "cache")  # other settings: new key, parsed again
    src.write_text("changed")
    load_table("d", [src], {"k": 1}, parse, tmp_path / "cache")  # other content: parsed again
    assert len(calls) == 3


def test_crash_while_parsing_leaves_no_cache(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("x")

    def broken():
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        load_table("d", [src], {}, broken, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npz"))


def test_stats_mismatch_warns_loudly(caplog):
    t = build_table(raw([("u", "a", 1, 1.0), ("u", "b", 2, 1.0), ("u", "c", 3, 1.0)], []), "t")
    with caplog.at_level(logging.WARNING):
        assert check_stats(t, {"users": 1, "items": 4}) == ["items: got 3, reference 4"]
    assert "differs from the reference" in caplog.text
