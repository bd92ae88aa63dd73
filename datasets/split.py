"""Stage 3: Table -> Split (leave-last-out, or a cut in time) with frozen negatives, drawn once and stored with it.

A user's items are items[0..n-1], oldest first (one row of the grid below is one user):

    protocol=paper     train targets: 1 .. n-2          test: n-1           (no validation: the paper
                       T T T ... T  t                                        selects on test)
    protocol=loo_val   train targets: 1 .. n-3          valid: n-2   test: n-1
                       T T ... T  v  t

    protocol=temporal  a global cut in time (datasets/temporal.py): train before t1, valid / test = each user's
                       first interaction in [t1, t2) / at or after t2

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
protocol=temporal evaluates a user by its times, not its length: short_users=train only (datasets/temporal.py).

Sampled evaluation negatives (protocol.eval_negatives > 0; datasets/negatives.py): K per user from a pool
(`sequence` | `history`), frozen per split seed or redrawn at every evaluation (`eval_negatives_at`), or read from
a negatives file used as given; one array serves validation and test.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.atomic import atomic_write_bytes
from datasets.names import under
from datasets.negatives import check_negative_settings, draw_eval_negatives, read_negatives_file
from datasets.table import Table, file_sha256
from datasets.temporal import check_cut, temporal_counts, temporal_positions

PROTOCOLS = ("paper", "loo_val", "temporal")
# A training target with a history, then the held-out item(s); temporal: users without a training history before
# the cut are skipped (datasets/temporal.py), whatever their length.
MIN_INTERACTIONS = {"paper": 3, "loo_val": 4, "temporal": 1}
SHORT_USERS = ("train", "drop")  # protocol.short_users: users shorter than MIN_INTERACTIONS
SPLIT_VERSION = "2"
TEMPORAL_CUT = (0.8, 0.9)

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
    eval_negs: np.ndarray | None = None  # int32 [n_users, K] sampled negatives (evaluation 0's when redrawn)
    eval_negs_kind: str = ""
    eval_negs_pool: str = ""  # sequence | history (datasets/negatives.py)
    eval_negs_redraw: bool = False  # True: evaluation i > 0 draws afresh (eval_negatives_at)
    eval_negs_file_sha256: str = ""  # the negatives file's checksum, when negatives come from one
    cut_times: tuple[int, int] | None = None  # protocol=temporal: (t1, t2) in unix seconds

    def n_train_positions(self, table: Table, first: int = 1) -> int:
        return int(np.maximum(self.train_end - (table.indptr[:-1] + first), 0).sum())

    def provenance(self) -> dict[str, str]:
        """MLflow tags of what the config keys alone do not say: the negatives file's sha256, the temporal cut."""
        tags = {"eval_negatives_file_sha256": self.eval_negs_file_sha256} if self.eval_negs_file_sha256 else {}
        if self.cut_times is not None:
            tags["temporal_cut_times"] = f"{self.cut_times[0]},{self.cut_times[1]}"
        return tags

    def short_user_counts(self, table: Table) -> dict[str, int]:
        """Users too short for the protocol, kept as training data only (no held-out item), and their rows;
        protocol=temporal: users skipped without a training history, training-only and evaluated users."""
        if self.protocol == "temporal":
            return temporal_counts(table, self.train_end, self.valid_pos, self.test_pos)
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


def eval_negatives_at(split: Split, table: Table, evaluation_index: int) -> np.ndarray | None:
    """The sampled negatives of evaluation `evaluation_index` (0, 1, ...): the split's frozen array, or, with
    eval_negs_redraw, a fresh draw from default_rng((split.seed, evaluation_index)) for every index > 0 (index 0
    is the array stored with the split, drawn from default_rng(split.seed)). None without sampled negatives."""
    if (isinstance(evaluation_index, bool) or not isinstance(evaluation_index, (int, np.integer))
            or evaluation_index < 0):
        raise ValueError(f"evaluation_index={evaluation_index!r}: expected an integer >= 0")
    if split.eval_negs is None or not split.eval_negs_redraw or evaluation_index == 0:
        return split.eval_negs
    return draw_eval_negatives(table, split.eval_negs.shape[1], (split.seed, int(evaluation_index)),
                               split.eval_negs_kind, split.eval_negs_pool, split.train_end)


