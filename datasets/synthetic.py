"""Seeded, vectorised generator of Amazon-like review data, and the embedded sample written as raw Amazon files.

One generator serves two uses:
- the small embedded "sample" dataset (`datasets/raw.py`, loader kind "sample"), and
- an Electronics-shaped dataset (`electronics_like()`: 192,403 users, 63,001 items, 801 categories,
  1,689,188 interactions) for the parsing / pipeline benchmarks (runners/bench_data.py).

Structure of the generated data (what a model can learn from it):
- items belong to categories of Zipf-like sizes; item popularity is long-tailed ((rank + c) ** -exponent);
- history lengths are min_length + a heavy-tailed (Lomax) draw: median ~6, long tail up to max_length;
- each user has two favourite categories (a non-sequential signal that BPR can pick up);
- PLANTED SEQUENTIAL DEPENDENCE: each next item is, with probability `p_successor`, one of the previous item's
  `n_successors` fixed successors (same category), with probability `p_same_category` a popular item of the
  previous item's category, with `p_taste` an item of one of the user's favourite categories, else a globally
  popular item; so a sequence model beats a non-sequential one;
- no item repeats within a user, every user has >= min_length items and every item >= min_item_count reviews
  (a 5-core, like the real files);
- whole-day timestamps (like unixReviewTime) with heavy-tailed day gaps, some same-day reviews, skewed to recent
  years, within the real Amazon 2014 files' span (_FIRST_DAY.._LAST_DAY).

The raw-file format itself is written by datasets/amazon_writer.py (write_amazon_raw is re-exported here).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.amazon_writer import random_keys, write_amazon_raw
from datasets.raw_types import RawData

SYNTHETIC_VERSION = "2"  # bump when generate() or write_amazon_raw() output changes (it keys the sample cache)

ELECTRONICS_SHAPE = {"n_users": 192_403, "n_items": 63_001, "n_categories": 801, "n_interactions": 1_689_188}
REAL_META_ELECTRONICS_ROWS = 498_196  # lines of the real meta_Electronics.json.gz (most items are never reviewed)

_DAY = 86_400
_FIRST_DAY = 10_743  # days since the unix epoch: the first and last review days of the Amazon 2014 files
_LAST_DAY = 16_274
_RATING_P = np.array([0.07, 0.06, 0.10, 0.22, 0.55])  # overall 1..5, roughly the 5-core shares
_CATEGORY_WORDS = ("Cables", "Headphones", "Camera Bags", "Memory Cards", "Chargers", "Cases", "Speakers",
                   "Kids' Electronics", "Car & Vehicle Electronics", "Batteries", "Keyboards", "Mounts")


def generate(n_users: int = 3000, n_items: int = 1500, n_categories: int = 40, seed: int = 0, *,
             n_interactions: int | None = None, mean_length: float = 8.78, min_length: int = 5,
             max_length: int = 400, min_item_count: int = 5, p_successor: float = 0.5,
             p_same_category: float = 0.2, p_taste: float = 0.15, n_successors: int = 4,
             popularity_exponent: float = 1.0, same_day_rate: float = 0.1) -> RawData:
    """Generate an Amazon-like 5-core review set; reviews come in raw-file order (by asin, then time).

    `n_interactions` defaults to round(n_users * mean_length) and is hit exactly. Every item and every category
    occurs, so the stats (RawData.expected) are exactly n_users / n_items / n_categories / n_interactions.
    """
    n_interactions = int(round(n_users * mean_length)) if n_interactions is None else int(n_interactions)
    max_length = min(max_length, n_items // 2)  # leaves room to draw without repeats
    if not 1 <= n_categories <= n_items:
        raise ValueError(f"need 1 <= n_categories <= n_items, got {n_categories} and {n_items}")
    if not n_users * min_length <= n_interactions <= n_users * max_length:
        raise ValueError(f"n_interactions={n_interactions} is not within [{n_users * min_length}, "
                         f"{n_users * max_length}] (n_users x min_length, n_users x max_length)")
    if n_interactions < n_items * min_item_count:
        raise ValueError(f"n_interactions={n_interactions} < n_items x min_item_count = {n_items * min_item_count}")
    if p_successor + p_same_category + p_taste > 1:
        raise ValueError("p_successor + p_same_category + p_taste must be <= 1")
    rng = np.random.default_rng(seed)

    # Categories of Zipf-like sizes; the first n_categories draws make sure every category has an item.
    cat_w = 1.0 / np.arange(1, n_categories + 1) ** 0.8
    item_cat = np.concatenate([np.arange(n_categories),
                               rng.choice(n_categories, n_items - n_categories, p=cat_w / cat_w.sum())])
    rng.shuffle(item_cat)
    popularity = (rng.permutation(n_items) + max(1.0, n_items / 1000)) ** -popularity_exponent
    sampler = _Sampler(item_cat, popularity, n_categories)
    # Successors: same category, drawn on a flattened popularity so that they are specific to their item
    # (with the full skew most items would share their category's few hits as successors).
    flat = _Sampler(item_cat, np.sqrt(popularity), n_categories)
    successors = flat.in_category(np.repeat(item_cat, n_successors), rng).reshape(n_items, n_successors)
    cat_pop = np.bincount(item_cat, weights=popularity, minlength=n_categories)
    favourites = rng.choice(n_categories, (n_users, 2), p=cat_pop / cat_pop.sum())

    lengths = _history_lengths(n_users, n_interactions, min_length, max_length, mean_length, rng)
    items, user_of_row, offsets = _sequences(lengths, successors, favourites, sampler, rng, p_successor,
                                             p_same_category, p_taste)
    _fill_min_item_count(items, user_of_row, n_items, min_item_count, rng)
    days = _days(offsets, same_day_rate, rng)
    ratings = rng.choice(np.arange(1, 6), len(items), p=_RATING_P).astype(np.float32)

    # Raw keys: sorted ASIN-like / reviewerID-like strings, dealt out at random so key order says nothing.
    item_key_of = rng.permutation(n_items)  # item -> rank of its key
    user_key_of = rng.permutation(n_users)
    item_keys = random_keys(n_items, 9, "B", rng)
    user_keys = random_keys(n_users, 12, "A", rng)
    category_names = np.array([f"{_CATEGORY_WORDS[c % len(_CATEGORY_WORDS)]} {c:03d}" for c in range(n_categories)])

    order = np.lexsort((user_key_of[user_of_row], days, item_key_of[items]))  # like the real file: by asin
    reviews = pd.DataFrame({
        "user": pd.array(user_keys[user_key_of[user_of_row[order]]], dtype="str"),
        "item": pd.array(item_keys[item_key_of[items[order]]], dtype="str"),
        "time": days[order] * _DAY,
        "rating": ratings[order],
    })
    by_key = np.argsort(item_key_of)  # items in key order
    meta = pd.DataFrame({"item": pd.array(item_keys[item_key_of[by_key]], dtype="str"),
                         "category": pd.array(category_names[item_cat[by_key]], dtype="str")})
    expected = {"users": n_users, "items": n_items, "categories": n_categories, "interactions": len(items)}
    return RawData(reviews=reviews, meta=meta, expected=expected)


def electronics_like(seed: int = 0, scale: float = 1.0) -> RawData:
    """The Electronics-shaped benchmark set; `scale` < 1 shrinks users/items/categories/interactions together."""
    shape = {k: max(1, int(round(v * scale))) for k, v in ELECTRONICS_SHAPE.items()}
    shape["n_categories"] = max(shape["n_categories"], 10)
    return generate(seed=seed, **shape)


class _Sampler:
    """Draw items by popularity, globally or within given categories (inverse-CDF, vectorised)."""

    def __init__(self, item_cat: np.ndarray, popularity: np.ndarray, n_categories: int):
        self.n_items = len(item_cat)
        self.global_cdf = np.cumsum(popularity)
        self.by_cat = np.argsort(item_cat, kind="stable")  # items grouped by category
        self.cat_cdf = np.cumsum(popularity[self.by_cat])
        bounds = np.concatenate([[0], np.cumsum(np.bincount(item_cat, minlength=n_categories))])
        self.start, self.end = bounds[:-1], bounds[1:]
        self.cdf_at = np.concatenate([[0.0], self.cat_cdf])  # cdf_at[k] = popularity mass before position k

    def popular(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x = rng.random(n) * self.global_cdf[-1]
        return np.minimum(np.searchsorted(self.global_cdf, x, side="right"), self.n_items - 1).astype(np.int32)

    def in_category(self, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.cdf_at[self.start[cats]], self.cdf_at[self.end[cats]]
        pos = np.searchsorted(self.cat_cdf, lo + rng.random(len(cats)) * (hi - lo), side="right")
        return self.by_cat[np.clip(pos, self.start[cats], self.end[cats] - 1)].astype(np.int32)


def _history_lengths(n_users: int, total: int, min_length: int, max_length: int, mean_length: float,
                     rng: np.random.Generator) -> np.ndarray:
    """min_length + floor(Lomax(2)) (median ~6 at the Electronics mean), clipped, then nudged to sum to `total`."""
    scale = max(mean_length - min_length + 0.5, 0.5)
    lengths = np.minimum(min_length + np.floor(rng.pareto(2.0, n_users) * scale).astype(np.int64), max_length)
    while (diff := total - int(lengths.sum())) != 0:
        # Add to (or take from) random users, in proportion to their length so the tail keeps its shape.
        room = (lengths < max_length) if diff > 0 else (lengths > min_length)
        w = lengths * room
        picks = rng.choice(n_users, min(abs(diff), int(room.sum())), p=w / w.sum())
        np.add.at(lengths, picks, 1 if diff > 0 else -1)
        np.clip(lengths, min_length, max_length, out=lengths)
    return lengths


def _sequences(lengths: np.ndarray, successors: np.ndarray, favourites: np.ndarray, sampler: _Sampler,
               rng: np.random.Generator, p_successor: float, p_same_category: float,
               p_taste: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw all histories step by step, vectorised over users; returns (items, user of row, offsets), user-major.

    Users are processed longest first, so the users still active at step t are a prefix and column t of the
    ragged history matrix is one array.
    """
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    fav = favourites[order]
    cat_of = _category_of(sampler)
    cols: list[np.ndarray] = []
    for t in range(int(sorted_len[0])):
        n = int(np.searchsorted(-sorted_len, -t, side="left"))  # users with length > t
        r = rng.random(n)
        cand = np.empty(n, dtype=np.int32)
        if t == 0:
            taste = r < 0.5
            cand[taste] = sampler.in_category(fav[:n][taste, rng.integers(0, 2, int(taste.sum()))], rng)
            cand[~taste] = sampler.popular(int((~taste).sum()), rng)
        else:
            prev = cols[t - 1][:n]
            succ = r < p_successor
            same = (r >= p_successor) & (r < p_successor + p_same_category)
            taste = (r >= p_successor + p_same_category) & (r < p_successor + p_same_category + p_taste)
            pop = ~(succ | same | taste)
            cand[succ] = successors[prev[succ], rng.integers(0, successors.shape[1], int(succ.sum()))]
            cand[same] = sampler.in_category(cat_of[prev[same]], rng)
            cand[taste] = sampler.in_category(fav[:n][taste, rng.integers(0, 2, int(taste.sum()))], rng)
            cand[pop] = sampler.popular(int(pop.sum()), rng)
            _redraw_repeats(cand, cols, t, sampler, cat_of[prev], rng)
        cols.append(cand)

    offsets = np.concatenate([[0], np.cumsum(sorted_len)])
    items = np.empty(int(offsets[-1]), dtype=np.int32)
    for t, col in enumerate(cols):
        items[offsets[:len(col)] + t] = col
    user_of_row = np.repeat(order, sorted_len)
    return items, user_of_row, offsets


