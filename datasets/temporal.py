"""The temporal split (protocol=temporal): one global cut in time for every user, the leakage-free setting Sun
(SIGIR 2023) and Ji et al. (TOIS 2023) ask benchmarks to offer beside leave-last-out.

t1, t2 = the `temporal_cut` quantiles (default 0.8, 0.9) of ALL interaction times (numpy's "lower" method, so
each is a time of the data). Training = every interaction with time < t1; validation = [t1, t2); test = >= t2.
One user, oldest first (T training, v in the validation window, t in the test window):

    time:   ........ t1 ........ t2 ........
    user:   T T T T  | v  v  v    | t  t
                       ^ valid      ^ test

The row evaluated is each user's FIRST interaction in a window: its history is then exactly what the user had
done before it (the validation row's is the training part; the test row's also holds the validation window's
interactions, as leave-one-out's test history holds the validation item, though no model trains on them), and
one row per user keeps the leave-one-out metrics (sampled HR/NDCG, full ranking) meaning the same. Later
interactions in a window would be predicted from histories the model never saw up to the cut.
A user with no interaction before t1 has no training history: it is skipped (no row) and counted; a user whose
interactions all precede t1 is training data only. Datasets whose times are positions (S3Rec, `user item` and
clothing_seq files: user u's times are 0, 1, 2, ... days) are refused: a global cut of positions is no cut in time.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from datasets.sequences import DAY
from datasets.table import Table


def check_cut(cut: Sequence[float]) -> tuple[float, float]:
    """(q1, q2) with 0 < q1 < q2 < 1, else ValueError naming protocol.temporal_cut."""
    values = list(cut) if isinstance(cut, (list, tuple)) else None
    if (values is None or len(values) != 2 or not all(isinstance(q, (int, float)) and not isinstance(q, bool)
                                                      for q in values) or not 0 < values[0] < values[1] < 1):
        raise ValueError(f"protocol.temporal_cut={cut!r}: expected two quantiles [q1, q2] with 0 < q1 < q2 < 1 "
                         "(validation = times in [q1, q2), test = times >= q2)")
    return float(values[0]), float(values[1])


def check_real_times(table: Table) -> None:
    """Raise ValueError when every user's times are its positions in days (a file without timestamps)."""
    start = np.repeat(table.indptr[:-1], table.lengths)
    positions = np.arange(table.n_interactions, dtype=np.int64) - start
    if np.array_equal(table.times, positions * DAY):
        raise ValueError(f"protocol=temporal needs real interaction times, but dataset {table.name!r} has positions "
                         "only (each user's times are 0, 1, 2, ... days, as the S3Rec, `user item` and clothing_seq "
                         "loaders set them for files without timestamps); use protocol=loo_val or a dataset with "
                         "times")


def cut_times(table: Table, cut: Sequence[float]) -> tuple[int, int]:
    """(t1, t2): the cut quantiles of all interaction times; ValueError when the validation window is empty."""
    q1, q2 = check_cut(cut)
    t1, t2 = (int(t) for t in np.quantile(table.times, [q1, q2], method="lower"))
    if t1 >= t2:
        raise ValueError(f"protocol.temporal_cut={[q1, q2]}: both quantiles of dataset {table.name!r}'s times are "
                         f"{t1} (many interactions share that time), so the validation window [t1, t2) is empty; "
                         "choose quantiles further apart")
    return t1, t2


def temporal_positions(table: Table, cut: Sequence[float]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(train_end, valid_pos, test_pos, (t1, t2)): absolute positions as in datasets/split.Split (-1: no row)."""
    check_real_times(table)
    t1, t2 = cut_times(table, cut)
    users = np.repeat(np.arange(table.n_users, dtype=np.int64), table.lengths)
    before1 = np.bincount(users[table.times < t1], minlength=table.n_users)  # times sorted within a user
    before2 = np.bincount(users[table.times < t2], minlength=table.n_users)
    start = table.indptr[:-1]
    history = before1 > 0
    train_end = start + before1
    valid_pos = np.where(history & (before2 > before1), start + before1, -1)
    test_pos = np.where(history & (table.lengths > before2), start + before2, -1)
    if not (valid_pos >= 0).any() or not (test_pos >= 0).any():
        raise ValueError(f"protocol=temporal on dataset {table.name!r}: no user with a training history has a "
                         f"{'validation' if not (valid_pos >= 0).any() else 'test'} interaction after the cut "
                         f"(t1={t1}, t2={t2}); nothing would be evaluated")
    return train_end, valid_pos.astype(np.int64), test_pos.astype(np.int64), (t1, t2)


def temporal_counts(table: Table, train_end: np.ndarray, valid_pos: np.ndarray, test_pos: np.ndarray
                    ) -> dict[str, int]:
    """Users skipped for want of a training history, users with training data only, users evaluated."""
    no_history = train_end == table.indptr[:-1]
    held_out = (valid_pos >= 0) | (test_pos >= 0)
    return {"temporal_users_no_history_skipped": int(no_history.sum()),
            "temporal_users_train_only": int((~no_history & ~held_out).sum()),
            "temporal_valid_users": int((valid_pos >= 0).sum()), "temporal_test_users": int((test_pos >= 0).sum())}
