"""A generated heterogeneous-behaviour dataset shaped like the input of ATRank's official multi/ model: items with
shop, category and brand and an action type, queries, and coupons with shop and category.

The planted cross-group signal: before each purchase the user issues a query about the purchase's category (with
probability `query_signal`, else a random query; the query's category is never given as a feature, so a model must
learn it from the query id) and often receives a coupon of that category (`coupon_signal`; the coupon's category
is a feature, shared with the items'). The item history alone carries only a weaker signal: the next purchase
stays in the previous one's category with probability `stay`. So a model that sees the query and coupon groups
can know the next purchase's category; one that sees items only cannot.

Times: one purchase every 1-30 days; the query one hour and the coupon two hours before the purchase (strictly
before it, so each is in that purchase's history). Loader kind "hetero_sample" (datasets/raw.py); its groups are
attached by datasets/behaviour_sources.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from datasets.atomic import atomic_write_bytes
from datasets.behaviours import RawGroup
from datasets.raw_types import RawData

HETERO_VERSION = "1"  # bump when the generator's output changes (it is in the table cache key)
_START = 1_300_000_000  # unix seconds (a day in the Amazon files' span)


@dataclass(frozen=True)
class HeteroSample:
    raw: RawData
    item_features: dict[str, dict[str, str]]  # shop, brand: item key -> value key
    groups: tuple[RawGroup, ...]  # query, coupon


def prepare_hetero_sample(data_root: Path, cache_dir: Path, n_users: int = 3000, n_items: int = 1200,
                          n_categories: int = 24, seed: int = 0) -> tuple[list[Path], Callable[[], RawData]]:
    """The input "file" is a small JSON of these options and HETERO_VERSION under cache_dir, so the table cache key
    (file checksums, datasets/table.py) changes with the generator's version."""
    spec = {"n_users": n_users, "n_items": n_items, "n_categories": n_categories, "seed": seed,
            "version": HETERO_VERSION}
    path = Path(cache_dir) / "hetero_sample" / f"spec_{n_users}_{n_items}_{n_categories}_{seed}.json"
    if not path.exists():
        atomic_write_bytes(path, json.dumps(spec, sort_keys=True).encode())
    return [path], lambda: generate_hetero(n_users, n_items, n_categories, seed).raw


@lru_cache(maxsize=4)
def generate_hetero(n_users: int = 3000, n_items: int = 1200, n_categories: int = 24, seed: int = 0,
                    min_len: int = 6, max_len: int = 20, stay: float = 0.3, query_signal: float = 0.8,
                    coupon_signal: float = 0.6) -> HeteroSample:
    rng = np.random.default_rng(seed)
    n_shops, n_brands = max(n_items // 20, 2), max(n_items // 30, 2)
    queries_per_cat, coupons_per_cat = 8, 12
    item_cat = np.arange(n_items) % n_categories  # every category has items
    rng.shuffle(item_cat)
    item_shop, item_brand = rng.integers(0, n_shops, n_items), rng.integers(0, n_brands, n_items)
    popularity = rng.lognormal(0.0, 0.5, n_items)  # mild: popularity alone gives a low AUC
    by_cat = [np.flatnonzero(item_cat == c) for c in range(n_categories)]
    weights = [popularity[ix] / popularity[ix].sum() for ix in by_cat]
    query_cat = np.repeat(np.arange(n_categories), queries_per_cat)
    coupon_cat = np.repeat(np.arange(n_categories), coupons_per_cat)
    coupon_shop = rng.integers(0, n_shops, len(coupon_cat))

    lengths = rng.integers(min_len, max_len + 1, n_users)
    rows, queries, coupons = [], [], []
    for u in range(n_users):
        t = _START + int(rng.integers(0, 400)) * 86400
        cat = int(rng.integers(n_categories))
        for _ in range(lengths[u]):
            cat = cat if rng.random() < stay else int(rng.integers(n_categories))
            item = int(rng.choice(by_cat[cat], p=weights[cat]))
            q = rng.integers(queries_per_cat) + cat * queries_per_cat if rng.random() < query_signal \
                else rng.integers(len(query_cat))
            queries.append((u, int(q), t - 3600))
            if rng.random() < coupon_signal:
                coupons.append((u, int(rng.integers(coupons_per_cat) + cat * coupons_per_cat), t - 7200))
            rows.append((u, item, t, int(rng.integers(1, 6))))
            t += int(rng.integers(1, 31)) * 86400
    return _frames(rows, queries, coupons, item_cat, item_shop, item_brand, coupon_cat, coupon_shop)


def _frames(rows, queries, coupons, item_cat, item_shop, item_brand, coupon_cat, coupon_shop) -> HeteroSample:
    key = lambda prefix, ids: [f"{prefix}{i:06d}" for i in ids]  # noqa: E731 (zero-padded: sorted = numeric)
    r = np.array(rows, dtype=np.int64)
    reviews = pd.DataFrame({"user": key("u", r[:, 0]), "item": key("i", r[:, 1]), "time": r[:, 2],
                            "rating": r[:, 3].astype(np.float32)})
    items = key("i", range(len(item_cat)))
    meta = pd.DataFrame({"item": items, "category": key("c", item_cat)})
    item_features = {"shop": dict(zip(items, key("s", item_shop))), "brand": dict(zip(items, key("b", item_brand)))}
    q, c = np.array(queries, dtype=np.int64), np.array(coupons, dtype=np.int64)
    coupon_keys = key("k", range(len(coupon_cat)))
    groups = (
        RawGroup("query", pd.DataFrame({"user": key("u", q[:, 0]), "object": key("q", q[:, 1]), "time": q[:, 2]})),
        RawGroup("coupon", pd.DataFrame({"user": key("u", c[:, 0]), "object": key("k", c[:, 1]), "time": c[:, 2]}),
                 object_features={"shop": dict(zip(coupon_keys, key("s", coupon_shop))),
                                  "category": dict(zip(coupon_keys, key("c", coupon_cat)))}),
    )
    raw = RawData(reviews=reviews, meta=meta, expected=None)
    return HeteroSample(raw, item_features, groups)
