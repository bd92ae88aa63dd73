"""Device-resident batching (datasets/device_batches.py): the same Batch as the numpy BatchMaker for the same rows,
field by field and dtype by dtype, on the real clothing_seq data and on a table with real time gaps; static widths
only add masked padding. Runs on the CPU (the device path's code is the same on a GPU)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from datasets.batch import Batch
from datasets.batching import BatchMaker, batch_order, eval_rows, train_rows
from datasets.device_batches import DeviceBatchMaker, static_width
from datasets.split import make_split
from tests.datasets.conftest import make_table

FIELDS = [f.name for f in dataclasses.fields(Batch) if f.name not in ("mean_rows", "groups")]


def assert_same_batch(got, want, widened: bool = False) -> None:
    for name in FIELDS:
        g, w = getattr(got, name), getattr(want, name)
        if w is None:
            assert g is None, name
            continue
        assert g.dtype == w.dtype, (name, g.dtype, w.dtype)
        if widened and g.dim() == 2:  # extra columns: padding only
            assert g.shape[1] >= w.shape[1]
            assert not g[:, w.shape[1]:].any(), name
            g = g[:, :w.shape[1]]
        assert torch.equal(g.cpu(), w), name


def test_static_width_is_multiples_of_8_then_powers_of_two():
    assert [static_width(n) for n in (0, 1, 8, 9, 33, 64, 65, 128, 129, 400, 1000)] == \
        [8, 8, 8, 16, 40, 64, 128, 128, 256, 512, 1024]
    widths = {static_width(n) for n in range(1, 513)}
    assert widths == {8, 16, 24, 32, 40, 48, 56, 64, 128, 256, 512}


@pytest.mark.parametrize("train_format,paired", [("pointwise", False), ("pointwise", True), ("pairwise", False),
                                                 ("sequence", False)])
@pytest.mark.parametrize("max_len", [None, 5])
def test_device_batches_equal_numpy_batches_on_real_data(clothing_table, train_format, paired, max_len):
    t = clothing_table
    rows = train_rows(t, make_split(t, "paper"), train_format, paired=paired)
    host = BatchMaker(t, max_len=max_len)
    device = DeviceBatchMaker(t, max_len=max_len, device="cpu")
    wide = DeviceBatchMaker(t, max_len=max_len, device="cpu", static_widths=True)
    resident, resident_wide = device.put(rows), wide.put(rows)
    batches = batch_order(rows, 32, np.random.default_rng(0), indptr=t.indptr)
    picks = [batches[i] for i in np.random.default_rng(1).choice(len(batches), 25, replace=False)]
    picks.append(np.argsort(rows.end - t.indptr[rows.user])[-32:])  # the longest histories
    for idx in picks:
        want = host.make(rows.take(idx))
        assert_same_batch(device.make_indexed(resident, idx), want)
        assert_same_batch(device.make(rows.take(idx)), want)
        got = wide.make_indexed(resident_wide, torch.as_tensor(idx))
        assert got.hist.shape[1] == static_width(want.hist.shape[1])
        assert_same_batch(got, want, widened=True)


def test_device_batches_equal_numpy_on_real_time_gaps_and_eval_rows():
    day = 86400
    t = make_table({"u": list("abcdefg"), "v": list("bcd")},
                   times={"u": [0, 2 * day + 5, 3 * day, 40 * day, 400 * day, 4000 * day, 4100 * day],
                          "v": [0, day, 9000 * day]}, extra_items=("h", "i", "j"))
    split = make_split(t, "paper")
    for rows in (train_rows(t, split, "pairwise"), eval_rows(t, split, "test")):
        idx = np.arange(len(rows))
        want = BatchMaker(t).make(rows.take(idx))
        assert want.hist_time.max() > 5  # real gaps reach the high buckets
        assert_same_batch(DeviceBatchMaker(t).make(rows.take(idx)), want)
        assert_same_batch(DeviceBatchMaker.from_maker(BatchMaker(t), "cpu").make(rows.take(idx)), want)
