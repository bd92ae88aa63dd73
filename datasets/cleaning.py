"""The data policy, applied to RawData's interactions before the table is built; every removal is counted.

- Exact duplicate rows (same user, item, time and rating) are dropped (`duplicates="drop"`, the default: an export
  that lists every row twice would otherwise double every user's history and shift every popularity count), or
  kept as distinct interactions (`duplicates="keep"`: repeat purchases logged at the same second).
- `k_core=k` (0 = off) keeps the largest subset in which every user and every item has at least k interactions
  (users and items filtered in turn until nothing changes), the usual "k-core" of the public Amazon sets.
- Users with fewer than `min_user_interactions` interactions (3: one to train on, one to validate, one to test)
  are dropped, not an error.
The counts go to the log and into Table.cleaning, which the runner logs as MLflow metrics (data_<name>).
"""
from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger(__name__)
DUPLICATE_POLICIES = ("drop", "keep")


def clean_reviews(reviews: pd.DataFrame, name: str, min_user_interactions: int = 3, k_core: int = 0,
                  duplicates: str = "drop") -> tuple[pd.DataFrame, dict[str, int]]:
    """The interactions the table is built from, and the counts removed by each rule."""
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"dataset {name!r}: duplicates={duplicates!r}; expected one of {DUPLICATE_POLICIES}")
    counts: dict[str, int] = {}
    if duplicates == "drop":
        dup = reviews.duplicated(keep="first").to_numpy()
        counts["duplicate_rows_dropped"] = int(dup.sum())
        reviews = reviews[~dup]
    if k_core:
        before_users, before_items, before_rows = (reviews["user"].nunique(), reviews["item"].nunique(),
                                                   len(reviews))
        reviews = _k_core(reviews, k_core)
        counts.update(k_core_users_dropped=before_users - reviews["user"].nunique(),
                      k_core_items_dropped=before_items - reviews["item"].nunique(),
                      k_core_rows_dropped=before_rows - len(reviews))
    per_user = reviews.groupby("user", sort=False)["user"].transform("size")
    short = (per_user < min_user_interactions).to_numpy()
    counts["short_users_dropped"] = int(reviews.loc[short, "user"].nunique())
    counts["short_user_rows_dropped"] = int(short.sum())
    reviews = reviews[~short]
    for key, n in counts.items():
        if n:
            log.warning("dataset %s: %s = %d (data policy: datasets/cleaning.py)", name, key, n)
    if len(reviews) == 0:
        raise ValueError(f"dataset {name!r}: no interactions left after the data policy ({counts}); every user "
                         f"needs at least {min_user_interactions} interactions")
    return reviews.reset_index(drop=True), counts


def _k_core(reviews: pd.DataFrame, k: int) -> pd.DataFrame:
    while True:
        users = reviews.groupby("user", sort=False)["user"].transform("size")
        items = reviews.groupby("item", sort=False)["item"].transform("size")
        keep = ((users >= k) & (items >= k)).to_numpy()
        if keep.all():
            return reviews
        reviews = reviews[keep]
