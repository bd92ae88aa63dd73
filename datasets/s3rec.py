"""The "s3rec" loader: the S3Rec collection's one-line-per-user files and their item attributes.

<file>.txt holds `user item1 item2 ...` per line (integer ids from 1, oldest first, no timestamps: an item's time
is its position in days, 86400 x position, as clothing_seq). <file>_item2attributes.json maps an item id (string)
to its list of attribute ids (Amazon: categories and brand; Yelp: business categories; LastFM: tags). The suite's
models take ONE category per item; `category` says which attribute it is:
- "rarest" (the configs' choice): the attribute of the item's list that the fewest items of the file carry (ties:
  the earlier in the list). It is the item's most specific attribute, the role the Amazon loader's
  categories[-1][-1] plays, and it does not rest on the order of the lists, which the files do not document;
  "first" would put 7,263 of Sports' 18,357 items in one category, the most common attribute is on every Sports
  and Toys item.
- "first" / "last": the list's first / last attribute id.
- "none": one category "all" for every item.
An item whose list is empty (one Yelp item) has no category: the table stage gives it "<unknown>" and logs it.
Repeated items within a line (Yelp: 11,830 repeats in 7,102 users) are repeat visits at distinct positions, so
the data policy's exact-duplicate rule (same user, item and time) never removes them.
Files are looked up under <data_root>/<subdir>/ and downloaded from datasets/manifest.json when missing.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from datasets.fetch import fetch_files
from datasets.lines import iter_lines, parse_nonnegative_int, snippet
from datasets.raw_errors import DataFormatError
from datasets.raw_frames import meta_frame, one_category_meta, pad_ids, pad_ids_to, reviews_frame
from datasets.raw_types import RawData
from datasets.sequences import DAY

CATEGORY_RULES = ("rarest", "first", "last", "none")
# The collection's README counts (users, items, interactions); the files are 5-core, so the data policy keeps all.
S3REC_EXPECTED = {
    "Sports_and_Outdoors": {"users": 35_598, "items": 18_357, "interactions": 296_337},
    "Toys_and_Games": {"users": 19_412, "items": 11_924, "interactions": 167_597},
    "Yelp": {"users": 30_431, "items": 20_033, "interactions": 316_354},
    "LastFM": {"users": 1_090, "items": 3_646, "interactions": 52_551},
    "Beauty": {"users": 22_363, "items": 12_101, "interactions": 198_502},
}
LINE_EXPECTED = "'user item1 item2 ...' (non-negative integer ids separated by white space, at least one item)"
ATTR_EXPECTED = 'one JSON object {"<item id>": [<attribute id>, ...], ...} with integer attribute ids'


def prepare_s3rec(data_root: Path, cache_dir: Path, file: str, category: str, download: bool, subdir: str
                  ) -> tuple[list[Path], Callable[[], RawData]]:
    """<data_root>/<subdir>/<file>.txt and <file>_item2attributes.json (downloaded when missing and `download`)."""
    if category not in CATEGORY_RULES:
        raise ValueError(f"s3rec option category={category!r}; expected one of {CATEGORY_RULES}")
    names = [f"{file}.txt", f"{file}_item2attributes.json"]
    files = fetch_files(data_root / subdir, subdir, names, f"s3rec {file}", download)
    return files, lambda: parse_s3rec(files[0], files[1], category, S3REC_EXPECTED.get(file))


def parse_s3rec(seq_path: Path, attr_path: Path, category: str, expected: dict[str, int] | None = None
                ) -> RawData:
    """RawData of one S3Rec file pair; ids zero-padded so that the table's string order is numeric order."""
    users, items, positions = read_user_lines(seq_path)
    attributes = read_item_attributes(attr_path)
    item_max = max(max(items, default=0), max((int(k) for k in attributes), default=0))
    reviews = reviews_frame(pad_ids(users), pad_ids_to(items, item_max), np.asarray(positions) * DAY)
    if category == "none":
        meta = one_category_meta(reviews)
    else:
        chosen = choose_categories(attributes, category)
        meta = meta_frame(pad_ids_to(list(chosen), item_max), pad_ids(list(chosen.values())))
    return RawData(reviews=reviews, meta=meta, files=(seq_path, attr_path), expected=expected)


def read_user_lines(path: Path) -> tuple[list[int], list[int], list[int]]:
    """(user, item, position) of every interaction of a `user item1 item2 ...` file, in file order."""
    users: list[int] = []
    items: list[int] = []
    positions: list[int] = []
    for lineno, line in iter_lines(path, LINE_EXPECTED):
        parts = line.split()
        if len(parts) < 2:
            raise DataFormatError(f"{path}, line {lineno}: expected {LINE_EXPECTED}; got {snippet(line)}")
        if not b"".join(parts).isdigit():
            for n, part in enumerate(parts):  # name the offending field
                parse_nonnegative_int(part, path, lineno, line, "user" if n == 0 else f"item {n}", LINE_EXPECTED)
        n_items = len(parts) - 1
        users += [int(parts[0])] * n_items
        items += map(int, parts[1:])
        positions += range(n_items)
    return users, items, positions


def read_item_attributes(path: Path) -> dict[str, list[int]]:
    """The item -> attribute ids object, checked: integer item keys, lists of integers."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(f"{path}: not valid JSON ({e}); expected {ATTR_EXPECTED}") from e
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: a JSON {type(data).__name__}; expected {ATTR_EXPECTED}")
    for key, value in data.items():
        if not key.isdigit() or not isinstance(value, list) or not all(
                isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in value):
            raise DataFormatError(f"{path}: item {key!r} -> {str(value)[:80]}; expected {ATTR_EXPECTED}")
    return data


def choose_categories(attributes: dict[str, list[int]], rule: str) -> dict[int, int]:
    """item id -> its category attribute under `rule` ("rarest", "first" or "last"); items with an empty list
    are left out. Rarity counts the items that carry an attribute (an item listing it twice counts once)."""
    if rule == "first":
        return {int(k): v[0] for k, v in attributes.items() if v}
    if rule == "last":
        return {int(k): v[-1] for k, v in attributes.items() if v}
    if rule != "rarest":
        raise ValueError(f"category rule {rule!r}; expected one of {CATEGORY_RULES[:3]}")
    carriers = Counter(a for v in attributes.values() for a in set(v))
    # min() keeps the first of equal keys: a tie goes to the attribute earlier in the list
    return {int(k): min(v, key=carriers.__getitem__) for k, v in attributes.items() if v}
