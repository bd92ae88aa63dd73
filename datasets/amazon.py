"""The "amazon" and "sample" loaders: the Amazon 2014 5-core files, found or downloaded, then parsed.

reviews_<category>_5.json(.gz) holds strict JSON lines; meta_<category>.json(.gz) holds one Python dict literal
per line, and an item's category is categories[-1][-1]. "sample" writes generated data in the same format
(datasets/synthetic.py) and parses it with the same code, so the embedded default exercises the real path.
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
import zlib
from array import array
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from datasets import synthetic
from datasets.download import DownloadFailed, download_file, load_manifest
from datasets.lines import iter_lines, read_blocks, snippet
from datasets.raw_errors import DataFormatError, DataNotFoundError, require_files
from datasets.raw_frames import meta_frame, reviews_frame
from datasets.raw_types import RawData
from datasets.times import check_time_unit, to_seconds

AMAZON_EXPECTED = {
    "Electronics": {"users": 192_403, "items": 63_001, "categories": 801, "interactions": 1_689_188},
    "Clothing_Shoes_and_Jewelry": {"users": 39_387, "items": 23_033, "categories": 484, "interactions": 278_677},
}

_REVIEW_EXPECTED = ('one JSON object per line with keys "reviewerID" (string), "asin" (string), '
                    '"unixReviewTime" (integer) and "overall" (number)')
_META_EXPECTED = ("one Python dict literal per line (parsed with ast.literal_eval) with keys 'asin' (string) and "
                  "'categories' (a non-empty list of non-empty lists of strings)")
# The real meta lines start with the asin: read it cheaply to skip the ~90% of rows for items nobody reviewed.
_META_ASIN = re.compile(rb"""\s*\{\s*(?:'asin'|"asin")\s*:\s*(?:'([^'\\]*)'|"([^"\\]*)")""")


def prepare_amazon(data_root: Path, cache_dir: Path, category: str = "Electronics", download: bool = True,
                   subdir: str = "amazon", time_unit: str = "s") -> tuple[list[Path], Callable[[], RawData]]:
    """Find (or download) the reviews + meta files of `category` under data_root/subdir; return them and a parser
    (`time_unit`: the unit of unixReviewTime, seconds in the published files)."""
    check_time_unit(time_unit)
    if not re.fullmatch(r"[A-Za-z_]+", category):
        raise ValueError(f"amazon category must look like 'Electronics' or 'Clothing_Shoes_and_Jewelry', got "
                         f"{category!r}")
    directory = data_root / subdir
    names = [f"reviews_{category}_5.json.gz", f"meta_{category}.json.gz"]
    found = {name: _find_plain_or_gz(directory, name) for name in names}
    attempts = _download_missing(found, directory) if download else {}
    missing = [name for name, p in found.items() if p is None]
    if missing:
        raise DataNotFoundError(_amazon_missing_message(category, directory, missing, download, attempts))
    reviews_path, meta_path = found[names[0]], found[names[1]]
    return [reviews_path, meta_path], lambda: parse_amazon(reviews_path, meta_path, AMAZON_EXPECTED.get(category),
                                                           time_unit)


def prepare_sample(data_root: Path, cache_dir: Path, n_users: int = 3000, n_items: int = 1500,
                   n_categories: int = 40, seed: int = 0) -> tuple[list[Path], Callable[[], RawData]]:
    """Generate the embedded sample as raw Amazon files under cache_dir (once per settings); parse it as "amazon"."""
    params = {"n_users": n_users, "n_items": n_items, "n_categories": n_categories, "seed": seed,
              "version": synthetic.SYNTHETIC_VERSION}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    reviews_path, meta_path = synthetic.write_sample(cache_dir / f"sample_{key}", n_users, n_items, n_categories,
                                                     seed)
    # The generator hits these exactly (every user, item and category occurs): a check of the parse path.
    expected = {"users": n_users, "items": n_items, "categories": n_categories}
    return [reviews_path, meta_path], lambda: parse_amazon(reviews_path, meta_path, expected)


def _find_plain_or_gz(directory: Path, gz_name: str) -> Path | None:
    """The file, gzipped or unpacked; None when neither is there; a directory in its place is an error."""
    candidates = [directory / name for name in (gz_name, gz_name[: -len(".gz")])]
    for p in candidates:
        if p.is_file():
            return p
    require_files([p for p in candidates if p.exists()], "amazon", f"the Amazon 2014 file {gz_name}")
    return None


def _download_missing(found: dict[str, Path | None], directory: Path) -> dict[str, list[str]]:
    """Download the files of `found` that are None (filling them in); return why each failed download failed."""
    missing = [name for name, p in found.items() if p is None]
    attempts: dict[str, list[str]] = {}
    if not missing:
        return attempts
    manifest = load_manifest()
    for name in missing:
        entry = manifest["files"].get(name)
        if entry is None:
            attempts[name] = ["not listed in datasets/manifest.json, so no URL is known"]
            continue
        try:
            found[name] = download_file(name, directory, entry)
        except DownloadFailed as e:
            attempts[name] = e.reasons
    return attempts


