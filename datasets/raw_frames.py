"""The two DataFrames of RawData, built with the dtypes the table stage expects, and zero-padded integer ids.

Integer ids are kept as strings zero-padded to a common width, so that the table stage's sorted-string re-mapping
follows numeric order.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

ID_WIDTH = 6  # minimum width of zero-padded integer ids


def pad_ids(values: np.ndarray | list[int]) -> np.ndarray:
    """Integer ids -> zero-padded strings of a common width (>= ID_WIDTH), so string order = numeric order."""
    values = np.asarray(values, dtype=np.int64)
    width = max(ID_WIDTH, len(str(int(values.max())))) if len(values) else ID_WIDTH
    return np.char.zfill(values.astype(str), width)


def pad_ids_to(values: list[int], max_value: int) -> np.ndarray:
    """Pad with the width of `max_value`, so one id space (e.g. items of reviews and of meta) shares one width."""
    width = max(ID_WIDTH, len(str(max_value)))
    return np.char.zfill(np.asarray(values, dtype=np.int64).astype(str), width)


def reviews_frame(users: Sequence, items: Sequence, times: Sequence, ratings: Sequence | None = None
                  ) -> pd.DataFrame:
    """RawData.reviews: user and item as str, time as int64 unix seconds, rating as float32 (NaN if not given)."""
    n = len(times)
    rating = np.full(n, np.nan, dtype=np.float32) if ratings is None else np.asarray(ratings, dtype=np.float32)
    return pd.DataFrame({"user": pd.array(users, dtype="str"), "item": pd.array(items, dtype="str"),
                         "time": np.asarray(times, dtype=np.int64), "rating": rating})


def meta_frame(items: Sequence, categories: Sequence) -> pd.DataFrame:
    """RawData.meta: one (item, category) row per item, both as str."""
    return pd.DataFrame({"item": pd.array(items, dtype="str"), "category": pd.array(categories, dtype="str")})


def one_category_meta(reviews: pd.DataFrame) -> pd.DataFrame:
    """Meta for data without categories: every reviewed item, in first-seen order, in the one category "all"."""
    unique_items = pd.unique(reviews["item"])
    return meta_frame(unique_items, np.full(len(unique_items), "all"))
