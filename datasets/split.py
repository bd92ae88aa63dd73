"""Stage 3: Table -> leave-last-out Split with frozen negatives, drawn once and stored with the split.

A user's items are items[0..n-1], oldest first (one row of the grid below is one user):

    protocol=paper     train targets: 1 .. n-2          test: n-1           (no validation: the paper
                       T T T ... T  t                                        selects on test)
    protocol=loo_val   train targets: 1 .. n-3          valid: n-2   test: n-1
                       T T ... T  v  t

A target at position i is predicted from the history items[:i]; the test history includes the validation item.
BPR-style rows also use position 0 (empty history). Every position gets one negative from ONE Python
`random.Random(seed)` stream exactly as the reference (jinze1994/ATRank `build_dataset.py`): users in re-mapped id
order, per user one draw per position (position 0 included, though the reference never uses it), each draw
starting from items[0] and redrawn with `randint(0, n_items - 1)` while it is any item of that user. With seed 1234
this reproduces the reference's test pairs (tests/datasets/test_split.py checks all 39,387 Clothing rows).

A user with fewer interactions than the protocol needs (MIN_INTERACTIONS: paper 3, loo_val 4) is never a crash:
with protocol.short_users=train (the default, as the SASRec authors' data_partition, which puts a user with fewer
than 3 items wholly into training) every position of the user is a training target and nothing is held out; with
short_users=drop the data policy removes the user before the table is built (`data_options`). Either is counted.
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.atomic import atomic_write_bytes
from datasets.names import under
from datasets.table import Table

PROTOCOLS = ("paper", "loo_val")
MIN_INTERACTIONS = {"paper": 3, "loo_val": 4}  # a training target with a history, then the held-out item(s)
SHORT_USERS = ("train", "drop")  # protocol.short_users: users shorter than MIN_INTERACTIONS
SPLIT_VERSION = "1"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Frozen split of a Table. Positions are absolute indices into table.items (CSR)."""

    protocol: str
    seed: int
    neg: np.ndarray  # int32 [n_interactions], one sampled negative per position
    train_end: np.ndarray  # int64 [n_users], absolute end (exclusive) of each user's training targets
    valid_pos: np.ndarray | None  # int64 [n_users], absolute position of the validation target (loo_val)
    test_pos: np.ndarray  # int64 [n_users], absolute position of the test target
    eval_negs: np.ndarray | None = None  # int32 [n_users, K] extra frozen negatives for sampled metrics
    eval_negs_kind: str = ""

    def n_train_positions(self, table: Table, first: int = 1) -> int:
        return int(np.maximum(self.train_end - (table.indptr[:-1] + first), 0).sum())

    def short_user_counts(self, table: Table) -> dict[str, int]:
        """Users too short for the protocol, kept as training data only (no held-out item), and their rows."""
        short = self.test_pos < 0
        return {"short_users_train_only": int(short.sum()),
                "short_user_rows_train_only": int(table.lengths[short].sum())}


def draw_reference_negatives(table: Table, seed: int = 1234) -> np.ndarray:
    """One negative per position, from the reference's Python RNG stream (see module docstring)."""
    rng = random.Random(seed)
    randbelow = rng._randbelow  # randint(0, n-1) == _randbelow(n): same stream, without randint's overhead
    n_items = table.n_items
    items = table.items.tolist()
    indptr = table.indptr.tolist()
    neg = [0] * len(items)
    for u in range(table.n_users):
        lo, hi = indptr[u], indptr[u + 1]
        seen = set(items[lo:hi])
        if len(seen) >= n_items:  # the redraw loop would never end
            raise ValueError(f"user {table.user_keys[u]!r} of dataset {table.name!r} has reviewed all {n_items} "
                             f"items: no negative can be drawn")
        first = items[lo]
        for p in range(lo, hi):
            draw = first
            while draw in seen:
                draw = randbelow(n_items)
            neg[p] = draw
    return np.asarray(neg, dtype=np.int32)


def draw_eval_negatives(table: Table, n: int, seed: int, kind: str = "uniform") -> np.ndarray:
    """`n` negatives per user (none of that user's items), uniform or popularity-weighted, seeded numpy stream."""
    rng = np.random.default_rng(seed)
    if n >= table.n_items - table.lengths.max():
        raise ValueError(f"cannot draw {n} negatives per user from {table.n_items} items")
    probs = None
    if kind == "popularity":
        counts = np.bincount(table.items, minlength=table.n_items).astype(np.float64)
        probs = counts / counts.sum()
    elif kind != "uniform":
        raise ValueError(f"eval negatives kind must be 'uniform' or 'popularity', got {kind!r}")
    out = np.empty((table.n_users, n), dtype=np.int32)
    for u in range(table.n_users):
        seen = set(table.items[table.indptr[u]:table.indptr[u + 1]].tolist())
        chosen: list[int] = []
        taken: set[int] = set()
        while len(chosen) < n:
            for d in rng.choice(table.n_items, size=2 * n, p=probs).tolist():
                if d not in seen and d not in taken:
                    taken.add(d)
                    chosen.append(d)
                    if len(chosen) == n:
                        break
        out[u] = chosen
    return out


