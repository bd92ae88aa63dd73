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


def test_short_users_are_dropped_and_counted(caplog):
    r = raw([("u1", "a", 1, 1.0), ("u1", "b", 2, 1.0), ("u2", "a", 1, 1.0)], [("a", "x"), ("b", "x")])
    with caplog.at_level(logging.WARNING):
        t = build_table(r, "t", min_user_interactions=2)
    assert t.user_keys.tolist() == ["u1"] and t.n_interactions == 2
    assert t.cleaning["short_users_dropped"] == 1 and t.cleaning["short_user_rows_dropped"] == 1
    assert "short_users_dropped = 1" in caplog.text
    with pytest.raises(ValueError, match="no interactions left after the data policy"):
        build_table(r, "t", min_user_interactions=3)


def test_exact_duplicates_dropped_or_kept_by_policy():
    rows = [("u", "a", 1, 5.0), ("u", "b", 2, 4.0), ("u", "c", 3, np.nan)]
    r = raw(rows + rows + [("u", "a", 1, 4.0)], [("a", "x")])  # every row twice; a different rating is not exact
    t = build_table(r, "t")
    assert t.n_interactions == 4 and t.cleaning["duplicate_rows_dropped"] == 3
    kept = build_table(r, "t", duplicates="keep")
    assert kept.n_interactions == 7 and "duplicate_rows_dropped" not in kept.cleaning
    with pytest.raises(ValueError, match="duplicates='merge'; expected one of"):
        build_table(r, "t", duplicates="merge")


def test_k_core_filters_users_and_items_until_stable():
    # c and e are seen once: they go, then u4 (left with a alone) goes; a, b, d keep their 3 users
    rows = [(u, i, t, 1.0) for t, (u, i) in enumerate(
        [("u1", "a"), ("u1", "b"), ("u1", "d"), ("u2", "a"), ("u2", "b"), ("u2", "d"), ("u3", "a"), ("u3", "b"),
         ("u3", "d"), ("u4", "a"), ("u4", "c"), ("u4", "e")])]
    t = build_table(raw(rows, [("a", "x")]), "t", k_core=3)
    assert t.user_keys.tolist() == ["u1", "u2", "u3"] and t.item_keys.tolist() == ["a", "b", "d"]
    assert (t.cleaning["k_core_users_dropped"], t.cleaning["k_core_items_dropped"],
            t.cleaning["k_core_rows_dropped"]) == (1, 2, 3)


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
