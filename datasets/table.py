"""Stage 2: raw interactions -> re-mapped, time-sorted table in CSR form, cached by content hash.

Exactly as the reference (`utils/2_remap_id.py` of jinze1994/ATRank): items, categories and users are re-mapped
to 0..n-1 by the sorted order of their raw keys (three independent maps); meta is kept only for reviewed items;
reviews are stably sorted by (user, time), so same-time reviews keep the raw file's order.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datasets.atomic import atomic_path, atomic_write_bytes
from datasets.cleaning import clean_reviews
from datasets.names import under
from datasets.raw_types import RawData

log = logging.getLogger(__name__)

TABLE_VERSION = "2"  # bump when this module's output changes, to invalidate caches
UNKNOWN_CATEGORY = "<unknown>"
TABLE_SETTINGS = ("min_user_interactions", "k_core", "duplicates")  # dataset options for build_table


@dataclass(frozen=True)
class Table:
    """User histories in CSR form: user u's items are items[indptr[u]:indptr[u+1]], oldest first."""

    name: str
    indptr: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int32 [n_interactions]
    times: np.ndarray  # int64 [n_interactions], unix seconds
    ratings: np.ndarray  # int8 [n_interactions], 0 = unknown, else 1..5
    item_category: np.ndarray  # int32 [n_items]
    user_keys: np.ndarray  # str [n_users], raw ids in re-mapped order (sorted)
    item_keys: np.ndarray  # str [n_items]
    category_keys: np.ndarray  # str [n_categories]
    content_hash: str
    cleaning: dict[str, int] = field(default_factory=dict)  # rows/users removed by the data policy (cleaning.py)
    behaviours: Any = None  # datasets/behaviours.Behaviours, attached after the cache (never saved with the table)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_keys)

    @property
    def n_categories(self) -> int:
        return len(self.category_keys)

    @property
    def n_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def stats(self) -> dict[str, int]:
        return {"users": self.n_users, "items": self.n_items, "categories": self.n_categories,
                "interactions": self.n_interactions}


