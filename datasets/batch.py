"""The plain-data boundary between the data pipeline and the models: one padded mini-batch of tensors."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

N_TIME_BUCKETS = 13  # gap buckets 0..12 (thresholds 2^1..2^12 days)
TIME_THRESHOLDS = 2 ** np.arange(1, 13)  # 2, 4, ..., 4096 days


def time_bucket(gap_days: np.ndarray) -> np.ndarray:
    """Number of thresholds 2^1..2^12 that `gap_days` reaches: 0..12 (the reference's `np.sum(gap >= thr)`)."""
    return np.searchsorted(TIME_THRESHOLDS, gap_days, side="right").astype(np.int64)


def padded_window(start: np.ndarray, end: np.ndarray, max_len: int | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions start..end-1 of each row (the last `max_len` of them), right-padded to the longest row (width
    >= 1): (idx [B, L], padding slots hold 0; mask [B, L], True for real positions; lengths [B])."""
    if max_len:
        start = np.maximum(start, end - max_len)
    lengths = end - start
    steps = np.arange(max(int(lengths.max(initial=0)), 1))
    mask = steps[None, :] < lengths[:, None]
    return np.where(mask, start[:, None] + steps[None, :], 0), mask, lengths


@dataclass(frozen=True)
class GroupHistory:
    """One behaviour group's history per row (datasets/behaviours.py): objects, time-gap buckets, mask, [B, Lg]."""

    objects: torch.Tensor
    time: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class Batch:
    """A mini-batch. Histories are right-padded to the longest history in the batch (L).

    user:      [B]    user ids
    hist:      [B, L] item ids, oldest first; padded slots hold 0 and must be ignored through `mask`
    hist_time: [B, L] time-gap bucket of each history item relative to the target's day, 0..12
    hist_rating: [B, L] rating 1..5 of each history item (0 = unknown), for behaviour groups
    mask:      [B, L] True for real history items
    lengths:   [B]    number of real history items (>= 0; BPR rows may have 0)
    target:    [B]    the item to score (pointwise rows: positive or negative; pairwise rows: positive)
    label:     [B]    1.0 / 0.0 for pointwise rows, else None
    neg:       [B]    sampled negative for pairwise rows (BPR, evaluation pairs), else None. A pointwise model
                      given `neg` and no `label` reads a PAIRED batch: each of the B prefixes stands for two
                      rows, (history, target, 1) and (history, neg, 0), so the batch holds 2B rows.
    groups:    one GroupHistory per behaviour group of the dataset, in its order (empty without behaviours):
               the events strictly before the target's time (ATRank's behavior_groups=typed reads them)
    mean_rows:        the row count that means over rows divide by (None: this batch's own rows). A
                      data-parallel worker sets the global batch's, so the workers' losses sum to its loss.
    """

    user: torch.Tensor
    hist: torch.Tensor
    hist_time: torch.Tensor
    hist_rating: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor | None = None
    neg: torch.Tensor | None = None
    groups: tuple[GroupHistory, ...] = ()
    mean_rows: int | None = None

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def with_target(self, target: torch.Tensor) -> "Batch":
        return replace(self, target=target)

    @property
    def paired(self) -> bool:
        """Pointwise rows paired by prefix: (target, 1) and (neg, 0) per history (see `neg` above)."""
        return self.label is None and self.neg is not None

    def row_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of per-row values `x` (any shape, one value per row), over `mean_rows` rows when set."""
        return x.mean() if self.mean_rows is None else x.sum() / self.mean_rows
