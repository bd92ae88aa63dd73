"""Where each loader kind's behaviour groups come from (dataset option `behaviours`, datasets/load.py).

- "hetero_sample": the generated query and coupon groups; items carry shop and brand (datasets/synthetic_hetero.py).
- "amazon_hin": items carry their brand (item_brand.dat, one brand per item); groups "brand" and "category" are
  the user's brand and category behaviours, one per review (the reviewed item's brand / category, at the review's
  time), with the rating as the item group's action type. Their objects ARE the items' brand and category
  values, so they share those embedding tables (entity groups).

`behaviours: []` attaches the items' extra features and no group (ATRank's items-only variant).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from datasets.behaviours import Behaviours, RawGroup, build_behaviours
from datasets.lines import iter_lines
from datasets.public_loaders import split_counts
from datasets.raw_errors import require_files
from datasets.synthetic_hetero import generate_hetero

_HETERO_OPTIONS = ("n_users", "n_items", "n_categories", "seed")
_BRAND_EXPECTED = "'item,brand' (two non-negative integers)"


def load_behaviours(kind: str, table, data_root: Path, names: list[str], options: dict[str, Any]) -> Behaviours:
    if kind == "hetero_sample":
        sample = generate_hetero(**{k: v for k, v in options.items() if k in _HETERO_OPTIONS})
        item_features, groups = sample.item_features, {g.name: g for g in sample.groups}
    elif kind == "amazon_hin":
        brand = _hin_brands(Path(data_root) / "amazon_hin" / "item_brand.dat", table.item_keys)
        item_features, groups = {"brand": brand}, _hin_groups(table, brand)
    else:
        raise ValueError(f"dataset option behaviours: loader kind {kind!r} has no behaviour groups "
                         "(kinds with groups: amazon_hin, hetero_sample)")
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise ValueError(f"dataset option behaviours: unknown group(s) {unknown} for kind {kind!r}; "
                         f"its groups are {sorted(groups)}")
    return build_behaviours(table, item_features, [groups[n] for n in names])


def _hin_brands(path: Path, item_keys) -> dict[str, str]:
    """Item key -> brand key from item_brand.dat (the table's item keys are zero-padded integers)."""
    require_files([path], "amazon_hin", "librahu/HIN-Datasets-for-Recommendation-and-Network-Embedding, "
                  "folder Amazon/ (item_brand.dat, for the brand feature)")
    brand_of: dict[int, str] = {}
    for lineno, line in iter_lines(path, _BRAND_EXPECTED):
        item, brand = split_counts(path, lineno, line, b",", ("item", "brand"), "comma-separated", _BRAND_EXPECTED)
        brand_of[item] = f"b{brand:06d}"
    return {k: brand_of[int(k)] for k in item_keys if int(k) in brand_of}


def _hin_groups(table, brand: dict[str, str]) -> dict[str, RawGroup]:
    """One brand and one category event per review, at the review's time."""
    user = table.user_keys[pd.Series(range(table.n_users)).repeat(table.lengths).to_numpy()]
    item_keys = table.item_keys[table.items]
    events = lambda objects: pd.DataFrame({"user": user, "object": objects, "time": table.times})  # noqa: E731
    return {"brand": RawGroup("brand", events([brand.get(k, "<unknown>") for k in item_keys]), entity="brand"),
            "category": RawGroup("category", events(table.category_keys[table.item_category[table.items]]),
                                 entity="category")}
