"""Real-world exports that used to be rejected or misread: each case ends in a table or in an error that names
the file, the line and what was expected, and nothing is cached for a file that failed."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest

from datasets.load import load_dataset
from datasets.raw_errors import DataFormatError

ROWS = "user,item,time\n" + "".join(f"u{u},i{i},{100 * u + i}\n" for u in range(4) for i in range(5))


def load(tmp_path: Path, path: Path, **options):
    return load_dataset("mine", "interactions", tmp_path, tmp_path / "cache", options={"path": str(path), **options})


def assert_error(tmp_path: Path, path: Path, *parts: str) -> str:
    with pytest.raises(DataFormatError) as err:
        load(tmp_path, path)
    text = str(err.value)
    assert text.startswith(str(path)), text
    for part in parts:
        assert part in text, (part, text)
    assert not list((tmp_path / "cache").glob("table_*.npz"))  # nothing cached for a file that failed
    return text


def test_utf8_bom_header_is_read(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ROWS.encode())
    assert load(tmp_path, path).stats()["interactions"] == 20


def test_a_line_with_too_many_fields_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    lines = ROWS.splitlines(keepends=True)
    lines[7] = lines[7].rstrip("\n") + ",extra\n"
    path.write_text("".join(lines))
    assert_error(tmp_path, path, "line 8: 4 fields, expected 3", "'user,item,time'")


def test_gzip_bytes_in_a_csv_are_read_as_gzip(tmp_path: Path) -> None:
    path = tmp_path / "really_gzip.csv"
    path.write_bytes(gzip.compress(ROWS.encode()))
    assert load(tmp_path, path).stats()["interactions"] == 20


def test_a_decode_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    lines = ROWS.encode().splitlines(keepends=True)
    lines[5] = lines[5].replace(b"i4", b"caf\xe9")
    path.write_bytes(b"".join(lines))
    assert_error(tmp_path, path, "line 6 (byte", "not UTF-8", "UnicodeDecodeError")


def test_a_truncated_gzip_names_the_line_where_it_stops(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    data = gzip.compress((ROWS * 50).encode())
    path.write_bytes(data[: len(data) // 2])
    complete = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2]).count(b"\n")  # lines before the cut
    assert_error(tmp_path, path, f"line {complete + 1}: the gzip stream is truncated")


def test_mixed_date_formats_say_which_lines_mix(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(ROWS.replace("u1,i2,102", "u1,i2,2014-01-02"))
    assert_error(tmp_path, path, "mixes unix timestamps ('0', line 2) and dates ('2014-01-02', line 9)")


def test_every_row_twice_is_deduplicated_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "twice.csv"
    body = ROWS.split("\n", 1)[1]
    path.write_text("user,item,time\n" + body + body)
    table = load(tmp_path, path)
    assert table.stats()["interactions"] == 20 and table.cleaning["duplicate_rows_dropped"] == 20
    assert load(tmp_path, path, duplicates="keep").stats()["interactions"] == 40


def test_short_users_are_dropped_with_a_count_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text(ROWS + "lonely,i0,5\n")
    table = load(tmp_path, path)
    assert table.n_users == 4 and table.cleaning["short_users_dropped"] == 1