def make_split(table: Table, protocol: str = "paper", seed: int = 1234, eval_negatives: int = 0,
               eval_negatives_kind: str = "uniform", short_users: str = "train") -> Split:
    """The protocol's split. Users shorter than MIN_INTERACTIONS[protocol] are training data only (every position
    a training target, no held-out item: valid_pos = test_pos = -1, as the SASRec authors' data_partition);
    short_users="drop" removes them before the table instead (`data_options`), so none may be left here."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    _check_short_users(short_users)
    min_len = MIN_INTERACTIONS[protocol]
    lengths = table.lengths
    short = lengths < min_len
    if short.all():
        raise ValueError(f"protocol {protocol!r} needs >= {min_len} interactions per user to hold items out; no "
                         f"user of dataset {table.name!r} has that many (the longest has {lengths.max()}): no user "
                         f"would be evaluated")
    if short_users == "drop" and short.any():
        u = int(np.argmax(short))
        raise ValueError(f"short_users='drop' but user {table.user_keys[u]!r} of dataset {table.name!r} has "
                         f"{lengths[u]} interactions (< {min_len}); the table must be loaded with "
                         f"datasets.split.data_options(...), which drops them")
    neg = draw_reference_negatives(table, seed)
    last = table.indptr[1:] - 1
    eval_negs = draw_eval_negatives(table, eval_negatives, seed, eval_negatives_kind) if eval_negatives else None
    kind = eval_negatives_kind if eval_negatives else ""
    test_pos = np.where(short, -1, last)
    if protocol == "paper":
        return Split(protocol, seed, neg, train_end=np.where(short, last + 1, last), valid_pos=None,
                     test_pos=test_pos, eval_negs=eval_negs, eval_negs_kind=kind)
    return Split(protocol, seed, neg, train_end=np.where(short, last + 1, last - 1),
                 valid_pos=np.where(short, -1, last - 1), test_pos=test_pos, eval_negs=eval_negs, eval_negs_kind=kind)


def data_options(options: dict, protocol: str, short_users: str) -> dict:
    """The dataset options (datasets/load.py) for a protocol: with short_users="drop", the data policy's
    min_user_interactions is raised to what the protocol needs, so datasets/cleaning.py drops and counts the
    users too short for it; with "train" they are left to make_split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    _check_short_users(short_users)
    need = MIN_INTERACTIONS[protocol]
    current = options.get("min_user_interactions")
    if short_users == "drop" and (current is None or int(current) < need):
        return {**options, "min_user_interactions": need}
    return options


def _check_short_users(short_users: str) -> None:
    if short_users not in SHORT_USERS:
        raise ValueError(f"protocol.short_users={short_users!r}: expected one of {SHORT_USERS} (train: their items "
                         f"are training data only; drop: the data policy removes them)")


def log_short_users(table: Table, split: Split) -> None:
    """Warn with the count of users kept as training data only (datasets/split.py Split.short_user_counts)."""
    counts = split.short_user_counts(table)
    if counts["short_users_train_only"]:
        log.warning("dataset %s: %d user(s) with fewer than %d interactions (%d rows) are training data only under "
                    "protocol %s (protocol.short_users=train; =drop removes them)", table.name,
                    counts["short_users_train_only"], MIN_INTERACTIONS[split.protocol],
                    counts["short_user_rows_train_only"], split.protocol)


def split_fingerprint(split: Split) -> str:
    h = hashlib.sha256()
    for a in (split.neg, split.train_end, split.test_pos, split.valid_pos, split.eval_negs):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    h.update(f"{split.protocol}|{split.seed}".encode())
    return h.hexdigest()[:16]


def load_split(table: Table, cache_dir: str | Path, protocol: str = "paper", seed: int = 1234,
               eval_negatives: int = 0, eval_negatives_kind: str = "uniform", short_users: str = "train") -> Split:
    """make_split, cached as .npz next to the table (keyed by the table's hash and the split settings; a table
    holds users too short for the protocol only under short_users="train", so the key needs no more)."""
    key = hashlib.sha256(f"{table.content_hash}|{protocol}|{seed}|{eval_negatives}|{eval_negatives_kind}|"
                         f"{SPLIT_VERSION}".encode()).hexdigest()[:16]
    path = under(cache_dir, Path(cache_dir) / f"split_{table.name}_{key}.npz", "split cache")
    split = None
    if path.exists() and table.content_hash:
        from datasets.corrupt import READ_ERRORS, move_aside
        try:
            split = read_split(path, table, protocol, seed, eval_negatives, eval_negatives_kind)
        except READ_ERRORS as e:
            move_aside(path, e, f"dataset {table.name}: split cache")
    if split is None:
        split = make_split(table, protocol, seed, eval_negatives, eval_negatives_kind, short_users)
        if table.content_hash:
            _save_split(split, path)
    log_short_users(table, split)
    return split


def _save_split(split: Split, path: Path) -> None:
    import io

    arrays = {k: v for k, v in {"neg": split.neg, "train_end": split.train_end, "valid_pos": split.valid_pos,
                                 "test_pos": split.test_pos, "eval_negs": split.eval_negs}.items() if v is not None}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_split(path: Path, table: Table, protocol: str, seed: int, eval_negatives: int, kind: str) -> Split:
    """The split cached at `path` for `table`; raises one of datasets/corrupt.py READ_ERRORS when the file is
    damaged (a zip member's CRC-32 catches flipped bits) or its arrays do not fit the table."""
    with np.load(path, allow_pickle=False) as z:
        split = Split(protocol=protocol, seed=seed, neg=z["neg"], train_end=z["train_end"],
                      valid_pos=z["valid_pos"] if "valid_pos" in z.files else None, test_pos=z["test_pos"],
                      eval_negs=z["eval_negs"] if "eval_negs" in z.files else None,
                      eval_negs_kind=kind if eval_negatives else "")
    n_users = table.n_users
    if (len(split.neg) != table.n_interactions or len(split.train_end) != n_users or len(split.test_pos) != n_users
            or (split.valid_pos is None) != (protocol != "loo_val") or (split.eval_negs is None) != (not eval_negatives)
            or (split.valid_pos is not None and len(split.valid_pos) != n_users)):
        raise ValueError(f"split arrays do not fit the table ({n_users} users, {table.n_interactions} interactions)")
    return split
