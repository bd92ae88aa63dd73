"""The "interactions" loader: a user's own data, in the four shapes the field's public data comes in.

format (auto: by the file's suffix):
- "table":    CSV / TSV (.csv, .tsv; the separator is sniffed from the header) or Parquet (.parquet, .pq), one row
              per interaction, columns named by options (user_col, item_col, time_col, category_col, rating_col);
- "sequence": one line per user, `user item1 item2 ...` (.txt), time = position in days, or real times from a
              parallel timestamp file (times_path); datasets/sequences.py;
- "recbole":  RecBole's atomic `.inter` (typed header), with an optional `.item` file (item_path) for the
              category field; datasets/recbole.py.
Ids that are integers (or integers written as text) are zero-padded so the table stage's string order is numeric
order; time is unix seconds or ISO 8601 dates; without a category every item is in the one category "all".
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from datasets.lines import is_gzip, iter_lines, open_binary, snippet
from datasets.raw_errors import DataFormatError, require_files
from datasets.raw_frames import one_category_meta, pad_ids, reviews_frame
from datasets.raw_types import RawData
from datasets.recbole import header_columns, item_categories
from datasets.sequences import parse_sequences
from datasets.times import check_time_unit, to_seconds

FORMATS = {".csv": "table", ".tsv": "table", ".parquet": "table", ".pq": "table", ".txt": "sequence",
           ".inter": "recbole"}

Where = Callable[[int], str]  # 0-based data row -> "line 5" / "row 4", for the messages


def prepare_interactions(data_root: Path, cache_dir: Path, path: str | Path | None = None, format: str = "auto",
                         user_col: str = "user", item_col: str = "item", time_col: str = "time",
                         category_col: str | None = None, rating_col: str | None = None, sep: str | None = None,
                         times_path: str | Path | None = None, item_path: str | Path | None = None,
                         time_unit: str = "s", repeated_users: str = "error"
                         ) -> tuple[list[Path], Callable[[], RawData]]:
    """The data at `path` (absolute, relative to the working directory, or else to data_root) and its parser.
    `time_unit` (s | ms | us) is the unit of numeric times; `repeated_users` (error | concat) what a user on two
    lines of a sequence file means (datasets/sequences.py)."""
    if path is None:
        raise TypeError("loader 'interactions' needs the option path=<your file> (dataset.options.path=...)")
    p = _locate(path, data_root)
    kind = _format(p, format)
    check_time_unit(time_unit)
    if kind != "sequence" and repeated_users != "error":
        raise ValueError(f"dataset option repeated_users={repeated_users!r} applies to sequence files (one line "
                         f"per user); {p} is read as format {kind!r}, one row per interaction")
    extra = [_locate(x, data_root) for x in (times_path, item_path) if x is not None]
    require_files([p, *extra], "interactions", f"your own data ({kind} format)")
    columns = {"user": user_col, "item": item_col, "time": time_col, "category": category_col, "rating": rating_col}
    columns = {k: v for k, v in columns.items() if v is not None}
    if kind == "sequence":
        times = _locate(times_path, data_root) if times_path is not None else None
        return [p, *extra], lambda: parse_sequences(p, times, repeated_users=repeated_users, time_unit=time_unit)
    if kind == "recbole":
        items = _locate(item_path, data_root) if item_path is not None else None
        return [p, *extra], lambda: _parse_recbole(p, columns, items, time_unit)
    return [p], lambda: _parse_interactions(p, columns, sep, time_unit)


def _locate(path: str | Path, data_root: Path) -> Path:
    p = Path(path)
    return data_root / p if not p.is_absolute() and not p.exists() else p


def _format(path: Path, format: str) -> str:
    if format != "auto":
        if format not in set(FORMATS.values()):
            raise ValueError(f"dataset option format={format!r}: expected auto, table, sequence or recbole")
        return format
    suffix = (path.with_suffix("") if path.suffix.lower() == ".gz" else path).suffix.lower()  # x.csv.gz: .csv
    kind = FORMATS.get(suffix)
    if kind is None:
        raise DataFormatError(f"{path}: cannot tell the format from the suffix {suffix!r}; expected one of "
                              f"{sorted(FORMATS)} or the option format=table|sequence|recbole")
    return kind


def _parse_recbole(path: Path, columns: dict[str, str], item_path: Path | None, time_unit: str) -> RawData:
    """A `.inter` file through the table parser (its typed header cells as the column names)."""
    on_inter = {role: name for role, name in columns.items() if not (role == "category" and item_path)}
    raw = _parse_interactions(path, header_columns(path, on_inter), sep="\t", time_unit=time_unit)
    if item_path is None:
        return raw
    meta = item_categories(item_path, columns["item"], columns.get("category", "categories"))
    meta["item"] = _pad_like(meta["item"], raw.reviews["item"])
    return RawData(reviews=raw.reviews, meta=meta, files=(path, item_path), expected=None)


def _pad_like(items: pd.Series, reviewed: pd.Series) -> np.ndarray:
    """`.item` ids written like the `.inter` ones: integers zero-padded to the reviews' width when those are."""
    if items.str.fullmatch(r"\d+").all() and reviewed.str.fullmatch(r"\d+").all():
        return items.astype(np.int64).astype(str).str.zfill(int(reviewed.str.len().max())).to_numpy(dtype=object)
    return items.to_numpy(dtype=object)


