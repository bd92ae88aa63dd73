"""table.file_sha256: checksum sidecars live under the caller's cache dir and go stale on any in-place rewrite."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from datasets.load import load_dataset
from datasets.table import file_sha256

REPO = Path(__file__).resolve().parents[2]


def test_sidecar_is_written_under_the_given_cache_dir_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The old home of the sidecars was $SEQREC_CACHE (else <repo>/.cache): point it somewhere watchable.
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "env_cache"))
    table_file = tmp_path / "own.csv"
    table_file.write_text("user,item,time\nu,a,1\nu,b,2\nu,c,3\n")
    load_dataset("own", "interactions", tmp_path, tmp_path / "cache", {"path": str(table_file)})
    sidecars = list((tmp_path / "cache" / "sha256").iterdir())
    assert len(sidecars) == 1
    assert sidecars[0].read_text().strip() == hashlib.sha256(table_file.read_bytes()).hexdigest()
    assert not (tmp_path / "env_cache").exists()
    assert not (REPO / ".cache" / "sha256" / sidecars[0].name).exists()


def test_in_place_rewrite_with_same_size_and_mtime_gives_the_new_hash(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"first version\n")
    before = os.stat(path)
    assert file_sha256(path, tmp_path / "cache") == hashlib.sha256(b"first version\n").hexdigest()

    with open(path, "r+b") as f:  # same inode, same size
        f.write(b"other version\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # what cp -p / rsync -t do
    while os.stat(path).st_ctime_ns == before.st_ctime_ns:  # a coarse clock may not have ticked yet
        time.sleep(0.01)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)

    assert file_sha256(path, tmp_path / "cache") == hashlib.sha256(b"other version\n").hexdigest()
    assert len(list((tmp_path / "cache" / "sha256").iterdir())) == 2


def test_without_a_cache_dir_nothing_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"x")
    assert file_sha256(path) == hashlib.sha256(b"x").hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]