def _amazon_missing_message(category: str, directory: Path, missing: list[str], download: bool,
                            attempts: dict[str, list[str]]) -> str:
    try:
        manifest = load_manifest()["files"]
    except (OSError, ValueError):
        manifest = {}
    lines = [f"Amazon 2014 raw files for category {category!r} are missing from {directory.resolve()}:"]
    for name in missing:
        lines.append(f"  - {name}  (or unpacked: {name[:-3]})")
        urls = manifest.get(name, {}).get("urls", [])
        lines += [f"      get it from: {u}" for u in urls] or ["      no URL known: see datasets/manifest.json"]
        for reason in attempts.get(name, []):
            lines.append(f"      download failed: {reason}")
    if not download:
        lines.append("Downloading is off (download=False).")
    lines.append(f"Put the files (gzipped or unpacked) in exactly this folder: {directory.resolve()}")
    wgets = [f"wget {manifest[n]['urls'][0]}" for n in missing if manifest.get(n, {}).get("urls")]
    if wgets:
        lines.append(f"e.g.  mkdir -p {directory.resolve()} && cd {directory.resolve()} && " + " && ".join(wgets))
    return "\n".join(lines)


def parse_amazon(reviews_path: Path, meta_path: Path, expected: dict[str, int] | None = None,
                 time_unit: str = "s") -> RawData:
    """Parse a reviews + meta pair (streamed line by line; meta kept only for reviewed asins)."""
    reviews, reviewed = _parse_reviews(reviews_path)
    reviews["time"] = to_seconds(reviews["time"].to_numpy(), time_unit, reviews_path,
                                 lambda i: f"line {_line_of_row(reviews_path, i)}, key 'unixReviewTime'")
    meta, notes = _parse_meta(meta_path, reviewed)
    return RawData(reviews=reviews, meta=meta, files=(reviews_path, meta_path), expected=expected, notes=notes)


# ---------------------------------------------------------------------------------------------------------------
# Reviews: strict JSON lines.

def _parse_reviews(path: Path) -> tuple[pd.DataFrame, set[bytes]]:
    """Reviews -> DataFrame and the set of reviewed asins. Arrow's multi-threaded JSON reader does the work (about
    twice as fast as json.loads per line); when it rejects anything, the line-by-line parser runs instead, which
    either accepts the file the same way or raises an error naming the line."""
    try:
        reviews = _parse_reviews_arrow(path)
    except _UseLineParser:
        reviews = _parse_reviews_lines(path)
    return reviews, {k.encode("utf-8") for k in pd.unique(reviews["item"])}


class _UseLineParser(Exception):
    """The fast reader could not vouch for the file; the line parser decides (and names any bad line)."""


class _BlockStream:
    """File-like view of `read_blocks` for Arrow that counts lines, to check that Arrow saw one row per line."""

    def __init__(self, path: Path):
        self.blocks = read_blocks(path)
        self.pending = bytearray()  # deleting from its front is cheap
        self.lines = 0
        self.ends_with_newline = True
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.pending) < n) and (block := next(self.blocks, None)) is not None:
            self.lines += block.count(b"\n")
            self.ends_with_newline = block.endswith(b"\n")
            self.pending += block
        n = len(self.pending) if n < 0 else min(n, len(self.pending))
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    def close(self) -> None:
        self.closed = True
        self.blocks.close()