def _parse_interactions(path: Path, columns: dict[str, str], sep: str | None, time_unit: str) -> RawData:
    parquet = path.suffix.lower() in (".parquet", ".pq")
    where = (lambda i: f"row {i + 1}") if parquet else (lambda i: f"line {i + 2}")  # CSV line 1 is the header
    df = _read_columns(path, list(dict.fromkeys(columns.values())), parquet, sep)
    out = {}
    for role in ("user", "item", "category"):
        if role in columns:
            out[role] = _id_column(df[columns[role]], path, columns[role], where)
    out["time"] = _time_column(df[columns["time"]], path, columns["time"], where, time_unit)
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
            with open_binary(path) as f:  # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark
                header = f.readline().decode("utf-8-sig", "replace").rstrip("\r\n")
            if not header:
                raise DataFormatError(f"{path}, line 1: the file is empty; expected {expected}")
            sep = sep or ("\t" if "\t" in header else ",")
            names = [h.strip() for h in header.split(sep)]
            _check_columns(path, names, wanted, "line 1 (header)")
            _check_field_counts(path, len(names), sep, header)
            df = pd.read_csv(path, sep=sep, usecols=wanted, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                             skip_blank_lines=False, compression="gzip" if is_gzip(path) else None)
    except DataFormatError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, zlib.error, OSError,
            ValueError) as e:
        where = "" if parquet else _first_bad_line(path)
        raise DataFormatError(f"{path}{where}: could not be read ({type(e).__name__}: {e}); expected {expected}"
                              ) from e
    if len(df) == 0:
        raise DataFormatError(f"{path}, line 2: no data rows; expected {expected}")
    return df


def _check_field_counts(path: Path, n_fields: int, sep: str, header: str) -> None:
    """Every line has the header's number of fields: a longer line would otherwise be cut without a word."""
    quoted = False
    for lineno, line in iter_lines(path, f"{n_fields} fields separated by {sep!r}"):
        if lineno == 1:
            continue
        text = line.decode("utf-8", "replace").rstrip("\r")
        quoted = quoted or '"' in text
        if quoted:  # quoted cells may hold the separator: leave those files to pandas' own checks
            return
        n = text.count(sep) + 1
        if n != n_fields:
            raise DataFormatError(f"{path}, line {lineno}: {n} fields, expected {n_fields} as the header "
                                  f"{snippet(header)} (separator {sep!r}); got {snippet(line)}")


