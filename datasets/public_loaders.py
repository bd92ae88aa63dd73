"""The "clothing_seq", "amazon_hin" and "grocery" loaders: public files of the shared data folder.

See that folder's README for the sources and the verified counts that the *_EXPECTED statistics repeat. Integer
ids are zero-padded (datasets/raw_frames.py) so the table stage's string order is numeric order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from datasets.lines import iter_lines, parse_nonnegative_int, snippet
from datasets.raw_errors import DataFormatError, require_files
from datasets.raw_frames import meta_frame, one_category_meta, pad_ids, pad_ids_to, reviews_frame
from datasets.raw_types import RawData
from datasets.sequences import parse_sequences
from datasets.times import check_time_unit, to_seconds

CLOTHING_SEQ_EXPECTED = {"users": 39_387, "items": 23_033, "categories": 1, "interactions": 278_677}
# 16 categories by the last-row rule (1: 2,310 items, 2: 412, and 14 other values on 31 items; checked on the file)
AMAZON_HIN_EXPECTED = {"users": 6_170, "items": 2_753, "categories": 16, "interactions": 195_791}
GROCERY_EXPECTED = {"users": 14_681, "items": 8_713, "categories": 57, "interactions": 151_254}

_HIN_UI_EXPECTED = "'user<TAB>item<TAB>rating<TAB>unixtime' (four non-negative integers)"
_HIN_IC_EXPECTED = "'item,category' (two non-negative integers)"
_GROCERY_EXPECTED = "a header 'user_id,item_id,time' (comma or tab) and rows of three non-negative integers"
_GROCERY_META_EXPECTED = "a tab-separated header starting 'item_id<TAB>i_category' and rows starting with two integers"


# ---------------------------------------------------------------------------------------------------------------
# "clothing_seq": `reviewerID asin1 asin2 ...` per line.

def prepare_clothing_seq(data_root: Path, cache_dir: Path, path: str | Path | None = None,
                         repeated_users: str = "error") -> tuple[list[Path], Callable[[], RawData]]:
    """The OpenP5 Clothing sequences; time = 86400 x position, one category "all"; `repeated_users` (error |
    concat): what a user on two lines means (datasets/sequences.py)."""
    p = Path(path) if path is not None else data_root / "amazon_clothing_seq" / "user_sequence.txt"
    require_files([p], "clothing_seq",
                  "OpenP5 Amazon Clothing sequences: kitty-nami/OpenH5, data/Clothing/user_sequence.txt")
    return [p], lambda: parse_sequences(p, expected=CLOTHING_SEQ_EXPECTED, repeated_users=repeated_users)


# ---------------------------------------------------------------------------------------------------------------
# "amazon_hin": user_item.dat + item_category.dat.

def prepare_amazon_hin(data_root: Path, cache_dir: Path, time_unit: str = "s"
                       ) -> tuple[list[Path], Callable[[], RawData]]:
    """The HIN Amazon files; each item's LAST item_category.dat row wins (the analogue of categories[-1][-1]);
    `time_unit` (s | ms | us): the unit of the unixtime column."""
    check_time_unit(time_unit)
    d = data_root / "amazon_hin"
    files = [d / "user_item.dat", d / "item_category.dat"]
    require_files(files, "amazon_hin",
                  "librahu/HIN-Datasets-for-Recommendation-and-Network-Embedding, folder Amazon/")
    return files, lambda: _parse_amazon_hin(*files, time_unit=time_unit)


def split_counts(path: Path, lineno: int, line: bytes, sep: bytes, names: tuple[str, ...], sep_name: str,
                  expected: str) -> list[int]:
    """The `len(names)` non-negative integers of one `sep`-separated line, or DataFormatError naming the line."""
    fields = line.rstrip(b"\r\n").split(sep)
    if len(fields) != len(names):
        raise DataFormatError(f"{path}, line {lineno}: {len(fields)} {sep_name} field(s); expected "
                              f"{expected}; the line is {snippet(line)}")
    return [parse_nonnegative_int(f, path, lineno, line, n, expected) for f, n in zip(fields, names)]


def _parse_amazon_hin(user_item: Path, item_category: Path, time_unit: str) -> RawData:
    users, items, ratings, times, linenos = [], [], [], [], []
    for lineno, line in iter_lines(user_item, _HIN_UI_EXPECTED):
        u, i, r, t = split_counts(user_item, lineno, line, b"\t", ("user", "item", "rating", "unixtime"),
                                   "tab-separated", _HIN_UI_EXPECTED)
        users.append(u)
        items.append(i)
        ratings.append(r)
        times.append(t)
        linenos.append(lineno)
    times = to_seconds(np.asarray(times, dtype=np.int64), time_unit, user_item,
                       lambda i: f"line {linenos[i]}, column 4 (unixtime)")
    category: dict[int, int] = {}
    for lineno, line in iter_lines(item_category, _HIN_IC_EXPECTED):
        item, cat = split_counts(item_category, lineno, line, b",", ("item", "category"), "comma-separated",
                                  _HIN_IC_EXPECTED)
        category[item] = cat  # the last row in file order wins (the analogue of categories[-1][-1])
    item_max = max(items + list(category), default=0)
    reviews = reviews_frame(pad_ids(users), pad_ids_to(items, item_max), times, ratings)
    meta = meta_frame(pad_ids_to(list(category), item_max), pad_ids(list(category.values())))
    return RawData(reviews=reviews, meta=meta, files=(user_item, item_category), expected=AMAZON_HIN_EXPECTED)


# ---------------------------------------------------------------------------------------------------------------
# "grocery": ReChorus Grocery_and_Gourmet_Food.

def prepare_grocery(data_root: Path, cache_dir: Path, time_unit: str = "s"
                    ) -> tuple[list[Path], Callable[[], RawData]]:
    """train.csv (tab) + dev.csv + test.csv (comma, CRLF) and item_meta.csv (tab, column i_category);
    `time_unit` (s | ms | us): the unit of the time column."""
    check_time_unit(time_unit)
    d = data_root / "grocery_rechorus"
    files = [d / "train.csv", d / "dev.csv", d / "test.csv", d / "item_meta.csv"]
    require_files(files, "grocery", "THUwangcy/ReChorus data/Grocery_and_Gourmet_Food/ (train.csv, item_meta.csv) "
                                    "and the dev.csv / test.csv of its leave-one-out split")
    return files, lambda: _parse_grocery(files[:3], files[3], time_unit)


def _parse_grocery(interaction_files: list[Path], item_meta: Path, time_unit: str) -> RawData:
    users, items, times = [], [], []
    for path in interaction_files:
        file_times, linenos = [], []
        for lineno, u, i, t in _grocery_interactions(path):
            users.append(u)
            items.append(i)
            file_times.append(t)
            linenos.append(lineno)
        times.append(to_seconds(np.asarray(file_times, dtype=np.int64), time_unit, path,
                                lambda k: f"line {linenos[k]}, column 'time'"))
    times = np.concatenate(times)
    meta_items, meta_cats = _grocery_meta(item_meta)
    item_max = max(items + meta_items, default=0)
    reviews = reviews_frame(pad_ids(users), pad_ids_to(items, item_max), times)
    meta = meta_frame(pad_ids_to(meta_items, item_max), pad_ids(meta_cats))
    return RawData(reviews=reviews, meta=meta, files=(*interaction_files, item_meta), expected=GROCERY_EXPECTED)


def _grocery_interactions(path: Path) -> Iterator[tuple[int, int, int, int]]:
    """(line number, user_id, item_id, time) rows of one interaction file; its header decides the separator."""
    sep = None
    for lineno, line in iter_lines(path, _GROCERY_EXPECTED):
        if sep is None:  # train.csv uses tabs, dev/test commas
            sep = b"\t" if b"\t" in line else b","
            header = [h.strip() for h in line.rstrip(b"\r\n").split(sep)]
            if header != [b"user_id", b"item_id", b"time"]:
                raise DataFormatError(f"{path}, line {lineno}: header {snippet(line)}; "
                                      f"expected {_GROCERY_EXPECTED}")
            continue
        fields = line.rstrip(b"\r\n").split(sep)
        if len(fields) != 3:
            raise DataFormatError(f"{path}, line {lineno}: {len(fields)} field(s) separated by {sep!r}; expected "
                                  f"{_GROCERY_EXPECTED}; the line is {snippet(line)}")
        u, i, t = (parse_nonnegative_int(f, path, lineno, line, n, _GROCERY_EXPECTED)
                   for f, n in zip(fields, ("user_id", "item_id", "time")))
        yield lineno, u, i, t


def _grocery_meta(item_meta: Path) -> tuple[list[int], list[int]]:
    """(item ids, category ids) of item_meta.csv, in file order."""
    meta_items, meta_cats = [], []
    for lineno, line in iter_lines(item_meta, _GROCERY_META_EXPECTED):
        fields = line.rstrip(b"\r\n").split(b"\t", 2)
        if lineno == 1:
            if fields[:2] != [b"item_id", b"i_category"]:
                raise DataFormatError(f"{item_meta}, line 1: header {snippet(line)}; "
                                      f"expected {_GROCERY_META_EXPECTED}")
            continue
        if len(fields) < 2:
            raise DataFormatError(f"{item_meta}, line {lineno}: expected {_GROCERY_META_EXPECTED}; "
                                  f"got {snippet(line)}")
        meta_items.append(parse_nonnegative_int(fields[0], item_meta, lineno, line, "item_id",
                                                _GROCERY_META_EXPECTED))
        meta_cats.append(parse_nonnegative_int(fields[1], item_meta, lineno, line, "i_category",
                                               _GROCERY_META_EXPECTED))
    return meta_items, meta_cats
