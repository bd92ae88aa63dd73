"""RecBole's atomic files: `<name>.inter` (+ optional `<name>.item` for an item category).

Tab-separated with a typed header, e.g. `user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float`.
Fields are named without their type (user_col=user_id, ...). A `.item` category field of type token_seq (several
space-separated tokens, e.g. ml-1m's genre) gives the item its LAST token, the analogue of Amazon's
categories[-1][-1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from datasets.lines import open_binary
from datasets.raw_errors import DataFormatError

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def typed_header(path: Path) -> dict[str, str]:
    """Field name -> the header cell as written ('user_id' -> 'user_id:token'), checked to be RecBole's form."""
    with open_binary(path) as f:
        header = f.readline().decode("utf-8-sig", "replace").rstrip("\r\n")
    fields: dict[str, str] = {}
    for cell in header.split("\t"):
        name, sep, kind = cell.strip().rpartition(":")
        if not sep or not name or kind not in FIELD_TYPES:
            raise DataFormatError(f"{path}, line 1: header cell {cell!r} is not RecBole's 'name:type'; expected "
                                  f"tab-separated cells such as 'user_id:token' (types {', '.join(FIELD_TYPES)})")
        fields[name] = cell.strip()
    return fields


def header_columns(path: Path, wanted: dict[str, str]) -> dict[str, str]:
    """Map each role's field name to its typed header cell, or say which fields the file has."""
    fields = typed_header(path)
    missing = sorted(f for f in wanted.values() if f not in fields)
    if missing:
        raise DataFormatError(f"{path}, line 1: missing field(s) {missing}; the header has {sorted(fields)} (name "
                              f"them with user_col / item_col / time_col / rating_col / category_col)")
    return {role: fields[name] for role, name in wanted.items()}


def item_categories(path: Path, item_field: str, category_field: str) -> pd.DataFrame:
    """Meta (item, category) from a `.item` file: one row per item, a token_seq reduced to its last token."""
    cols = header_columns(path, {"item": item_field, "category": category_field})
    df = pd.read_csv(path, sep="\t", usecols=list(cols.values()), dtype=str, keep_default_na=False,
                     encoding="utf-8-sig")
    category = df[cols["category"]].str.split().str[-1]
    empty = category.isna().to_numpy()
    if empty.any():
        line = int(np.argmax(empty)) + 2
        raise DataFormatError(f"{path}, line {line}: empty {category_field!r}; expected a category token")
    return pd.DataFrame({"item": df[cols["item"]].str.strip(), "category": category})
