"""One call from a dataset name to a cached Table: raw.prepare (files, parse thunk) -> table.load_table."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from datasets import raw
from datasets.behaviour_sources import load_behaviours
from datasets.behaviours import Behaviours
from datasets.table import Table, load_table

log = logging.getLogger(__name__)


def load_dataset(name: str, kind: str, data_root: str | Path, cache_dir: str | Path,
                 options: dict[str, Any] | None = None) -> Table:
    """Load dataset `name` through loader `kind` (see datasets/raw.py) from `data_root`, cached in `cache_dir`.

    The cache key covers the input files' checksums, the loader options and the code versions, so a second call
    with the same inputs skips parsing. Option `behaviours` (a list of group names, datasets/behaviour_sources.py)
    attaches heterogeneous behaviour groups after the cache; None (the default) attaches none.
    """
    options = dict(options or {})
    behaviours = options.pop("behaviours", None)
    files, parse = raw.prepare(kind, Path(data_root), cache_dir=Path(cache_dir), **options)
    # whether a missing file may be downloaded does not change the data: keep it out of the cache key
    settings = {"kind": kind, **{k: v for k, v in options.items() if k != "download"}, "raw_version": raw.RAW_VERSION}
    table = load_table(name, files, settings, parse, Path(cache_dir))
    if behaviours is None:
        return table
    return attach_behaviours(table, load_behaviours(kind, table, Path(data_root), list(behaviours), options))


def attach_behaviours(table: Table, behaviours: Behaviours) -> Table:
    """The table with its behaviour groups; the content hash covers them (runs with other groups never match)."""
    digest = hashlib.sha256(f"{table.content_hash}|{behaviours.digest}".encode()).hexdigest()[:16]
    log.info("dataset %s: behaviour groups %s (%s events), item features %s", table.name,
             [g.name for g in behaviours.groups], [len(g.objects) for g in behaviours.groups],
             sorted(behaviours.item_features))
    return replace(table, behaviours=behaviours, content_hash=digest)
