from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datasets.raw_types import RawData
from datasets.table import build_table


def make_table(sequences: dict[str, list[str]], times: dict[str, list[int]] | None = None, name: str = "tiny",
               extra_items: tuple[str, ...] = ()):
    """A Table from {user: [items in time order]}; times default to one day apart."""
    rows = []
    for u, items in sequences.items():
        for p, it in enumerate(items):
            t = times[u][p] if times else 86400 * p
            rows.append((u, it, t, np.nan))
    df = pd.DataFrame(rows, columns=["user", "item", "time", "rating"])
    if extra_items:  # items nobody in `sequences` reviewed need a review to exist: give them to a filler user
        filler = [("zz_filler", it, 86400 * i, np.nan) for i, it in enumerate(extra_items)]
        df = pd.concat([df, pd.DataFrame(filler, columns=df.columns)], ignore_index=True)
    meta = pd.DataFrame({"item": df["item"].unique(), "category": "c"})
    return build_table(RawData(df, meta), name)


@pytest.fixture(scope="session")
def clothing_table(shared_data, tmp_path_factory):
    from datasets.load import load_dataset

    return load_dataset("clothing_seq", "clothing_seq", shared_data, tmp_path_factory.mktemp("cache"))