def _parse_reviews_arrow(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.json as pj

    schema = pa.schema([("reviewerID", pa.string()), ("asin", pa.string()), ("unixReviewTime", pa.int64()),
                        ("overall", pa.float32())])
    stream = _BlockStream(path)
    try:
        reader = pj.open_json(pa.PythonFile(stream, mode="r"), read_options=pj.ReadOptions(block_size=8 << 20),
                              parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
        table = pa.Table.from_batches(list(reader), schema)
    except (pa.ArrowException, EOFError, zlib.error, gzip.BadGzipFile, ValueError):
        raise _UseLineParser from None
    finally:
        stream.close()
    n_lines = stream.lines + (not stream.ends_with_newline)
    required_missing = any(table.column(c).null_count for c in ("reviewerID", "asin", "unixReviewTime"))
    if table.num_rows == 0 or table.num_rows != n_lines or required_missing:
        raise _UseLineParser  # blank lines, two objects on a line, a missing key, an empty file: let it decide
    return pd.DataFrame({
        "user": table.column("reviewerID").to_pandas(), "item": table.column("asin").to_pandas(),
        "time": table.column("unixReviewTime").to_numpy(),
        "rating": table.column("overall").to_numpy(zero_copy_only=False).astype(np.float32),  # null -> NaN
    })


def _parse_reviews_lines(path: Path) -> pd.DataFrame:
    # Ids are interned to int codes as we go: 1.7 M rows then hold two int32 arrays, not 3.4 M str objects.
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    user_codes, item_codes, times, ratings = array("i"), array("i"), array("q"), array("f")
    loads = json.loads
    nan = float("nan")
    for lineno, line in iter_lines(path, _REVIEW_EXPECTED):
        try:
            row = loads(line)
            user, item, time = row["reviewerID"], row["asin"], row["unixReviewTime"]
            rating = row.get("overall")
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
            raise DataFormatError(_review_error(path, lineno, line, e)) from e
        rating = nan if rating is None else rating  # missing or null: unknown
        if type(user) is not str or type(item) is not str or type(time) is not int or \
                not isinstance(rating, (int, float)) or isinstance(rating, bool):
            raise DataFormatError(f"{path}, line {lineno}: wrong value type(s) (reviewerID={user!r}, asin={item!r}, "
                                  f"unixReviewTime={time!r}, overall={rating!r}); expected {_REVIEW_EXPECTED}")
        user_codes.append(users.setdefault(user, len(users)))
        item_codes.append(items.setdefault(item, len(items)))
        times.append(time)
        ratings.append(rating)
    user_keys = np.array(list(users), dtype=object)
    item_keys = np.array(list(items), dtype=object)
    return reviews_frame(user_keys[np.frombuffer(user_codes, dtype=np.int32)],
                         item_keys[np.frombuffer(item_codes, dtype=np.int32)],
                         np.frombuffer(times, dtype=np.int64), np.frombuffer(ratings, dtype=np.float32))


def _line_of_row(path: Path, row: int) -> int:
    """The line number of the `row`-th (0-based) review: blank lines hold none."""
    for k, (lineno, _) in enumerate(iter_lines(path, _REVIEW_EXPECTED)):
        if k == row:
            return lineno
    raise IndexError(f"{path} has fewer than {row + 1} reviews")


def _review_error(path: Path, lineno: int, line: bytes, e: Exception) -> str:
    if isinstance(e, KeyError):
        what = f"missing key {e}"
    elif isinstance(e, ValueError):
        what = f"not valid JSON ({e})"
    else:
        what = "not a JSON object"
    return f"{path}, line {lineno}: {what}; expected {_REVIEW_EXPECTED}; the line starts {snippet(line)}"


# ---------------------------------------------------------------------------------------------------------------
# Meta: one Python dict literal per line; category = categories[-1][-1].

def _parse_meta(path: Path, reviewed: set[bytes]) -> tuple[pd.DataFrame, dict[str, int]]:
    asins: list[str] = []
    leaves: list[str] = []
    match = _META_ASIN.match
    for lineno, line in iter_lines(path, _META_EXPECTED):
        m = match(line)
        if m is not None and (m.group(1) if m.group(1) is not None else m.group(2)) not in reviewed:
            continue  # not a reviewed item: skipped unparsed (the reference keeps reviewed asins only)
        asin, leaf = _meta_row(path, lineno, line)
        if m is None and asin.encode("utf-8") not in reviewed:
            continue
        asins.append(asin)
        leaves.append(leaf)
    meta = meta_frame(asins, leaves)
    n_dup = len(meta) - meta["item"].nunique()
    return meta, ({"meta rows repeating an asin (last one kept)": n_dup} if n_dup else {})


def _meta_row(path: Path, lineno: int, line: bytes) -> tuple[str, str]:
    """(asin, categories[-1][-1]) of one meta line, or DataFormatError saying what is wrong with it."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("latin-1")
    try:
        row = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise DataFormatError(f"{path}, line {lineno}: not a Python literal ({type(e).__name__}: {e}); "
                              f"expected {_META_EXPECTED}; the line starts {snippet(line)}") from e
    if not isinstance(row, dict) or "asin" not in row or "categories" not in row:
        what = "not a dict" if not isinstance(row, dict) else \
            f"missing key {'asin' if 'asin' not in row else 'categories'!r}"
        raise DataFormatError(f"{path}, line {lineno}: {what}; expected {_META_EXPECTED}; "
                              f"the line starts {snippet(line)}")
    asin, cats = row["asin"], row["categories"]
    if not isinstance(asin, str) or not (isinstance(cats, list) and cats and isinstance(cats[-1], list)
                                         and cats[-1] and isinstance(cats[-1][-1], str)):
        raise DataFormatError(f"{path}, line {lineno}: bad 'asin' {asin!r} or 'categories' {cats!r}; expected "
                              f"{_META_EXPECTED} (category = categories[-1][-1])")
    return asin, cats[-1][-1]
