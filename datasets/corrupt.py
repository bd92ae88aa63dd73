"""Derived files (table and split caches, checkpoints) that cannot be read: named, moved aside, rebuilt.

A cache or checkpoint that is truncated or bit-flipped (a full disk, a copy cut short, a bad sector) must never
block every rerun with a reader error that names no file. Readers catch `READ_ERRORS`, call `move_aside`, which
logs a warning naming the file and the error and renames it to `<name>.corrupt-<UTC timestamp>` (kept for a
post-mortem, never read again), and then rebuild the file as on a cache miss.
"""
from __future__ import annotations

import logging
import os
import pickle
import time
import zipfile
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

# What numpy's npz reader, zipfile (CRC check included), pickle and torch.load raise on a damaged file; KeyError
# and TypeError: a readable file without the expected fields.
READ_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError,
                                                KeyError, TypeError, pickle.UnpicklingError, RuntimeError)


def move_aside(path: Path, error: BaseException, what: str) -> Path | None:
    """Warn that `path` (a `what`, e.g. "table cache") is unreadable and rename it out of the way; returns the new
    name (None when another process moved or replaced it first)."""
    path = Path(path)
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        target = None
    log.warning("corrupt %s %s (%s: %s): moved aside to %s and rebuilt", what, path, type(error).__name__,
                str(error)[:300], target.name if target else "(already gone)")
    return target
