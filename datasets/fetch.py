"""Named public files under <data_root>/<subdir>/: found, or downloaded from datasets/manifest.json, or a clear error.

Manifest keys are "<subdir>/<file name>" (e.g. "s3rec/Beauty.txt"), so two collections that publish a file under
the same name (S3Rec's and SASRec's Beauty.txt differ) never share an entry. Downloads go through
datasets/download.py: size and sha256 checked, nothing left under the final name unless verified.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets.download import DownloadFailed, download_file, load_manifest
from datasets.raw_errors import DataNotFoundError


def manifest_key(subdir: str, name: str) -> str:
    """The manifest entry of file `name` of collection folder `subdir`."""
    return f"{subdir}/{name}"


def fetch_files(directory: Path, subdir: str, names: list[str], what: str, download: bool) -> list[Path]:
    """directory/name for each of `names`, downloading the missing ones (when `download`) from the manifest
    entries "<subdir>/<name>"; DataNotFoundError naming each exact path to put a file at otherwise."""
    paths = [directory / n for n in names]
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return paths
    manifest: dict[str, Any] = load_manifest()["files"]
    attempts: dict[Path, list[str]] = {}
    for p in missing:
        entry = manifest.get(manifest_key(subdir, p.name))
        if not download:
            continue
        if entry is None:
            attempts[p] = [f"no entry {manifest_key(subdir, p.name)!r} in datasets/manifest.json, so no URL is known"]
            continue
        try:
            download_file(p.name, directory, entry)
        except DownloadFailed as e:
            attempts[p] = e.reasons
    still = [p for p in missing if not p.is_file()]
    if still:
        raise DataNotFoundError(_missing_message(what, subdir, still, manifest, attempts, download))
    return paths


def _missing_message(what: str, subdir: str, missing: list[Path], manifest: dict[str, Any],
                     attempts: dict[Path, list[str]], download: bool) -> str:
    lines = [f"{what}: missing input file(s):"]
    wgets = []
    for p in missing:
        lines.append(f"  - {p.resolve()}")
        urls = manifest.get(manifest_key(subdir, p.name), {}).get("urls", [])
        lines += [f"      get it from: {u}" for u in urls] or [
            f"      no URL known: no entry {manifest_key(subdir, p.name)!r} in datasets/manifest.json"]
        lines += [f"      download failed: {r}" for r in attempts.get(p, [])]
        if urls:
            wgets.append(f"wget -O {p.resolve()} {urls[0]}")
    if not download:
        lines.append("Downloading is off (download=false).")
    lines.append("Put each file at exactly the path listed above (or point paths.data_root elsewhere).")
    if wgets:
        lines.append(f"e.g.  mkdir -p {missing[0].parent.resolve()} && " + " && ".join(wgets))
    return "\n".join(lines)
