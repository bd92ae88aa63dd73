"""The plain-data boundary between raw loaders (datasets/raw.py) and the table stage (datasets/table.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class RawData:
    """Interactions with raw (string) ids, in raw file order; the table stage sorts and re-maps.

    reviews: columns user (str), item (str), time (int64 unix seconds), rating (float32, NaN if unknown).
    meta:    columns item (str), category (str); one row per item that has metadata (category already reduced
             to one value, e.g. Amazon's categories[-1][-1]). Items of `reviews` missing here get category
             "<unknown>" in the table stage.
    files:   the input files read, hashed into the table cache key.
    expected: reference statistics {users, items, categories, interactions} to compare with, or None.
    """

    reviews: pd.DataFrame
    meta: pd.DataFrame
    files: tuple[Path, ...] = ()
    expected: dict[str, int] | None = None
    notes: dict[str, int] = field(default_factory=dict)  # counted skips etc., logged with the stats
