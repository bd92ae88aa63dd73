"""Sampled evaluation negatives: K items per user, drawn from a pool or read from a negatives file.

Drawn (protocol.eval_negatives = K, eval_negatives_kind uniform | popularity) from one seeded numpy stream, users
in id order, K distinct items per user, none in the user's excluded items (`eval_negatives_pool`):
- "sequence": any item of the user's whole sequence (S3Rec: the 99 negatives avoid every item of the user; the
  suite's behaviour before the pool was named, so the default).
- "history": only the items of the user's training part, items[:train_end] (SASRec's evaluate(): `rated =
  set(train[u])`). A held-out item may then be drawn: the validation item for the test row, and with a chance of
  about K / n_items the row's own target, which then ties with itself (the tie policy ranks it). Unlike SASRec's
  code, the K draws of a user are distinct (SASRec draws with replacement).
A file (`eval_negatives_file`, S3Rec's `*_sample.txt`: `user neg1 ... negK` per line, raw ids) is used exactly as
given, mapped through the table's raw-id vocabularies; it must name every user once, with K known items that
respect the pool.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from datasets.lines import iter_lines
from datasets.raw_errors import DataFormatError
from datasets.table import Table

POOLS = ("sequence", "history")
KINDS = ("uniform", "popularity")
FILE_EXPECTED = "'user neg1 ... negK' (raw user id, then K raw item ids, separated by white space)"


def check_negative_settings(count: int, kind: str, pool: str, redraw: bool, file: Path | None) -> None:
    """Raise ValueError naming the protocol key whose value is not one this module knows."""
    if kind not in KINDS:
        raise ValueError(f"protocol.eval_negatives_kind={kind!r}: expected one of {', '.join(KINDS)}")
    if pool not in POOLS:
        raise ValueError(f"protocol.eval_negatives_pool={pool!r}: expected one of {', '.join(POOLS)} (sequence: "
                         "never an item of the user's whole sequence; history: never one of its training part)")
    if not isinstance(redraw, bool):
        raise ValueError(f"protocol.eval_negatives_redraw={redraw!r}: expected false (frozen per split seed) or "
                         "true (redrawn at every evaluation)")
    if file is not None and count < 1:
        raise ValueError(f"protocol.eval_negatives_file={file} needs protocol.eval_negatives = the file's count of "
                         f"negatives per line, got {count}")
    if file is not None and redraw:
        raise ValueError(f"protocol.eval_negatives_file={file} is used as given, the same at every evaluation: "
                         "set protocol.eval_negatives_redraw=false")


def excluded_ends(table: Table, pool: str, train_end: np.ndarray | None) -> np.ndarray:
    """Per user, the absolute end (exclusive) of the items its negatives avoid: items[indptr[u]:end[u]]."""
    if pool == "sequence":
        return table.indptr[1:]
    if pool == "history":
        if train_end is None:
            raise ValueError("eval_negatives_pool='history' needs the split's train_end")
        return np.asarray(train_end, dtype=np.int64)
    raise ValueError(f"protocol.eval_negatives_pool={pool!r}: expected one of {', '.join(POOLS)}")


def pool_sizes(table: Table, ends: np.ndarray) -> np.ndarray:
    """int64 [n_users]: the items a user's negatives may be drawn from (the catalogue less its distinct excluded
    items)."""
    users = np.repeat(np.arange(table.n_users, dtype=np.int64), table.lengths)
    keep = np.arange(table.n_interactions) < ends[users]
    distinct = np.unique(users[keep] * table.n_items + table.items[keep])
    return table.n_items - np.bincount(distinct // table.n_items, minlength=table.n_users)


def check_pool(table: Table, n: int, pool: str, ends: np.ndarray) -> None:
    """Raise ValueError when some user's pool holds fewer than `n` items (naming the first such user)."""
    sizes = pool_sizes(table, ends)
    short = np.flatnonzero(sizes < n)
    if len(short):
        u = int(short[0])
        raise ValueError(f"protocol.eval_negatives={n} is larger than the pool of user {str(table.user_keys[u])!r} of "
                         f"dataset {table.name!r}: {int(sizes[u])} items (eval_negatives_pool={pool}, "
                         f"{table.n_items} items in all; {len(short)} user(s) have fewer than {n})")


