"""Names that become parts of file and folder names (dataset names in cache files, model and dataset names in
run folders): a safe slug or a refusal up front, and a check at write time that a path stays under its root."""
from __future__ import annotations

import re
from pathlib import Path

SLUG = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
SLUG_RULE = "letters, digits, '-', '_' and '.' only, not starting with '.', no '..'"


def check_slug(key: str, value: object) -> str:
    """`value` if it is a safe slug; otherwise a ValueError naming `key` (e.g. "dataset.name") and the rule."""
    if not isinstance(value, str) or not SLUG.fullmatch(value) or ".." in value:
        raise ValueError(f"{key}={value!r} cannot be used in file and folder names: use {SLUG_RULE}")
    return value


def under(root: str | Path, path: str | Path, what: str) -> Path:
    """`path`, after checking that it resolves inside `root` (a `what`, e.g. "table cache", about to be written)."""
    root_r, path_r = Path(root).resolve(), Path(path).resolve()
    if not path_r.is_relative_to(root_r):
        raise ValueError(f"{what} {path} resolves to {path_r}, outside {root_r}; refusing to write it")
    return Path(path)
