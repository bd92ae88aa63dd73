"""The atomic-write helper: the target holds the old bytes or all the new ones; no temporary is left behind."""
from pathlib import Path

import pytest

from datasets.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_failure_keeps_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_suffix_is_kept_for_writers_that_add_extensions(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "t.npz", suffix=".tmp.npz") as tmp:
        assert tmp.name.endswith(".tmp.npz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "t.npz").read_bytes() == b"x"


def test_the_file_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    import os
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.md", "x")
        (tmp_path / "plain.md").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "r.md").stat().st_mode & 0o777 == (tmp_path / "plain.md").stat().st_mode & 0o777 == 0o644
