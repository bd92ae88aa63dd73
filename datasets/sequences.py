"""One line per user: `user item1 item2 ...` (OpenP5, S3Rec, GID and the shared clothing_seq publish this).

Items are in time order. Without timestamps an item's time is its position in days (86400 x position), as
clothing_seq; with a parallel timestamp file (`user t1 t2 ...` per line, the same users in the same order, one
time per item) the times are real. Every bad line is an error naming the file, the line and what was expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.lines import iter_lines, snippet
from datasets.raw_errors import DataFormatError
from datasets.raw_frames import one_category_meta, reviews_frame
from datasets.raw_types import RawData

SEQUENCE_EXPECTED = "'user item1 item2 ...' (a user id and at least one item, separated by white space)"
TIMES_EXPECTED = "'user t1 t2 ...' (the same user as the sequence file's line, then one unix time per item)"
DAY = 86_400


def parse_sequences(path: Path, times_path: Path | None = None, expected: dict[str, int] | None = None) -> RawData:
    """RawData of a sequence file (and its optional parallel timestamp file), one category "all"."""
    users: list[str] = []
    items: list[str] = []
    lengths: list[int] = []
    for lineno, line in iter_lines(path, SEQUENCE_EXPECTED):
        parts = line.decode("utf-8", "replace").split()
        if len(parts) < 2:
            raise DataFormatError(f"{path}, line {lineno}: expected {SEQUENCE_EXPECTED}; got {snippet(line)}")
        users += [parts[0]] * (len(parts) - 1)
        items += parts[1:]
        lengths.append(len(parts) - 1)
    if times_path is None:
        times = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]) * DAY  # position as days
    else:
        times = _parallel_times(times_path, path, users, lengths)
    reviews = reviews_frame(users, items, times)
    files = (path,) if times_path is None else (path, times_path)
    return RawData(reviews=reviews, meta=one_category_meta(reviews), files=files, expected=expected)


def _parallel_times(times_path: Path, seq_path: Path, users: list[str], lengths: list[int]) -> np.ndarray:
    """The timestamp file's times, checked line by line against the sequence file's users and lengths."""
    starts = np.concatenate([[0], np.cumsum(lengths)])
    out: list[np.ndarray] = []
    for i, (lineno, line) in enumerate(iter_lines(times_path, TIMES_EXPECTED)):
        parts = line.decode("utf-8", "replace").split()
        if i >= len(lengths):
            raise DataFormatError(f"{times_path}, line {lineno}: more lines than {seq_path} ({len(lengths)}); "
                                  f"expected one line per user, in the same order")
        user = users[starts[i]]
        if not parts or parts[0] != user or len(parts) - 1 != lengths[i]:
            raise DataFormatError(f"{times_path}, line {lineno}: expected {TIMES_EXPECTED}: user {user!r} with "
                                  f"{lengths[i]} times (line {i + 1} of {seq_path}); got {snippet(line)}")
        try:
            times = np.floor(np.asarray(parts[1:], dtype=np.float64)).astype(np.int64)
        except ValueError:
            raise DataFormatError(f"{times_path}, line {lineno}: a time is not a number; expected "
                                  f"{TIMES_EXPECTED}; got {snippet(line)}") from None
        out.append(times)
    if len(out) != len(lengths):
        raise DataFormatError(f"{times_path}: {len(out)} lines, but {seq_path} has {len(lengths)} users; expected "
                              f"one line per user, in the same order")
    return np.concatenate(out)
