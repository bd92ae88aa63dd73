"""Writing RawData as raw Amazon 2014 files (reviews: strict JSON lines; meta: one Python dict literal per line).

Also the ASIN-like and reviewerID-like keys that the generator (datasets/synthetic.py) and the extra meta rows
share. The bytes written here are part of what synthetic.SYNTHETIC_VERSION versions (it keys the cached sample):
a change to them must bump it.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from datasets.atomic import atomic_path
from datasets.raw_types import RawData

_DAY = 86_400
_ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
_WORDS = ("the", "a", "and", "it", "is", "this", "for", "with", "great", "good", "works", "price", "quality",
          "cable", "sound", "battery", "case", "easy", "use", "would", "recommend", "product", "fits", "well",
          "after", "months", "charger", "screen", "bought", "one", "two", "very", "not", "but", "my", "phone",
          "camera", "light", "small", "fast", "shipping", "love", "problem", "returned", "still", "better")


def random_keys(n: int, n_chars: int, prefix: str, rng: np.random.Generator) -> np.ndarray:
    """n distinct sorted keys: prefix + n_chars base-36 characters (like ASINs 'B00...' and reviewerIDs 'A...')."""
    space = 36 ** n_chars
    values = np.unique(rng.integers(0, space, n, dtype=np.int64))
    while len(values) < n:
        values = np.unique(np.concatenate([values, rng.integers(0, space, n - len(values), dtype=np.int64)]))
    powers = 36 ** np.arange(n_chars - 1, -1, -1, dtype=np.int64)
    chars = _ALPHABET[(values[:, None] // powers) % 36]  # [n, n_chars], most significant first
    body = np.ascontiguousarray(chars).view(f"S{n_chars}").ravel().astype(str)
    return np.char.add(prefix, body)


def write_amazon_raw(raw: RawData, directory: Path, category_name: str, *, extra_meta_rows: int = 0,
                     review_text_chars: int = 550, seed: int = 0, compresslevel: int = 6) -> list[Path]:
    """Write `raw` as reviews_<category_name>_5.json.gz + meta_<category_name>.json.gz in `directory`.

    Rows keep RawData order. Reviews carry the real extra fields (reviewerName, helpful, reviewText of
    ~review_text_chars characters, summary, reviewTime) so that parsing costs what it costs on the real file.
    Meta has every item of raw.meta plus `extra_meta_rows` items nobody reviewed (the real meta_Electronics has
    ~498k rows for 63k reviewed items). Output is byte-for-byte deterministic (gzip mtime 0, no file name) and
    each file is written to a temporary name and renamed when complete.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = " ".join(rng.choice(_WORDS, 400_000)) + " "  # reviewText / summary / title are slices of it
    reviews_path = directory / f"reviews_{category_name}_5.json.gz"
    meta_path = directory / f"meta_{category_name}.json.gz"
    root = category_name.replace("_", " ")
    _write_gzip(reviews_path, _review_lines(raw.reviews, pool, review_text_chars, rng), compresslevel)
    _write_gzip(meta_path, _meta_lines(raw.meta, root, pool, extra_meta_rows, rng), compresslevel)
    return [reviews_path, meta_path]


