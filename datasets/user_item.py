"""The "user_item" loader: SASRec's files, one interaction `user item` per line (integer ids, white space).

A user's lines are in time order (they need not be adjacent): an item's time is its rank among that user's lines,
in days (86400 x position), as the one-line-per-user formats. No categories: one category "all". A named file
(`file` under <data_root>/<subdir>/) is downloaded from datasets/manifest.json when missing; `path` reads a file
of your own instead (no download).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from datasets.fetch import fetch_files
from datasets.lines import iter_lines, parse_nonnegative_int, snippet
from datasets.raw_errors import DataFormatError, require_files
from datasets.raw_frames import one_category_meta, pad_ids, reviews_frame
from datasets.raw_types import RawData
from datasets.sequences import DAY

USER_ITEM_EXPECTED = "'user item' (two non-negative integer ids separated by white space)"


def prepare_user_item(data_root: Path, cache_dir: Path, file: str | None, subdir: str, download: bool,
                      path: str | Path | None = None) -> tuple[list[Path], Callable[[], RawData]]:
    """`path` if given (absolute, or relative to data_root), else <data_root>/<subdir>/<file>, fetched if missing."""
    if path is not None:
        p = Path(path) if Path(path).is_absolute() or Path(path).is_file() else data_root / path
        require_files([p], "user_item", "your own `user item` file (option path)")
    elif file:
        p = fetch_files(data_root / subdir, subdir, [file], f"user_item {file}", download)[0]
    else:
        raise ValueError("user_item: set option `file` (a manifest file under data_root/subdir) or `path`")
    return [p], lambda: parse_user_item(p)


def parse_user_item(path: Path, expected: dict[str, int] | None = None) -> RawData:
    """RawData of a `user item` file; time = the line's rank among its user's lines, in days."""
    users: list[int] = []
    items: list[int] = []
    for lineno, line in iter_lines(path, USER_ITEM_EXPECTED):
        fields = line.split()
        if len(fields) != 2:
            raise DataFormatError(f"{path}, line {lineno}: {len(fields)} field(s); expected {USER_ITEM_EXPECTED}; "
                                  f"the line is {snippet(line)}")
        users.append(parse_nonnegative_int(fields[0], path, lineno, line, "user", USER_ITEM_EXPECTED))
        items.append(parse_nonnegative_int(fields[1], path, lineno, line, "item", USER_ITEM_EXPECTED))
    user_arr = np.asarray(users, dtype=np.int64)
    order = np.argsort(user_arr, kind="stable")  # each user's lines together, in file order
    starts = np.r_[0, np.flatnonzero(np.diff(user_arr[order])) + 1]
    rank_sorted = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    positions = np.empty(len(order), dtype=np.int64)
    positions[order] = rank_sorted
    reviews = reviews_frame(pad_ids(user_arr), pad_ids(items), positions * DAY)
    return RawData(reviews=reviews, meta=one_category_meta(reviews), files=(path,), expected=expected)
