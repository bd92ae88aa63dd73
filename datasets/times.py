"""Times as unix seconds: the unit a file's numbers are in (option `time_unit`), and the check that they are seconds.

A time column in milliseconds read as seconds lands near the year 46,000 and puts every gap of ATRank's time
buckets in the top bucket; a negative time is no date of an interaction. Either is refused, naming the file, the
column and the first line where it happens, and suggesting the unit that would fit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from datasets.raw_errors import DataFormatError

TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000}  # option time_unit -> units per second
LATEST = 4_102_444_800  # 2100-01-01T00:00:00Z: no interaction is dated later


def check_time_unit(time_unit: str) -> None:
    """Raise ValueError unless `time_unit` is one of TIME_UNITS."""
    if time_unit not in TIME_UNITS:
        raise ValueError(f"dataset option time_unit={time_unit!r}: expected one of {', '.join(TIME_UNITS)} "
                         f"(seconds, milliseconds, microseconds)")


def to_seconds(values: np.ndarray, time_unit: str, path: Path, where: Callable[[int], str]) -> np.ndarray:
    """Integer times in `time_unit` -> int64 unix seconds (floored), or DataFormatError naming the file and
    `where(i)` (the line and the column, e.g. "line 5, column 'time'") of the first time that is negative or after
    2100 once converted."""
    check_time_unit(time_unit)
    values = np.asarray(values, dtype=np.int64)
    seconds = values // TIME_UNITS[time_unit]
    bad = (seconds < 0) | (seconds >= LATEST)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(f"{path}, {where(i)}: time {int(values[i])} is "
                              f"{_why(int(seconds[i]), time_unit)}; expected unix times in {_unit_name(time_unit)} "
                              f"between 1970 and 2100 (dataset.options.time_unit={time_unit}). "
                              f"{_suggestion(values, time_unit)}")
    return seconds


def _why(seconds: int, time_unit: str) -> str:
    if seconds < 0:
        return "negative (before 1970)"
    year = 1970 + seconds / 31_556_952  # mean Gregorian year
    return f"after the year 2100 as {_unit_name(time_unit)} (about the year {year:,.0f})"


def _unit_name(time_unit: str) -> str:
    return {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}[time_unit]


def _suggestion(values: np.ndarray, time_unit: str) -> str:
    """Which time_unit would put every value between 1970 and 2100, if one would."""
    if (values < 0).any():
        return "Negative times cannot be unix times in any unit: check the column."
    fits = [u for u, per_s in TIME_UNITS.items() if u != time_unit and int(values.max()) // per_s < LATEST
            and TIME_UNITS[u] > TIME_UNITS[time_unit]]
    if fits:
        return f"They fit as {_unit_name(fits[0])}: set dataset.options.time_unit={fits[0]}."
    return "No unit of " + ", ".join(TIME_UNITS) + " puts them before 2100: check the column."
