"""One call from a dataset name to a cached Table: raw.prepare (files, parse thunk) -> table.load_table."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import raw
from datasets.table import Table, load_table


def load_dataset(name: str, kind: str, data_root: str | Path, cache_dir: str | Path,
                 options: dict[str, Any] | None = None) -> Table:
    """Load dataset `name` through loader `kind` (see datasets/raw.py) from `data_root`, cached in `cache_dir`.

    The cache key covers the input files' checksums, the loader options and the code versions, so a second call
    with the same inputs skips parsing.
    """
    options = dict(options or {})
    files, parse = raw.prepare(kind, Path(data_root), cache_dir=Path(cache_dir), **options)
    # whether a missing file may be downloaded does not change the data: keep it out of the cache key
    settings = {"kind": kind, **{k: v for k, v in options.items() if k != "download"}, "raw_version": raw.RAW_VERSION}
    return load_table(name, files, settings, parse, Path(cache_dir))