def split_positions(table: Table, protocol: str, short_users: str, temporal_cut: tuple[float, float]
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[int, int] | None]:
    """(train_end, valid_pos, test_pos, cut_times) of the protocol (see the module docstring)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    _check_short_users(short_users, protocol)
    if protocol == "temporal":
        return temporal_positions(table, temporal_cut)
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
    last = table.indptr[1:] - 1
    test_pos = np.where(short, -1, last)
    if protocol == "paper":
        return np.where(short, last + 1, last), None, test_pos, None
    return np.where(short, last + 1, last - 1), np.where(short, -1, last - 1), test_pos, None


def make_split(table: Table, protocol: str = "paper", seed: int = 1234, eval_negatives: int = 0,
               eval_negatives_kind: str = "uniform", short_users: str = "train", eval_negatives_pool: str = "sequence",
               eval_negatives_redraw: bool = False, eval_negatives_file: Path | None = None,
               temporal_cut: tuple[float, float] = TEMPORAL_CUT) -> Split:
    """The protocol's split. Users shorter than MIN_INTERACTIONS[protocol] are training data only (every position
    a training target, no held-out item: valid_pos = test_pos = -1, as the SASRec authors' data_partition);
    short_users="drop" removes them before the table instead (`data_options`), so none may be left here.
    `eval_negatives` > 0: that many sampled negatives per user (datasets/negatives.py), read from
    `eval_negatives_file` when given (its sha256 is kept with the split)."""
    check_negative_settings(eval_negatives, eval_negatives_kind, eval_negatives_pool, eval_negatives_redraw,
                            eval_negatives_file)
    train_end, valid_pos, test_pos, cut = split_positions(table, protocol, short_users, temporal_cut)
    neg = draw_reference_negatives(table, seed)
    eval_negs, sha = None, ""
    if eval_negatives and eval_negatives_file is not None:
        eval_negs = read_negatives_file(Path(eval_negatives_file), table, eval_negatives, eval_negatives_pool,
                                        train_end)
        sha = file_sha256(Path(eval_negatives_file))
    elif eval_negatives:
        eval_negs = draw_eval_negatives(table, eval_negatives, seed, eval_negatives_kind, eval_negatives_pool,
                                        train_end)
    named = bool(eval_negatives)
    return Split(protocol, seed, neg, train_end=train_end, valid_pos=valid_pos, test_pos=test_pos,
                 eval_negs=eval_negs, eval_negs_kind=eval_negatives_kind if named else "",
                 eval_negs_pool=eval_negatives_pool if named else "",
                 eval_negs_redraw=bool(eval_negatives_redraw) and named, eval_negs_file_sha256=sha, cut_times=cut)


def data_options(options: dict, protocol: str, short_users: str) -> dict:
    """The dataset options (datasets/load.py) for a protocol: with short_users="drop", the data policy's
    min_user_interactions is raised to what the protocol needs, so datasets/cleaning.py drops and counts the
    users too short for it; with "train" they are left to make_split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    _check_short_users(short_users, protocol)
    need = MIN_INTERACTIONS[protocol]
    current = options.get("min_user_interactions")
    if short_users == "drop" and (current is None or int(current) < need):
        return {**options, "min_user_interactions": need}
    return options


def _check_short_users(short_users: str, protocol: str) -> None:
    if short_users not in SHORT_USERS:
        raise ValueError(f"protocol.short_users={short_users!r}: expected one of {SHORT_USERS} (train: their items "
                         f"are training data only; drop: the data policy removes them)")
    if protocol == "temporal" and short_users != "train":
        raise ValueError(f"protocol.short_users={short_users!r} with split temporal: a user's evaluation rests on "
                         "its times, not its length (users without a training history before the cut are skipped "
                         "and counted); set protocol.short_users=train")


def log_short_users(table: Table, split: Split) -> None:
    """Warn with the count of users kept as training data only (datasets/split.py Split.short_user_counts)."""
    counts = split.short_user_counts(table)
    if split.protocol == "temporal":
        log.warning("dataset %s: protocol temporal cut at %s: %d user(s) without a training history skipped, %d "
                    "training data only, %d validation and %d test users", table.name, split.cut_times,
                    counts["temporal_users_no_history_skipped"], counts["temporal_users_train_only"],
                    counts["temporal_valid_users"], counts["temporal_test_users"])
    elif counts["short_users_train_only"]:
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
    if split.eval_negs_redraw or split.eval_negs_pool not in ("", "sequence") or split.eval_negs_file_sha256:
        # only beside the defaults, so a split made before these knobs keeps its fingerprint
        h.update(f"|{split.eval_negs_pool}|{split.eval_negs_redraw}|{split.eval_negs_file_sha256}".encode())
    return h.hexdigest()[:16]


def split_settings(protocol: str, seed: int, eval_negatives: int, kind: str, pool: str, redraw: bool,
                   file: Path | None, temporal_cut: tuple[float, float]) -> dict:
    """What the split cache is keyed by and read_split checks (the negatives file by its sha256)."""
    return {"protocol": protocol, "seed": seed, "eval_negatives": eval_negatives,
            "kind": kind if eval_negatives else "", "pool": pool if eval_negatives else "",
            "redraw": bool(redraw) and bool(eval_negatives),
            "file_sha256": file_sha256(Path(file)) if file is not None and eval_negatives else "",
            "temporal_cut": list(check_cut(temporal_cut)) if protocol == "temporal" else None}