def _first_bad_line(path: Path) -> str:
    """', line N' for the first line that does not decode as UTF-8 or where a gzip stream stops; '' if none."""
    try:
        for lineno, line in iter_lines(path, "UTF-8 text lines"):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return f", line {lineno} (byte {e.start + 1} of the line is not UTF-8)"
    except DataFormatError as e:  # iter_lines names the line where a truncated gzip stops
        text = str(e)
        return text[len(str(path)):text.index(":", len(str(path)))]
    return ""


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


def _time_column(values: pd.Series, path: Path, name: str, where: Where, time_unit: str) -> np.ndarray:
    """Unix times in `time_unit` (integers or floats, floored to seconds) or dates/datetimes (ISO 8601 text or a
    datetime column), as seconds between 1970 and 2100 (datasets/times.py)."""
    def at(i: int) -> str:
        return f"{where(i)}, column {name!r}"

    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert(None)  # as UTC
        return _date_seconds(values.astype("datetime64[s]").astype(np.int64).to_numpy(), path, name, at, time_unit)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        if pd.api.types.is_integer_dtype(numeric.dtype):
            return to_seconds(numeric.to_numpy(dtype=np.int64), time_unit, path, at)
        number = numeric.to_numpy(dtype=np.float64)
        if not np.isfinite(number).all():
            i = int(np.argmax(~np.isfinite(number)))
            raise DataFormatError(f"{path}, {at(i)}: time {values.iloc[i]!r} is not a finite number; expected "
                                  f"unix times")
        return to_seconds(np.floor(np.clip(number, -2.0 ** 62, 2.0 ** 62)).astype(np.int64), time_unit, path, at)
    parsed = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
    is_number, is_date = numeric.notna().to_numpy(), parsed.notna().to_numpy() & numeric.isna().to_numpy()
    neither = ~(is_number | is_date)
    if neither.any():
        i = int(np.argmax(neither))
        raise DataFormatError(f"{path}, {where(i)}: time {values.iloc[i]!r} in column {name!r} is neither a unix "
                              f"timestamp nor an ISO date; expected integer seconds or an ISO date 'YYYY-MM-DD'")
    if is_number.any():  # and dates elsewhere
        a, b = int(np.argmax(is_number)), int(np.argmax(is_date))
        raise DataFormatError(f"{path}, {where(max(a, b))}: column {name!r} mixes unix timestamps ({values.iloc[a]!r}"
                              f", {where(a)}) and dates ({values.iloc[b]!r}, {where(b)}); expected one of the two "
                              f"throughout")
    seconds = parsed.dt.tz_localize(None).astype("datetime64[s]").astype(np.int64).to_numpy()
    return _date_seconds(seconds, path, name, at, time_unit)


def _date_seconds(seconds: np.ndarray, path: Path, name: str, at: Where, time_unit: str) -> np.ndarray:
    """Dates as seconds, checked to lie between 1970 and 2100; a time_unit other than seconds has nothing to apply
    to (dates carry their unit) and is refused rather than ignored."""
    if time_unit != "s":
        raise DataFormatError(f"{path}, {at(0)}: the column holds dates, but dataset.options.time_unit={time_unit} "
                              f"is for numeric unix times; expected time_unit=s (the default) with dates")
    return to_seconds(seconds, "s", path, at)


def _rating_column(values: pd.Series, path: Path, name: str, where: Where) -> np.ndarray:
    """Numbers as float32; an empty cell is an unknown rating (NaN), anything else that is not a number an error."""
    rating = pd.to_numeric(values.replace("", None), errors="coerce")
    bad = np.flatnonzero(rating.isna().to_numpy() & (values.astype(str) != "").to_numpy())
    if len(bad):
        raise DataFormatError(f"{path}, {where(bad[0])}: rating {values.iloc[bad[0]]!r} in column "
                              f"{name!r} is not a number; expected a number or an empty cell")
    return rating.to_numpy(dtype=np.float32)