def draw_eval_negatives(table: Table, n: int, seed: int | Sequence[int], kind: str = "uniform",
                        pool: str = "sequence", train_end: np.ndarray | None = None) -> np.ndarray:
    """int32 [n_users, n]: `n` distinct negatives per user outside its pool's excluded items, uniform or
    popularity-weighted, from numpy's default_rng(seed)."""
    rng = np.random.default_rng(seed)
    ends = excluded_ends(table, pool, train_end)
    check_pool(table, n, pool, ends)
    probs = None
    if kind == "popularity":
        counts = np.bincount(table.items, minlength=table.n_items).astype(np.float64)
        probs = counts / counts.sum()
    elif kind != "uniform":
        raise ValueError(f"protocol.eval_negatives_kind={kind!r}: expected one of {', '.join(KINDS)}")
    out = np.empty((table.n_users, n), dtype=np.int32)
    for u in range(table.n_users):
        seen = set(table.items[table.indptr[u]:ends[u]].tolist())
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


def _vocabulary(keys: np.ndarray) -> tuple[dict, bool]:
    """(raw id -> index, by integer value): the loaders zero-pad integer ids ("0007"), which the files write
    unpadded ("7"), so all-digit keys are looked up by their integer value."""
    numeric = bool(len(keys)) and all(str(k).isdigit() for k in keys)
    return ({int(k) if numeric else str(k): i for i, k in enumerate(keys)}), numeric


def _lookup(vocab: dict, numeric: bool, token: str) -> int | None:
    if numeric:
        return vocab.get(int(token)) if token.isdigit() else None
    return vocab.get(token)


def read_negatives_file(path: Path, table: Table, n: int, pool: str, train_end: np.ndarray | None) -> np.ndarray:
    """int32 [n_users, n]: the file's negatives, line by line, mapped to the table's ids; DataFormatError naming
    the file, the line and the id for an unknown user or item, a wrong count, a user twice or missing, or a
    negative inside the user's excluded items (`pool`)."""
    users, user_numeric = _vocabulary(table.user_keys)
    items, item_numeric = _vocabulary(table.item_keys)
    ends = excluded_ends(table, pool, train_end)
    out = np.full((table.n_users, n), -1, dtype=np.int32)
    line_of: dict[int, int] = {}
    for lineno, raw in iter_lines(path, FILE_EXPECTED):
        parts = raw.decode("utf-8", errors="replace").split()
        where = f"{path}, line {lineno}"
        if len(parts) - 1 != n:
            raise DataFormatError(f"{where}: {len(parts) - 1} negatives, expected protocol.eval_negatives = {n}; "
                                  f"expected {FILE_EXPECTED}")
        u = _lookup(users, user_numeric, parts[0])
        if u is None:
            raise DataFormatError(f"{where}: user {parts[0]!r} is not a user of dataset {table.name!r}")
        if u in line_of:
            raise DataFormatError(f"{where}: user {parts[0]!r} again (first at line {line_of[u]})")
        line_of[u] = lineno
        seen = set(table.items[table.indptr[u]:ends[u]].tolist())
        ids = []
        for token in parts[1:]:
            i = _lookup(items, item_numeric, token)
            if i is None:
                raise DataFormatError(f"{where}: item {token!r} is not an item of dataset {table.name!r}")
            if i in seen:
                part = "sequence" if pool == "sequence" else "training part"
                raise DataFormatError(f"{where}: item {token!r} is in the {part} of user {parts[0]!r}, so it is no "
                                      f"negative (protocol.eval_negatives_pool={pool})")
            ids.append(i)
        out[u] = ids
    missing = [u for u in range(table.n_users) if u not in line_of]
    if missing:
        raise DataFormatError(f"{path}: no line for user {str(table.user_keys[missing[0]])!r} of dataset "
                              f"{table.name!r} ({len(missing)} of its {table.n_users} users have none)")
    return out