def _review_lines(reviews: pd.DataFrame, pool: str, text_chars: int, rng: np.random.Generator
                 ) -> Iterator[str]:
    n = len(reviews)
    users = reviews["user"].to_numpy(dtype=object)
    items = reviews["item"].to_numpy(dtype=object)
    times = reviews["time"].to_numpy(dtype=np.int64)
    days = times // _DAY
    times = times.tolist()
    ratings = np.nan_to_num(reviews["rating"].to_numpy(dtype=np.float64), nan=5.0).tolist()
    text_len = np.maximum(20, rng.lognormal(np.log(max(text_chars, 30)) - 0.5, 1.0, n)).astype(np.int64)
    text_len = np.minimum(text_len, len(pool) // 2)
    text_at, text_len = _whole_words(pool, rng.integers(0, len(pool) - text_len), text_len)
    summary_at, summary_len = _whole_words(pool, rng.integers(0, len(pool) - 40, n), rng.integers(8, 40, n))
    helpful = rng.geometric(0.5, (n, 2)) - 1
    helpful[:, 1] += helpful[:, 0]
    helpful = helpful.tolist()
    named = rng.random(n) > 0.01  # a few real reviews lack reviewerName
    first_names = ("Amazon Customer", "John", "Mary", "Chris", "Pat", "Alex", "Sam", "Kim", "Lee", "Dana")
    name_pick = rng.integers(0, len(first_names), n)
    uniq_days, day_idx = np.unique(days, return_inverse=True)
    review_time = [_review_time(int(d)) for d in uniq_days]  # "MM D, YYYY" like the real field
    # Python lists: per-element indexing in the loop is several times faster than on numpy arrays.
    text_at, text_len, summary_at, summary_len = (a.tolist() for a in (text_at, text_len, summary_at, summary_len))
    named, name_pick, day_idx = named.tolist(), name_pick.tolist(), day_idx.tolist()
    for k in range(n):
        name = f'"reviewerName": "{first_names[name_pick[k]]}", ' if named[k] else ""
        text = pool[text_at[k]:text_at[k] + text_len[k]].strip()
        summary = pool[summary_at[k]:summary_at[k] + summary_len[k]].strip().capitalize()
        yield (f'{{"reviewerID": "{users[k]}", "asin": "{items[k]}", {name}"helpful": [{helpful[k][0]}, '
               f'{helpful[k][1]}], "reviewText": "{text}", "overall": {ratings[k]:.1f}, "summary": "{summary}", '
               f'"unixReviewTime": {times[k]}, "reviewTime": "{review_time[day_idx[k]]}"}}\n')


def _whole_words(pool: str, at: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move slice starts and ends of `pool` to word starts, so texts hold whole words."""
    starts = np.flatnonzero(np.frombuffer(pool.encode("ascii"), dtype=np.uint8) == ord(" ")) + 1

    def snap(pos: np.ndarray) -> np.ndarray:
        return starts[np.minimum(np.searchsorted(starts, pos), len(starts) - 1)]

    begin = snap(at)
    return begin, np.maximum(snap(begin + length) - begin, 1)


def _review_time(day: int) -> str:
    d = np.datetime64(day, "D").item()
    return f"{d.month:02d} {d.day}, {d.year}"


def _meta_lines(meta: pd.DataFrame, root: str, pool: str, extra_rows: int, rng: np.random.Generator
               ) -> Iterator[str]:
    items = meta["item"].to_numpy(dtype=str)
    cats = meta["category"].to_numpy(dtype=str)
    if extra_rows:
        extra = random_keys(extra_rows + len(items), 9, "B", rng)
        extra = extra[~np.isin(extra, items)][:extra_rows]
        extra_cats = cats[rng.integers(0, len(cats), len(extra))] if len(cats) else np.full(len(extra), "Other")
        items, cats = np.concatenate([items, extra]), np.concatenate([cats, extra_cats])
        order = np.argsort(items, kind="stable")  # the real meta file is in asin order
        items, cats = items[order], cats[order]
    n = len(items)
    related_pool = [repr(a) for a in items[rng.integers(0, max(n, 1), 4096)].tolist()] if n else []
    n_related = rng.integers(0, 40, n)
    related_at = rng.integers(0, 4096 - 40, n)
    price = np.round(rng.lognormal(3.0, 1.0, n), 2).tolist()  # Python numbers: repr of numpy ones is np.float64(..)
    rank = rng.integers(1, 2_000_000, n).tolist()
    title_at, title_len = _whole_words(pool, rng.integers(0, len(pool) - 80, n), rng.integers(15, 80, n))
    decoy = rng.random(n) < 0.3  # some items list several category paths: only categories[-1][-1] counts
    mid = ("Accessories & Supplies", "Computers & Accessories", "Camera & Photo", "Portable Audio & Video")
    mid_pick = rng.integers(0, len(mid), n)
    items, cats = items.tolist(), cats.tolist()
    n_related, related_at, title_at, title_len, decoy, mid_pick = (
        a.tolist() for a in (n_related, related_at, title_at, title_len, decoy, mid_pick))
    for k in range(n):
        path = [root, mid[mid_pick[k]], cats[k]]
        categories = [[root, "Brands", "Other"], path] if decoy[k] else [path]
        also = ", ".join(related_pool[related_at[k]:related_at[k] + n_related[k]])
        title = pool[title_at[k]:title_at[k] + title_len[k]].strip().title()
        yield (f"{{'asin': {items[k]!r}, 'title': {title!r}, 'price': {price[k]}, "
               f"'imUrl': 'http://ecx.images-amazon.com/images/I/{items[k]}.jpg', "
               f"'related': {{'also_bought': [{also}]}}, 'salesRank': {{{root!r}: {rank[k]}}}, "
               f"'categories': {categories!r}}}\n")


def _write_gzip(path: Path, lines: Iterable[str], compresslevel: int) -> None:
    """Gzip `lines` into `path` via a temporary file renamed at the end: a crash never leaves a partial file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f, \
            gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=compresslevel) as gz:
        buf: list[str] = []
        for line in lines:
            buf.append(line)
            if len(buf) >= 20_000:
                gz.write("".join(buf).encode("utf-8"))
                buf.clear()
        gz.write("".join(buf).encode("utf-8"))
