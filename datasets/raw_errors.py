"""The errors a raw loader raises, and the check that its input files exist (and are files).

Both messages are written for the person running the benchmark: a missing file says what to get, from where and
where to put it; a malformed file names the file, the 1-based line and what was expected there.
"""
from __future__ import annotations

from pathlib import Path


class DataNotFoundError(FileNotFoundError):
    """Input files are missing (and could not be downloaded); the message says what to get and where to put it."""


class DataFormatError(ValueError):
    """An input file is malformed; the message names the file, the 1-based line and what was expected."""


class DataPathError(DataNotFoundError):
    """A path where an input file belongs is a directory (or another non-file): said so, not "missing"."""


def require_files(paths: list[Path], what: str, source: str) -> None:
    """Raise DataPathError naming every input path of loader `what` that is a directory or another non-file, else
    DataNotFoundError listing every missing path, and `source`, where to get them."""
    not_files = [p for p in paths if p.exists() and not p.is_file()]
    if not_files:
        lines = "\n".join(f"  - {p.resolve()} is a {'directory' if p.is_dir() else 'special file'}, expected a "
                          f"file" for p in not_files)
        raise DataPathError(f"{what}: input path(s) that are not files:\n{lines}\nSource: {source}\nPut the "
                            f"file(s) at exactly these paths (or point data_root / the `path` option at the files "
                            f"themselves).")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        lines = "\n".join(f"  - {p.resolve()}" for p in missing)
        raise DataNotFoundError(
            f"{what}: missing input file(s):\n{lines}\nSource: {source}\n"
            f"Put the file(s) at exactly these paths (or point data_root / the `path` option elsewhere).")