def _category_of(sampler: _Sampler) -> np.ndarray:
    cat_of = np.empty(sampler.n_items, dtype=np.int64)
    cat_of[sampler.by_cat] = np.repeat(np.arange(len(sampler.start)), sampler.end - sampler.start)
    return cat_of


def _redraw_repeats(cand: np.ndarray, cols: list[np.ndarray], t: int, sampler: _Sampler, prev_cat: np.ndarray,
                    rng: np.random.Generator) -> None:
    """Redraw candidates that repeat an item of the same user's history: from the previous item's category first
    (keeps the sequential signal), then by global popularity, then uniformly."""
    n = len(cand)
    hit = np.zeros(n, dtype=bool)
    for s in range(t):
        hit |= cols[s][:n] == cand
    todo = np.flatnonzero(hit)
    for attempt in range(100):
        if len(todo) == 0:
            return
        if attempt < 3:
            cand[todo] = sampler.in_category(prev_cat[todo], rng)
        elif attempt < 6:
            cand[todo] = sampler.popular(len(todo), rng)
        else:
            cand[todo] = rng.integers(0, sampler.n_items, len(todo))
        hit = np.zeros(len(todo), dtype=bool)
        for s in range(t):
            hit |= cols[s][todo] == cand[todo]
        todo = todo[hit]
    raise RuntimeError("could not draw non-repeating items; lower max_length or raise n_items")