def load_split(table: Table, cache_dir: str | Path, protocol: str = "paper", seed: int = 1234,
               eval_negatives: int = 0, eval_negatives_kind: str = "uniform", short_users: str = "train",
               eval_negatives_pool: str = "sequence", eval_negatives_redraw: bool = False,
               eval_negatives_file: Path | None = None, temporal_cut: tuple[float, float] = TEMPORAL_CUT) -> Split:
    """make_split, cached as .npz next to the table (keyed by the table's hash and the split settings, the
    negatives file by its sha256; a table holds users too short for the protocol only under
    short_users="train", so the key needs no more)."""
    check_negative_settings(eval_negatives, eval_negatives_kind, eval_negatives_pool, eval_negatives_redraw,
                            eval_negatives_file)
    settings = split_settings(protocol, seed, eval_negatives, eval_negatives_kind, eval_negatives_pool,
                              eval_negatives_redraw, eval_negatives_file, temporal_cut)
    key = hashlib.sha256(f"{table.content_hash}|{json.dumps(settings, sort_keys=True)}|{SPLIT_VERSION}".encode()
                         ).hexdigest()[:16]
    path = under(cache_dir, Path(cache_dir) / f"split_{table.name}_{key}.npz", "split cache")
    split = None
    if path.exists() and table.content_hash:
        from datasets.corrupt import READ_ERRORS, move_aside
        try:
            split = read_split(path, table, settings)
        except READ_ERRORS as e:
            move_aside(path, e, f"dataset {table.name}: split cache")
    if split is None:
        split = make_split(table, protocol, seed, eval_negatives, eval_negatives_kind, short_users,
                           eval_negatives_pool, eval_negatives_redraw, eval_negatives_file, temporal_cut)
        if split.eval_negs_file_sha256 and split.eval_negs_file_sha256 != settings["file_sha256"]:
            raise ValueError(f"protocol.eval_negatives_file={eval_negatives_file} changed while it was read")
        if table.content_hash:
            _save_split(split, path, settings)
    log_short_users(table, split)
    return split


def _save_split(split: Split, path: Path, settings: dict) -> None:
    import io

    arrays = {k: v for k, v in {"neg": split.neg, "train_end": split.train_end, "valid_pos": split.valid_pos,
                                 "test_pos": split.test_pos, "eval_negs": split.eval_negs,
                                 "cut_times": None if split.cut_times is None else np.asarray(split.cut_times)
                                 }.items() if v is not None}
    buf = io.BytesIO()
    np.savez(buf, settings=np.array(json.dumps(settings, sort_keys=True)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_split(path: Path, table: Table, settings: dict) -> Split:
    """The split cached at `path` for `table` and `settings` (split_settings); raises one of datasets/corrupt.py
    READ_ERRORS when the file is damaged (a zip member's CRC-32 catches flipped bits), was made with other
    settings, or its arrays do not fit the table."""
    with np.load(path, allow_pickle=False) as z:
        stored = json.loads(str(z["settings"])) if "settings" in z.files else None
        arrays = {k: z[k] for k in z.files if k != "settings"}
    if stored != json.loads(json.dumps(settings, sort_keys=True)):
        raise ValueError(f"split cache made with settings {stored}, expected {settings}")
    n = settings["eval_negatives"]
    cut = arrays.get("cut_times")
    split = Split(protocol=settings["protocol"], seed=settings["seed"], neg=arrays["neg"],
                  train_end=arrays["train_end"], valid_pos=arrays.get("valid_pos"), test_pos=arrays["test_pos"],
                  eval_negs=arrays.get("eval_negs"), eval_negs_kind=settings["kind"], eval_negs_pool=settings["pool"],
                  eval_negs_redraw=settings["redraw"], eval_negs_file_sha256=settings["file_sha256"],
                  cut_times=None if cut is None else (int(cut[0]), int(cut[1])))
    n_users = table.n_users
    if (len(split.neg) != table.n_interactions or len(split.train_end) != n_users or len(split.test_pos) != n_users
            or (split.valid_pos is None) != (split.protocol == "paper")
            or (split.eval_negs is None) != (not n)
            or (split.eval_negs is not None and split.eval_negs.shape != (n_users, n))
            or (split.cut_times is None) != (split.protocol != "temporal")
            or (split.valid_pos is not None and len(split.valid_pos) != n_users)):
        raise ValueError(f"split arrays do not fit the table ({n_users} users, {table.n_interactions} interactions)"
                         f" and settings {settings}")
    return split
