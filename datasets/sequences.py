"""One line per user: `user item1 item2 ...` (OpenP5, S3Rec, GID and the shared clothing_seq publish this).

Items are in time order. Without timestamps an item's time is its position in days (86400 x position), as
clothing_seq; with a parallel timestamp file (`user t1 t2 ...` per line, the same users in the same order, one
time per item, in `time_unit`) the times are real. A user on two lines is an error naming both lines, or with
`repeated_users="concat"` the user's lines are joined in file order (positions continue; real times must not go
back from one line to the next, which the table's sort by time would interleave). Every bad line is an error
naming the file, the line and what was expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.lines import iter_lines, snippet
from datasets.raw_errors import DataFormatError
from datasets.raw_frames import one_category_meta, reviews_frame
from datasets.raw_types import RawData
from datasets.times import check_time_unit, to_seconds

SEQUENCE_EXPECTED = "'user item1 item2 ...' (a user id and at least one item, separated by white space)"
TIMES_EXPECTED = "'user t1 t2 ...' (the same user as the sequence file's line, then one unix time per item)"
DAY = 86_400
REPEATED_USERS = ("error", "concat")


def parse_sequences(path: Path, times_path: Path | None = None, expected: dict[str, int] | None = None,
                    repeated_users: str = "error", time_unit: str = "s") -> RawData:
    """RawData of a sequence file (and its optional parallel timestamp file), one category "all"."""
    if repeated_users not in REPEATED_USERS:
        raise ValueError(f"dataset option repeated_users={repeated_users!r}: expected one of {REPEATED_USERS}")
    check_time_unit(time_unit)
    if time_unit != "s" and times_path is None:
        raise ValueError(f"dataset option time_unit={time_unit!r} needs a times file (times_path): without one, "
                         f"{path}'s times are positions in days")
    linenos, users, items = _read_lines(path)
    groups = _user_lines(path, linenos, users, repeated_users)
    times = None if times_path is None else _parallel_times(times_path, path, linenos, users, items, time_unit)
    out_users: list[str] = []
    out_items: list[str] = []
    out_times: list[np.ndarray] = []
    for group in groups:
        joined = [item for i in group for item in items[i]]
        out_users += [users[group[0]]] * len(joined)
        out_items += joined
        if times is None:
            out_times.append(np.arange(len(joined), dtype=np.int64) * DAY)  # position as days, continuing
        else:
            _check_joined_times(times_path, [linenos[i] for i in group], [times[i] for i in group], users[group[0]])
            out_times.append(np.concatenate([times[i] for i in group]))
    reviews = reviews_frame(out_users, out_items, np.concatenate(out_times))
    files = (path,) if times_path is None else (path, times_path)
    joined_lines = len(users) - len(groups)
    notes = {"repeated_user_lines_joined": joined_lines} if joined_lines else {}
    return RawData(reviews=reviews, meta=one_category_meta(reviews), files=files, expected=expected, notes=notes)


def _read_lines(path: Path) -> tuple[list[int], list[str], list[list[str]]]:
    """Line numbers, users and item lists of the sequence file's non-blank lines."""
    linenos: list[int] = []
    users: list[str] = []
    items: list[list[str]] = []
    for lineno, line in iter_lines(path, SEQUENCE_EXPECTED):
        parts = line.decode("utf-8", "replace").split()
        if len(parts) < 2:
            raise DataFormatError(f"{path}, line {lineno}: expected {SEQUENCE_EXPECTED}; got {snippet(line)}")
        linenos.append(lineno)
        users.append(parts[0])
        items.append(parts[1:])
    return linenos, users, items


def _user_lines(path: Path, linenos: list[int], users: list[str], repeated_users: str) -> list[list[int]]:
    """Each user's line indices in file order, users in order of first appearance; a user on two lines is an error
    naming both, unless repeated_users="concat"."""
    first: dict[str, int] = {}
    groups: list[list[int]] = []
    for i, user in enumerate(users):
        g = first.setdefault(user, len(groups))
        if g == len(groups):
            groups.append([i])
        elif repeated_users == "error":
            raise DataFormatError(f"{path}, lines {linenos[groups[g][0]]} and {linenos[i]}: user {user!r} is on "
                                  f"two lines; expected one line per user (dataset.options.repeated_users=concat "
                                  f"joins a user's lines in file order)")
        else:
            groups[g].append(i)
    return groups


def _parallel_times(times_path: Path, seq_path: Path, linenos: list[int], users: list[str], items: list[list[str]],
                    time_unit: str) -> list[np.ndarray]:
    """The timestamp file's times in seconds, one array per line, checked line by line against the sequence
    file's users and lengths."""
    out: list[np.ndarray] = []
    where_line: list[int] = []
    seen: dict[str, int] = {}
    for i, (lineno, line) in enumerate(iter_lines(times_path, TIMES_EXPECTED)):
        parts = line.decode("utf-8", "replace").split()
        if i >= len(users):
            raise DataFormatError(f"{times_path}, line {lineno}: more lines than {seq_path} ({len(users)}); "
                                  f"expected one line per user, in the same order")
        user, n = users[i], len(items[i])
        if not parts or parts[0] != user or len(parts) - 1 != n:
            again = f" (user {parts[0]!r} is already on line {seen[parts[0]]})" if parts and parts[0] in seen else ""
            raise DataFormatError(f"{times_path}, line {lineno}: expected {TIMES_EXPECTED}: user {user!r} with "
                                  f"{n} times (line {linenos[i]} of {seq_path}){again}; got {snippet(line)}")
        seen.setdefault(user, lineno)
        try:
            values = np.asarray(parts[1:], dtype=np.float64)
        except ValueError:
            values = np.array([np.nan])
        if not np.isfinite(values).all():
            raise DataFormatError(f"{times_path}, line {lineno}: a time is not a number; expected "
                                  f"{TIMES_EXPECTED}; got {snippet(line)}")
        out.append(np.floor(np.clip(values, -2.0 ** 62, 2.0 ** 62)).astype(np.int64))
        where_line.append(lineno)
    if len(out) != len(users):
        raise DataFormatError(f"{times_path}: {len(out)} lines, but {seq_path} has {len(users)} users; expected "
                              f"one line per user, in the same order")
    starts = np.cumsum([0] + [len(t) for t in out])

    def where(k: int) -> str:  # flat index -> the line and the column (column 1 is the user)
        i = int(np.searchsorted(starts, k, side="right")) - 1
        return f"line {where_line[i]}, column {k - starts[i] + 2}"

    seconds = to_seconds(np.concatenate(out), time_unit, times_path, where)
    return np.split(seconds, starts[1:-1])


def _check_joined_times(times_path: Path, linenos: list[int], times: list[np.ndarray], user: str) -> None:
    """A user's later line starts no earlier than the earlier lines end: joined in file order, never interleaved."""
    latest, latest_line = int(times[0].max()), linenos[0]
    for lineno, t in zip(linenos[1:], times[1:]):
        if int(t.min()) < latest:
            raise DataFormatError(f"{times_path}, lines {latest_line} and {lineno}: user {user!r}'s times on line "
                                  f"{lineno} start at {int(t.min())}, before {latest} on line {latest_line}; "
                                  f"repeated_users=concat joins a user's lines in file order, so a later line "
                                  f"must not go back in time")
        latest, latest_line = int(t.max()), lineno
