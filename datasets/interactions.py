"""The "interactions" loader: a user's own interaction table (CSV, TSV or Parquet), one row per interaction.

Columns are named by options (user_col, item_col, time_col, category_col, rating_col). Ids that are integers
(or integers written as text) are zero-padded so the table stage's string order is numeric order; time is unix
seconds or ISO 8601 dates; without a category column every item is in the one category "all", like clothing_seq.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from datasets.lines import open_binary
from datasets.raw_errors import DataFormatError, require_files
from datasets.raw_frames import one_category_meta, pad_ids, reviews_frame
from datasets.raw_types import RawData

Where = Callable[[int], str]  # 0-based data row -> "line 5" / "row 4", for the messages


def prepare_interactions(data_root: Path, cache_dir: Path, path: str | Path | None = None, user_col: str = "user",
                         item_col: str = "item", time_col: str = "time", category_col: str | None = None,
                         rating_col: str | None = None, sep: str | None = None
                         ) -> tuple[list[Path], Callable[[], RawData]]:
    """The table at `path` (absolute, relative to the working directory, or else to data_root) and its parser."""
    if path is None:
        raise TypeError("loader 'interactions' needs the option path=<CSV, TSV or Parquet file>")
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = data_root / p
    require_files([p], "interactions", "your own interaction table (one row per user-item interaction)")
    columns = {"user": user_col, "item": item_col, "time": time_col, "category": category_col, "rating": rating_col}
    return [p], lambda: _parse_interactions(p, {k: v for k, v in columns.items() if v is not None}, sep)


def _parse_interactions(path: Path, columns: dict[str, str], sep: str | None) -> RawData:
    parquet = path.suffix.lower() in (".parquet", ".pq")
    where = (lambda i: f"row {i + 1}") if parquet else (lambda i: f"line {i + 2}")  # CSV line 1 is the header
    df = _read_columns(path, list(dict.fromkeys(columns.values())), parquet, sep)
    out = {}
    for role in ("user", "item", "category"):
        if role in columns:
            out[role] = _id_column(df[columns[role]], path, columns[role], where)
    out["time"] = _time_column(df[columns["time"]], path, columns["time"], where)
    if "rating" in columns:
        out["rating"] = _rating_column(df[columns["rating"]], path, columns["rating"], where)
    reviews = reviews_frame(out["user"], out["item"], out["time"], out.get("rating"))
    if "category" in out:  # an item's last row in file order gives its category
        meta = pd.DataFrame({"item": reviews["item"], "category": pd.array(out["category"], dtype="str")})
        meta = meta.drop_duplicates("item", keep="last").reset_index(drop=True)
    else:  # no category column: one category for all, like clothing_seq
        meta = one_category_meta(reviews)
    return RawData(reviews=reviews, meta=meta, files=(path,), expected=None)


def _read_columns(path: Path, wanted: list[str], parquet: bool, sep: str | None) -> pd.DataFrame:
    """The `wanted` columns of the file (CSV cells as text), or DataFormatError saying why it cannot be read."""
    expected = f"columns {wanted} ({'Parquet' if parquet else 'a header line, then one row per interaction'})"
    try:
        if parquet:
            import pyarrow.parquet as pq

            available = pq.ParquetFile(path).schema_arrow.names
            _check_columns(path, available, wanted, "the Parquet schema")
            df = pd.read_parquet(path, columns=wanted)
        else:
            with open_binary(path) as f:
                header = f.readline().decode("utf-8", "replace").rstrip("\r\n")
            if not header:
                raise DataFormatError(f"{path}, line 1: the file is empty; expected {expected}")
            sep = sep or ("\t" if "\t" in header else ",")
            _check_columns(path, [h.strip() for h in header.split(sep)], wanted, "line 1 (header)")
            df = pd.read_csv(path, sep=sep, usecols=wanted, dtype=str, keep_default_na=False,
                             skip_blank_lines=False, compression="infer")
    except DataFormatError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, zlib.error, OSError,
            ValueError) as e:
        raise DataFormatError(f"{path}: could not be read ({type(e).__name__}: {e}); expected {expected}") from e
    if len(df) == 0:
        raise DataFormatError(f"{path}, line 2: no data rows; expected {expected}")
    return df


def _check_columns(path: Path, available: list[str], wanted: list[str], where: str) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DataFormatError(f"{path}, {where}: missing column(s) {missing}; expected columns {wanted}, found "
                              f"{available} (name them with the options user_col / item_col / time_col / "
                              f"category_col / rating_col)")


def _id_column(values: pd.Series, path: Path, name: str, where: Where) -> np.ndarray:
    if pd.api.types.is_integer_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.int64)
        if (arr < 0).any():
            raise DataFormatError(f"{path}, {where(int(np.argmax(arr < 0)))}: negative id in column {name!r}")
        return pad_ids(arr)
    text = values.astype(str).str.strip()
    empty = (values.isna() | (text == "")).to_numpy()
    if empty.any():
        raise DataFormatError(f"{path}, {where(int(np.argmax(empty)))}: empty value in column {name!r}; expected an id")
    if text.str.fullmatch(r"\d+").all():  # integer ids written as text: pad so string order = numeric order
        return pad_ids(text.astype(np.int64).to_numpy())
    return text.to_numpy(dtype=object)


def _time_column(values: pd.Series, path: Path, name: str, where: Where) -> np.ndarray:
    """Unix seconds (integers or whole-second floats) or dates/datetimes (ISO 8601 text or a datetime column)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert(None)  # as UTC
        return values.astype("datetime64[s]").astype(np.int64).to_numpy()
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return np.floor(numeric.to_numpy(dtype=np.float64)).astype(np.int64)
    parsed = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
    ok = parsed.notna().to_numpy() if numeric.isna().all() else numeric.notna().to_numpy()
    if not ok.all():
        i = int(np.argmin(ok))
        raise DataFormatError(f"{path}, {where(i)}: time {values.iloc[i]!r} in column {name!r} is not a unix "
                              f"timestamp or ISO date; expected integer seconds or e.g. '2014-07-23'")
    return parsed.dt.tz_localize(None).astype("datetime64[s]").astype(np.int64).to_numpy()


def _rating_column(values: pd.Series, path: Path, name: str, where: Where) -> np.ndarray:
    """Numbers as float32; an empty cell is an unknown rating (NaN), anything else that is not a number an error."""
    rating = pd.to_numeric(values.replace("", None), errors="coerce")
    bad = np.flatnonzero(rating.isna().to_numpy() & (values.astype(str) != "").to_numpy())
    if len(bad):
        raise DataFormatError(f"{path}, {where(bad[0])}: rating {values.iloc[bad[0]]!r} in column "
                              f"{name!r} is not a number; expected a number or an empty cell")
    return rating.to_numpy(dtype=np.float32)