def _fill_min_item_count(items: np.ndarray, user_of_row: np.ndarray, n_items: int, min_count: int,
                         rng: np.random.Generator) -> None:
    """Make every item occur >= min_count times (a 5-core) by overwriting surplus rows of popular items."""
    counts = np.bincount(items, minlength=n_items)
    need = np.maximum(min_count - counts, 0)
    n_need = int(need.sum())
    if n_need == 0:
        return
    surplus = np.maximum(counts - min_count, 0)
    perm = rng.permutation(len(items))
    it = items[perm]
    by_item = np.argsort(it, kind="stable")
    rank = np.empty(len(it), dtype=np.int64)
    rank[by_item] = np.arange(len(it)) - np.searchsorted(it[by_item], it[by_item], side="left")
    donors = perm[rank < surplus[it]][:n_need]  # random rows, at most `surplus` per item
    items[donors] = rng.permutation(np.repeat(np.arange(n_items, dtype=np.int32), need))
    for _ in range(1000):  # a newcomer may repeat an item of its user: swap it with another donor row
        code = user_of_row[donors].astype(np.int64) * n_items + items[donors]
        all_codes = user_of_row.astype(np.int64) * n_items + items
        uniq, cnt = np.unique(all_codes, return_counts=True)
        bad = np.flatnonzero(np.isin(code, uniq[cnt > 1]))
        if len(bad) == 0:
            return
        other = rng.integers(0, len(donors), len(bad))
        a, b = donors[bad], donors[other]
        items[a], items[b] = items[b].copy(), items[a].copy()
    raise RuntimeError("could not place rare items without repeats")


