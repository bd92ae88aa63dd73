"""Batches assembled on the device: the table's CSR arrays and a split's rows live there as tensors, and a Batch is
gathered, padded and masked from an index tensor with torch ops only (the same Batch as datasets/batches.BatchMaker
for the same rows: tests/datasets/test_device_batches.py checks it field by field on the real data).

The batch width comes from a host-side copy of the rows' history lengths, so assembling a batch never waits for the
device. `static_widths` rounds every width up to a small fixed set (static_width: multiples of 8 up to 64, then
powers of two), so an accelerator sees few distinct shapes (one CUDA graph per width); the extra slots are padding
(item 0, mask False), which no model's score or loss may depend on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datasets.batch import Batch
from datasets.batching import TIME_THRESHOLDS, BatchMaker, Rows
from datasets.table import Table


def static_width(n: int) -> int:
    """The fixed width a batch of natural width `n` is padded to: 8, 16, ..., 64, then 128, 256, 512, ..."""
    n = max(int(n), 1)
    if n <= 64:
        return -(-n // 8) * 8
    return 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class DeviceRows:
    """Rows resident on the device, plus each row's history length on the host (it sets the batch width)."""
    user: torch.Tensor
    end: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor | None
    neg: torch.Tensor | None
    hist_len: np.ndarray  # host int64 [N], already capped at max_len

    def __len__(self) -> int:
        return len(self.hist_len)


class DeviceBatchMaker:
    """BatchMaker's twin on a device. `make(rows)` takes host Rows (evaluation); `put(rows)` makes rows resident
    once and `make_indexed(resident, idx)` builds a training batch from indices into them. `indptr`, `items` and
    `max_len` stay available on the host as BatchMaker's, for the evaluation's length ordering and full ranking."""

    def __init__(self, table: Table | None, max_len: int | None = None, device: str | torch.device = "cpu",
                 static_widths: bool = False, *, arrays: dict | None = None):
        if table is not None and table.behaviours is not None:
            raise ValueError("behaviour groups (dataset option behaviours) are built by the host batch maker: "
                             "set trainer.device_batches=false")
        a = arrays if arrays is not None else {"indptr": table.indptr, "items": table.items,
                                               "days": (table.times // 86400).astype(np.int64),
                                               "ratings": table.ratings}
        self.indptr, self.items, self.max_len = a["indptr"], a["items"], max_len
        self.device, self.static_widths = torch.device(device), static_widths
        put = self._to_device
        self.d_indptr, self.d_items = put(a["indptr"]), put(a["items"])
        self.d_days, self.d_ratings = put(a["days"]), put(a["ratings"])
        self.thresholds = put(TIME_THRESHOLDS)

    @classmethod
    def from_maker(cls, maker: BatchMaker, device: str | torch.device, static_widths: bool = False):
        return cls(None, maker.max_len, device, static_widths,
                   arrays={"indptr": maker.indptr, "items": maker.items, "days": maker.days,
                           "ratings": maker.ratings})

    def _to_device(self, a: np.ndarray, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a)).to(device=self.device, dtype=dtype)

    def hist_len(self, rows: Rows) -> np.ndarray:
        lengths = rows.end - self.indptr[rows.user]
        return np.minimum(lengths, self.max_len) if self.max_len else lengths

    def width(self, hist_len: np.ndarray) -> int:
        natural = max(int(hist_len.max()), 1) if len(hist_len) else 1
        return static_width(natural) if self.static_widths else natural

    def put(self, rows: Rows) -> DeviceRows:
        """`rows` resident on the device (a training run does this once)."""
        put = self._to_device
        return DeviceRows(put(rows.user), put(rows.end), put(rows.target),
                          None if rows.label is None else put(rows.label, torch.float32),
                          None if rows.neg is None else put(rows.neg), self.hist_len(rows).astype(np.int64))

    def make_indexed(self, resident: DeviceRows, idx: np.ndarray | torch.Tensor) -> Batch:
        """The batch of rows `idx` of `resident` (the index is the only host -> device copy)."""
        host_idx = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        width = self.width(resident.hist_len[host_idx])
        i = torch.as_tensor(host_idx, dtype=torch.int64)
        if self.device.type == "cuda":
            i = i.pin_memory().to(self.device, non_blocking=True)
        else:
            i = i.to(self.device)
        pick = (lambda t: None if t is None else t.index_select(0, i))
        return self.assemble(pick(resident.user), pick(resident.end), pick(resident.target), pick(resident.label),
                             pick(resident.neg), width)

    def make(self, rows: Rows) -> Batch:
        """The batch of host `rows` (BatchMaker.make's signature: evaluation calls it)."""
        d = self.put(rows)
        return self.assemble(d.user, d.end, d.target, d.label, d.neg, self.width(d.hist_len))

    def assemble(self, user: torch.Tensor, end: torch.Tensor, target: torch.Tensor, label: torch.Tensor | None,
                 neg: torch.Tensor | None, width: int) -> Batch:
        """Gather, pad, mask, time-bucket: BatchMaker.make's arithmetic in torch ops on the device."""
        start = self.d_indptr.index_select(0, user)
        if self.max_len:
            start = torch.maximum(start, end - self.max_len)
        lengths = end - start
        steps = torch.arange(width, device=self.device)
        mask = steps[None, :] < lengths[:, None]  # [B, L]
        idx = torch.where(mask, start[:, None] + steps[None, :], 0)  # [B, L]
        hist = torch.where(mask, self.d_items[idx], 0)
        ref_day = self.d_days[torch.clamp(end, max=len(self.d_days) - 1)]
        gap = ref_day[:, None] - self.d_days[idx] + 1
        hist_time = torch.where(mask, torch.bucketize(gap, self.thresholds, right=True), 0)
        hist_rating = torch.where(mask, self.d_ratings[idx], 0)
        return Batch(user=user, hist=hist, hist_time=hist_time, hist_rating=hist_rating, mask=mask,
                     lengths=lengths, target=target, label=label, neg=neg)
