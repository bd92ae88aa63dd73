"""Sampled evaluation negatives: the pool, frozen vs redrawn, a negatives file used exactly, count > pool refused,
and every knob in the split cache key."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from datasets.raw_errors import DataFormatError
from datasets.split import eval_negatives_at, load_split, make_split
from tests.datasets.conftest import make_table

LASTFM_SAMPLE = "s3rec/LastFM_sample.txt"


def hand_table():
    """a: i1..i5 (loo_val: trains on i1 i2 i3, validates on i4, tests on i5); b: i2 i3 i4 i1; zz_filler: i6 i7 i8
    (too short for loo_val: training data only). 8 items: a's sequence pool is {i6, i7, i8}, its history pool
    {i4, ..., i8}."""
    return make_table({"a": ["i1", "i2", "i3", "i4", "i5"], "b": ["i2", "i3", "i4", "i1"]},
                      extra_items=("i6", "i7", "i8"))


def keys_of(table, split, user: str) -> set[str]:
    u = int(np.flatnonzero(table.user_keys == user)[0])
    return set(table.item_keys[split.eval_negs[u]].tolist())


def test_pool_sequence_avoids_the_whole_sequence_history_only_the_training_part():
    t = hand_table()
    seq = make_split(t, "loo_val", eval_negatives=3, eval_negatives_pool="sequence")
    assert keys_of(t, seq, "a") == {"i6", "i7", "i8"}  # a's whole pool
    assert not keys_of(t, seq, "b") & {"i1", "i2", "i3", "i4"}
    hist = make_split(t, "loo_val", eval_negatives=5, eval_negatives_pool="history")
    assert keys_of(t, hist, "a") == {"i4", "i5", "i6", "i7", "i8"}  # the held-out i4, i5 may be drawn (SASRec)
    assert not keys_of(t, hist, "b") & {"i2", "i3"}  # b's training part
    assert hist.eval_negs_pool == "history" and seq.eval_negs_pool == "sequence"


def test_a_count_larger_than_a_users_pool_is_refused_naming_user_pool_and_count():
    t = hand_table()
    with pytest.raises(ValueError, match=r"eval_negatives=5 is larger than the pool of user 'a' .*: 3 items "
                                         r"\(eval_negatives_pool=sequence"):
        make_split(t, "loo_val", eval_negatives=5, eval_negatives_pool="sequence")
    with pytest.raises(ValueError, match=r"eval_negatives=6 is larger than the pool of user 'a' .*: 5 items"):
        make_split(t, "loo_val", eval_negatives=6, eval_negatives_pool="history")


def wide_table():
    """30 users of 6 items each over 60 items: pools large enough to tell draws apart."""
    rng = np.random.default_rng(0)
    return make_table({f"u{k:02d}": [f"x{i:02d}" for i in rng.choice(60, 6, replace=False)] for k in range(30)})


@pytest.mark.parametrize("pool", ["sequence", "history"])
def test_frozen_negatives_are_the_same_at_every_evaluation_redrawn_differ_and_are_seeded(pool):
    t = wide_table()
    frozen = make_split(t, "loo_val", seed=3, eval_negatives=10, eval_negatives_pool=pool)
    assert all(eval_negatives_at(frozen, t, i) is frozen.eval_negs for i in (0, 1, 7))
    redrawn = make_split(t, "loo_val", seed=3, eval_negatives=10, eval_negatives_pool=pool,
                         eval_negatives_redraw=True)
    draws = [eval_negatives_at(redrawn, t, i) for i in range(3)]
    assert np.array_equal(draws[0], frozen.eval_negs)  # evaluation 0: the split's own array
    assert not np.array_equal(draws[1], draws[0]) and not np.array_equal(draws[2], draws[1])
    assert np.array_equal(eval_negatives_at(redrawn, t, 2), draws[2])  # seeded by (split seed, index)
    other_seed = make_split(t, "loo_val", seed=4, eval_negatives=10, eval_negatives_pool=pool,
                            eval_negatives_redraw=True)
    assert not np.array_equal(eval_negatives_at(other_seed, t, 2), draws[2])
    ends = t.indptr[1:] if pool == "sequence" else redrawn.train_end
    for u in range(t.n_users):
        excluded = set(t.items[t.indptr[u]:ends[u]].tolist())
        assert all(not excluded & set(d[u].tolist()) and len(set(d[u].tolist())) == 10 for d in draws)
    with pytest.raises(ValueError, match="evaluation_index=-1"):
        eval_negatives_at(redrawn, t, -1)


@pytest.fixture(scope="module")
def lastfm(shared_data, tmp_path_factory):
    from datasets.load import load_dataset

    return load_dataset("lastfm", "s3rec", shared_data, tmp_path_factory.mktemp("cache"),
                        {"file": "LastFM", "category": "rarest", "download": False, "subdir": "s3rec"})


def test_the_lastfm_negatives_file_is_used_exactly(lastfm, shared_data):
    from datasets.table import file_sha256

    path = shared_data / LASTFM_SAMPLE
    split = make_split(lastfm, "loo_val", eval_negatives=99, eval_negatives_file=path)
    lines = [list(map(int, line.split())) for line in path.read_text().splitlines()]
    assert len(lines) == lastfm.n_users == 1_090
    by_user = {int(k): u for u, k in enumerate(lastfm.user_keys)}
    for user, *negatives in lines:
        assert [int(k) for k in lastfm.item_keys[split.eval_negs[by_user[user]]]] == negatives
    assert split.eval_negs_file_sha256 == file_sha256(path)
    assert split.provenance() == {"eval_negatives_file_sha256": file_sha256(path)}


def bad_file(tmp_path, shared_data, edit) -> tuple:
    lines = (shared_data / LASTFM_SAMPLE).read_text().splitlines()
    path = tmp_path / "bad_sample.txt"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def _set_field(lines, lineno, field, value):
    parts = lines[lineno - 1].split()
    parts[field] = value
    return lines[:lineno - 1] + [" ".join(parts)] + lines[lineno:]


BAD_FILES = {
    "unknown user": (lambda ls: _set_field(ls, 3, 0, "99999"), "line 3: user '99999' is not a user"),
    "unknown item": (lambda ls: _set_field(ls, 5, 7, "88888"), "line 5: item '88888' is not an item"),
    "wrong count": (lambda ls: ls[:9] + [ls[9].rsplit(" ", 1)[0]] + ls[10:],
                    "line 10: 98 negatives, expected protocol.eval_negatives = 99"),
    "missing user": (lambda ls: ls[:-1], "no line for user"),
    "user twice": (lambda ls: ls + [ls[0]], "line 1091: user '1' again (first at line 1)"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_each_bad_negatives_file_is_refused_naming_file_line_and_id(lastfm, shared_data, tmp_path, case):
    edit, message = BAD_FILES[case]
    path = bad_file(tmp_path, shared_data, edit)
    with pytest.raises(DataFormatError) as err:
        make_split(lastfm, "loo_val", eval_negatives=99, eval_negatives_file=path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_a_file_negative_inside_the_pool_is_refused(lastfm, shared_data, tmp_path):
    first_user = int(lastfm.user_keys[0])
    own_item = str(int(lastfm.item_keys[lastfm.items[0]]))
    path = bad_file(tmp_path, shared_data, lambda ls: _set_field(ls, 1, 4, own_item))
    assert path.read_text().split()[0] == str(first_user)
    with pytest.raises(DataFormatError, match=rf"line 1: item '{own_item}' is in the sequence of user '1'"):
        make_split(lastfm, "loo_val", eval_negatives=99, eval_negatives_file=path)


def test_a_file_with_redraw_or_without_a_count_is_refused(shared_data):
    t = hand_table()
    with pytest.raises(ValueError, match="set protocol.eval_negatives_redraw=false"):
        make_split(t, "loo_val", eval_negatives=99, eval_negatives_file=shared_data / LASTFM_SAMPLE,
                   eval_negatives_redraw=True)
    with pytest.raises(ValueError, match="needs protocol.eval_negatives = the file's count"):
        make_split(t, "loo_val", eval_negatives=0, eval_negatives_file=shared_data / LASTFM_SAMPLE)
    with pytest.raises(ValueError, match="protocol.eval_negatives_pool='training'"):
        make_split(t, "loo_val", eval_negatives=3, eval_negatives_pool="training")


def test_the_split_cache_key_changes_with_each_knob_and_read_split_checks_the_settings(tmp_path):
    t = replace(hand_table(), content_hash="hand")
    cache = tmp_path / "cache"
    files = [tmp_path / "negs_a.txt", tmp_path / "negs_b.txt"]
    files[0].write_text("a i6\nb i5\nzz_filler i1\n")
    files[1].write_text("a i7\nb i5\nzz_filler i1\n")
    base = {"protocol": "loo_val", "seed": 1234, "eval_negatives": 1}
    variants = [{}, {"eval_negatives": 2}, {"eval_negatives_kind": "popularity"},
                {"eval_negatives_pool": "history"}, {"eval_negatives_redraw": True},
                {"eval_negatives_file": files[0]}, {"eval_negatives_file": files[1]}, {"seed": 7}]
    seen: set = set()
    created = {}
    for v in variants:
        split = load_split(t, cache, **{**base, **v})
        new = set(cache.glob("split_*.npz")) - seen
        assert len(new) == 1, v  # a cache file of its own
        seen |= new
        created[str(v)] = new.pop()
        again = load_split(t, cache, **{**base, **v})  # read back from the cache, the same
        assert np.array_equal(again.eval_negs, split.eval_negs) and again.eval_negs_redraw == split.eval_negs_redraw
        assert again.eval_negs_file_sha256 == split.eval_negs_file_sha256
    assert load_split(t, cache, **{**base, "eval_negatives_file": files[1]}).eval_negs[0].tolist() == [6]  # i7
    # the cache file of other settings (same shapes: seed 7) put where the history pool's belongs: refused, rebuilt
    history = {"eval_negatives_pool": "history"}
    shutil.copy(created[str({"seed": 7})], created[str(history)])
    rebuilt = load_split(t, cache, **{**base, **history})
    fresh = make_split(t, "loo_val", 1234, 1, eval_negatives_pool="history")
    assert np.array_equal(rebuilt.neg, fresh.neg) and np.array_equal(rebuilt.eval_negs, fresh.eval_negs)
