"""Batches: time buckets, per-batch padding, length bucketing, max_len truncation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.batching import BatchMaker, batch_order, time_bucket, train_rows
from datasets.split import make_split
from tests.datasets.conftest import make_table


def test_time_buckets_hand_computed():
    gaps = np.array([0, 1, 2, 3, 4, 4095, 4096, 10**5])
    # number of thresholds 2, 4, ..., 4096 that the gap reaches
    assert time_bucket(gaps).tolist() == [0, 0, 1, 1, 2, 11, 12, 12]


def test_batch_time_gap_is_relative_to_target_day():
    day = 86400
    t = make_table({"u": ["a", "b", "c", "d"]}, times={"u": [0, 2 * day + 5, 3 * day, 4100 * day]},
                   extra_items=("e", "f", "g"))
    split = make_split(t, "paper")
    rows = train_rows(t, split, "pairwise")  # positions 0, 1, 2 (history lengths 0, 1, 2)
    b = BatchMaker(t).make(rows.take(np.array([2])))
    # target c on day 3: gaps = 3-0+1 = 4 (bucket 2) and 3-2+1 = 2 (bucket 1)
    assert b.hist.tolist() == [[t.item_keys.tolist().index("a"), t.item_keys.tolist().index("b")]]
    assert b.hist_time.tolist() == [[2, 1]]
    test = BatchMaker(t).make(rows.take(np.array([0])))  # empty history: one padded slot
    assert test.lengths.tolist() == [0] and not test.mask.any()


def test_padding_only_to_longest_in_batch_and_max_len(clothing_table):
    t = clothing_table
    rows = train_rows(t, make_split(t, "paper"), "pointwise")
    maker = BatchMaker(t)
    idx = np.array([0, 1, 2, 3])
    b = maker.make(rows.take(idx))
    lengths = rows.end[idx] - t.indptr[rows.user[idx]]
    assert b.hist.shape[1] == lengths.max() and b.mask.sum(1).tolist() == lengths.tolist()
    assert (b.hist[~b.mask] == 0).all()
    short = BatchMaker(t, max_len=2).make(rows.take(idx))
    assert short.hist.shape[1] == min(2, lengths.max())
    # truncation keeps the LAST items
    for r in range(4):
        n = int(short.lengths[r])
        assert torch.equal(short.hist[r, :n], b.hist[r, int(b.lengths[r]) - n:int(b.lengths[r])])


def test_length_bucketing_cuts_padding_and_keeps_every_row(clothing_table):
    t = clothing_table
    rows = train_rows(t, make_split(t, "paper"), "pointwise")
    lengths = rows.end - t.indptr[rows.user]

    def padded_fraction(batches):
        slots = sum(lengths[b].max() * len(b) for b in batches)
        return 1 - lengths.sum() / slots

    plain = batch_order(rows, 32, np.random.default_rng(0), bucket_by_length=False)
    bucketed = batch_order(rows, 32, np.random.default_rng(0), bucket_by_length=True, indptr=t.indptr)
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(len(rows)))
    assert padded_fraction(bucketed) < 0.5 * padded_fraction(plain)


def test_larger_bucket_chunks_pad_the_long_tail_less(clothing_table):
    """The rare long histories share a chunk of 64 batches with much shorter ones; 1,024-batch chunks (the default
    since 2026-12-06) group them with each other. Every row still comes exactly once."""
    t = clothing_table
    rows = train_rows(t, make_split(t, "paper"), "pointwise", paired=True)
    lengths = rows.end - t.indptr[rows.user]
    long_rows = lengths >= np.quantile(lengths, 0.99)

    def tail_padding(chunk):
        batches = batch_order(rows, 16, np.random.default_rng(0), indptr=t.indptr, chunk_batches=chunk)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(rows)))
        tail = [b for b in batches if long_rows[b].any()]
        return sum(lengths[b].max() * len(b) for b in tail) / sum(lengths[b].sum() for b in tail)

    assert tail_padding(1024) < 0.8 * tail_padding(64)
    with pytest.raises(ValueError, match="chunk_batches must be at least 1"):
        batch_order(rows, 16, np.random.default_rng(0), indptr=t.indptr, chunk_batches=0)
