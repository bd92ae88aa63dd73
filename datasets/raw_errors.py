"""The two errors a raw loader raises, and the check that its input files exist.

Both messages are written for the person running the benchmark: a missing file says what to get, from where and
where to put it; a malformed file names the file, the 1-based line and what was expected there.
"""
from __future__ import annotations

from pathlib import Path


class DataNotFoundError(FileNotFoundError):
    """Input files are missing (and could not be downloaded); the message says what to get and where to put it."""


class DataFormatError(ValueError):
    """An input file is malformed; the message names the file, the 1-based line and what was expected."""


def require_files(paths: list[Path], what: str, source: str) -> None:
    """Raise DataNotFoundError listing every missing path of loader `what`, and `source`, where to get them."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        lines = "\n".join(f"  - {p.resolve()}" for p in missing)
        raise DataNotFoundError(
            f"{what}: missing input file(s):\n{lines}\nSource: {source}\n"
            f"Put the file(s) at exactly these paths (or point data_root / the `path` option elsewhere).")