def build_table(raw: RawData, name: str, min_user_interactions: int = 3, k_core: int = 0,
                duplicates: str = "drop") -> Table:
    """Apply the data policy (datasets/cleaning.py), re-map ids by sorted raw key and sort by (user, time);
    `content_hash` is filled in by `load_table`."""
    if len(raw.reviews) == 0:
        raise ValueError(f"dataset {name!r}: no interactions were read from {[str(f) for f in raw.files]}")
    reviews, cleaning = clean_reviews(raw.reviews, name, min_user_interactions, k_core, duplicates)
    user_raw = reviews["user"].to_numpy(dtype=str)
    item_raw = reviews["item"].to_numpy(dtype=str)
    time = reviews["time"].to_numpy(dtype=np.int64)
    rating = reviews["rating"].to_numpy(dtype=np.float32)

    item_keys, item_ids = np.unique(item_raw, return_inverse=True)
    user_keys, user_ids = np.unique(user_raw, return_inverse=True)

    meta = raw.meta[raw.meta["item"].isin(item_keys)].drop_duplicates("item", keep="last")
    cat_of_item = dict(zip(meta["item"].to_numpy(dtype=str), meta["category"].to_numpy(dtype=str)))
    n_missing = sum(1 for k in item_keys if k not in cat_of_item)
    if n_missing:
        log.warning("dataset %s: %d of %d items have no metadata; their category is %r",
                    name, n_missing, len(item_keys), UNKNOWN_CATEGORY)
    item_cat_raw = np.array([cat_of_item.get(k, UNKNOWN_CATEGORY) for k in item_keys], dtype=str)
    category_keys, item_category = np.unique(item_cat_raw, return_inverse=True)

    order = np.lexsort((time, user_ids))  # stable: ties keep raw file order
    user_sorted = user_ids[order]
    counts = np.bincount(user_sorted, minlength=len(user_keys))
    indptr = np.zeros(len(user_keys) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    ratings = np.nan_to_num(rating[order], nan=0.0).round().clip(0, 127).astype(np.int8)
    return Table(name=name, indptr=indptr, items=item_ids[order].astype(np.int32), times=time[order],
                 ratings=ratings, item_category=item_category.astype(np.int32), user_keys=user_keys,
                 item_keys=item_keys, category_keys=category_keys, content_hash="", cleaning=cleaning)


def file_sha256(path: Path, cache_dir: Path | None = None, chunk: int = 1 << 20) -> str:
    """Checksum of a file. With `cache_dir` it is remembered in a sidecar under cache_dir/sha256, so large raw
    files are hashed once; the sidecar is keyed by the file's resolved path, size, mtime, inode and ctime, so an
    in-place edit that keeps size and mtime (cp -p, rsync -t) still changes the key: ctime cannot be set back."""
    path = Path(path)
    sidecar = None if cache_dir is None else Path(cache_dir) / "sha256" / _sidecar_key(path)
    if sidecar is not None and sidecar.exists():
        return sidecar.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if sidecar is not None:
        atomic_write_bytes(sidecar, digest.encode())
    return digest


def _sidecar_key(path: Path) -> str:
    st = path.stat()
    identity = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def cache_key(name: str, files: list[Path], settings: dict, cache_dir: Path | None = None) -> str:
    """The table's content hash: input file checksums (sidecars under `cache_dir`), settings and code version."""
    payload = {"name": name, "files": sorted((Path(f).name, file_sha256(f, cache_dir)) for f in files),
               "settings": settings, "version": TABLE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_table(table: Table, path: Path) -> None:
    """Write the table as one .npz, atomically (temp name + rename): a crash never leaves a trusted cache."""
    with atomic_path(path, suffix=".tmp.npz") as tmp:  # np.savez would append .npz to any other name
        np.savez(tmp, name=np.array(table.name), indptr=table.indptr, items=table.items, times=table.times,
                 ratings=table.ratings, item_category=table.item_category, user_keys=table.user_keys,
                 item_keys=table.item_keys, category_keys=table.category_keys,
                 content_hash=np.array(table.content_hash), cleaning=np.array(json.dumps(table.cleaning)))


def read_table(path: Path) -> Table:
    """The table saved at `path`; raises one of datasets/corrupt.py READ_ERRORS when the file is damaged (the
    zip members' CRC-32 catches flipped bits, `check_table` what a CRC cannot: missing or inconsistent arrays)."""
    with np.load(path, allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files}
    fields["name"] = str(fields["name"])
    fields["content_hash"] = str(fields["content_hash"])
    fields["cleaning"] = json.loads(str(fields["cleaning"]))
    return check_table(Table(**fields))


def check_table(t: Table) -> Table:
    """Raise ValueError unless the arrays fit together (CSR offsets, lengths, id ranges)."""
    n = len(t.items)
    problems = [msg for bad, msg in [
        (t.indptr.ndim != 1 or len(t.indptr) != len(t.user_keys) + 1, "indptr length != users + 1"),
        (len(t.indptr) and (t.indptr[0] != 0 or t.indptr[-1] != n), f"indptr does not span the {n} interactions"),
        (bool(np.any(np.diff(t.indptr) < 0)), "indptr decreases"),
        (len(t.times) != n or len(t.ratings) != n, "times/ratings length != interactions"),
        (len(t.item_category) != len(t.item_keys), "item_category length != items"),
        (n and (t.items.min() < 0 or t.items.max() >= len(t.item_keys)), "item id out of range"),
        (len(t.item_category) and (t.item_category.min() < 0 or t.item_category.max() >= len(t.category_keys)),
         "category id out of range")] if bad]
    if problems:
        raise ValueError("inconsistent table arrays: " + "; ".join(problems))
    return t


def read_cached_table(path: Path, name: str, key: str) -> Table | None:
    """The cached table at `path`, or None on a miss; a damaged cache is named, moved aside and counts as a miss."""
    from datasets.corrupt import READ_ERRORS, move_aside

    if not path.exists():
        return None
    try:
        table = read_table(path)
        if table.content_hash != key:
            raise ValueError(f"content_hash {table.content_hash!r}, expected {key!r} (from the file name)")
    except READ_ERRORS as e:
        move_aside(path, e, f"dataset {name}: table cache")
        return None
    log.info("dataset %s: cache hit %s (parsing skipped)", name, path.name)
    return table


def load_table(name: str, files: list[Path], settings: dict, parse: Callable[[], RawData],
               cache_dir: Path, expected: dict[str, int] | None = None) -> Table:
    """Return the cached table for these input files + settings, or parse, build and cache it.

    `files` are hashed into the key before parsing; `parse` is only called on a cache miss. A file lock guards the
    build so concurrent jobs build a dataset once.
    """
    from filelock import FileLock

    key = cache_key(name, files, settings, cache_dir)
    path = under(cache_dir, Path(cache_dir) / f"table_{name}_{key}.npz", "table cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        table = read_cached_table(path, name, key)
        if table is None:
            log.info("dataset %s: cache miss, parsing %d file(s)", name, len(files))
            raw = parse()
            table = build_table(raw, name, **{k: v for k, v in settings.items() if k in TABLE_SETTINGS})
            table = Table(**{**table.__dict__, "content_hash": key})
            save_table(table, path)
            expected = expected if expected is not None else raw.expected
            for k, v in raw.notes.items():
                log.warning("dataset %s: %s = %d", name, k, v)
    check_stats(table, expected)
    return table


def check_stats(table: Table, expected: dict[str, int] | None) -> list[str]:
    """Log the statistics; warn loudly for each one that differs from the reference."""
    stats = table.stats()
    log.info("dataset %s: %s", table.name, ", ".join(f"{k}={v:,}" for k, v in stats.items()))
    mismatches = []
    for k, v in (expected or {}).items():
        if stats.get(k) != v:
            mismatches.append(f"{k}: got {stats.get(k):,}, reference {v:,}")
    if mismatches:
        log.warning("!!! dataset %s differs from the reference statistics: %s", table.name, "; ".join(mismatches))
    return mismatches