def _days(offsets: np.ndarray, same_day_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Whole days per row (user-major rows): heavy-tailed gaps (median ~10 days), some same-day reviews."""
    total = int(offsets[-1])
    n_users = len(offsets) - 1
    lengths = np.diff(offsets)
    gaps = np.where(rng.random(total) < same_day_rate, 0.0, 1.0 + np.floor(rng.lognormal(2.3, 1.3, total)))
    gaps[offsets[:-1]] = 0.0
    rel = np.cumsum(gaps)
    rel -= np.repeat(rel[offsets[:-1]], lengths)
    span = rel[offsets[1:] - 1]
    window = _LAST_DAY - _FIRST_DAY
    squeeze = np.minimum(1.0, window / np.maximum(span, 1.0))  # the rare history longer than the window
    rel = np.floor(rel * np.repeat(squeeze, lengths))
    span = span * squeeze
    start = _FIRST_DAY + np.floor(rng.beta(2.5, 1.0, n_users) * (window - span))  # skewed to recent years
    return (np.repeat(start, lengths) + rel).astype(np.int64)


def write_sample(directory: Path, n_users: int, n_items: int, n_categories: int, seed: int) -> list[Path]:
    """Generate the embedded sample and write it as raw files into `directory`, which appears complete or not at
    all (built in a temporary sibling directory, then renamed). Reused when it already exists."""
    directory = Path(directory)
    files = [directory / "reviews_Sample_5.json.gz", directory / "meta_Sample.json.gz"]
    if all(f.is_file() for f in files):
        return files
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        raw = generate(n_users, n_items, n_categories, seed)
        write_amazon_raw(raw, tmp, "Sample", review_text_chars=150, seed=seed)
        try:
            os.replace(tmp, directory)
        except OSError:  # another process finished first (non-empty target): keep theirs
            if not all(f.is_file() for f in files):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


__all__ = ["ELECTRONICS_SHAPE", "REAL_META_ELECTRONICS_ROWS", "SYNTHETIC_VERSION", "electronics_like", "generate",
           "write_amazon_raw", "write_sample"]
