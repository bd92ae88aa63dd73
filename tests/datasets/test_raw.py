"""datasets/raw.py and the loaders it registers: real public files give the documented counts; bad input gives
errors naming file and line; downloads land atomically or not at all."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets import amazon, amazon_writer, download, raw
from datasets.load import load_dataset

SAMPLE_REL = "amazon_electronics_raw_sample/reviews_Electronics_5.sample.json"
SAMPLE_ASINS = ["0528881469", "0594451647", "0594481813", "0972683275", "1400501466", "1400501520"]
# Meta in the real format: Python literals (single quotes, a title with a double quote inside, several category
# paths where only categories[-1][-1] counts), plus an unreviewed asin and a line whose asin is not the first key.
META_LINES = [
    "{'asin': '0528881469', 'title': 'Rand McNally 528881469 7-inch Intelliroute TND 700 Truck GPS', "
    "'price': 299.99, 'categories': [['Electronics', 'GPS & Navigation', 'Vehicle GPS', 'Trucking GPS']]}",
    "{'asin': '0594451647', 'title': 'Barnes & Noble HDTV Adapter Kit for NOOK HD and NOOK HD+', "
    "'categories': [['Electronics', 'Computers & Accessories', 'Cables & Accessories'], "
    "['Electronics', 'eBook Readers & Accessories', 'Power Adapters']]}",
    "{'asin': '0594481813', 'title': 'Barnes & Noble \"NOOK\" Power Kit', "
    "'categories': [['Electronics', 'eBook Readers & Accessories', 'Power Adapters']]}",
    "{'asin': '0999999999', 'title': 'Nobody reviewed this', 'categories': [['Electronics', 'Not Reviewed']]}",
    "{'asin': '0972683275', 'related': {'also_bought': ['B003ZSHNGS']}, "
    "'categories': [['Electronics', 'Accessories & Supplies', 'Audio & Video Accessories', 'TV Accessories "
    "& Parts', 'TV Ceiling & Wall Mounts']], 'title': u'VideoSecu 24\" Long Arm TV Wall Mount'}",
    "{'title': 'asin not first', 'asin': '1400501466', 'categories': [['Electronics', \"Kids' Tablets\"]]}",
    "{'asin': '1400501520', 'categories': [['Electronics', 'Computers & Accessories', 'Tablets']]}",
]
LEAF = {"0528881469": "Trucking GPS", "0594451647": "Power Adapters", "0594481813": "Power Adapters",
        "0972683275": "TV Ceiling & Wall Mounts", "1400501466": "Kids' Tablets", "1400501520": "Tablets"}


def _write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def _amazon_dir(tmp_path: Path, shared_data: Path, gz: bool = True, reviews: bytes | None = None,
                meta: bytes | None = None) -> Path:
    """data_root with amazon/reviews_Electronics_5.json(.gz) + meta_Electronics.json(.gz)."""
    data_root = tmp_path / "data"
    d = data_root / "amazon"
    d.mkdir(parents=True)
    reviews = (shared_data / SAMPLE_REL).read_bytes() if reviews is None else reviews
    meta = ("\n".join(META_LINES) + "\n").encode() if meta is None else meta
    for name, data in (("reviews_Electronics_5.json", reviews), ("meta_Electronics.json", meta)):
        if gz:
            _write_gz(d / (name + ".gz"), data)
        else:
            (d / name).write_bytes(data)
    return data_root


def _parse(kind: str, data_root: Path, tmp_path: Path, **options) -> raw.RawData:
    files, parse = raw.prepare(kind, data_root, tmp_path / "cache", **options)
    return parse()


# ---------------------------------------------------------------------------------------------------------------
# The real public files: counts from the shared data README.

def test_clothing_seq_counts(shared_data: Path, tmp_path: Path) -> None:
    table = load_dataset("clothing_seq", "clothing_seq", shared_data, cache_dir=tmp_path)
    assert table.stats() == {"users": 39_387, "items": 23_033, "categories": 1, "interactions": 278_677}
    assert list(table.category_keys) == ["all"]
    first = table.times[table.indptr[0]:table.indptr[1]]
    assert list(first) == [86_400 * k for k in range(len(first))]  # time = 86400 x position


def test_amazon_hin_counts(shared_data: Path, tmp_path: Path) -> None:
    table = load_dataset("amazon_hin", "amazon_hin", shared_data, cache_dir=tmp_path)
    assert table.stats() == {"users": 6_170, "items": 2_753, "categories": 16, "interactions": 195_791}
    # zero-padded ids: sorted-string order is numeric order
    assert list(table.item_keys[:3]) == ["000000", "000001", "000002"]
    assert list(table.user_keys[-2:]) == ["006168", "006169"]
    # item 0 has rows "0,0" then "0,1": its LAST row gives category 1
    assert table.category_keys[table.item_category[0]] == "000001"
    counts = np.bincount(table.item_category)
    assert sorted(counts)[-2:] == [412, 2_310]
    assert set(np.unique(table.ratings)) == {1, 2, 3, 4, 5}


def test_grocery_counts(shared_data: Path, tmp_path: Path) -> None:
    table = load_dataset("grocery", "grocery", shared_data, cache_dir=tmp_path)
    assert table.stats() == {"users": 14_681, "items": 8_713, "categories": 57, "interactions": 151_254}
    assert list(table.user_keys[:2]) == ["000001", "000002"]
    assert (table.lengths >= 5).all()


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_electronics_raw_sample_through_amazon_parser(shared_data: Path, tmp_path: Path, gz: bool) -> None:
    data_root = _amazon_dir(tmp_path, shared_data, gz=gz)
    files, parse = raw.prepare("amazon", data_root, tmp_path / "cache", category="Electronics", download=False)
    suffix = ".json.gz" if gz else ".json"
    assert [f.name for f in files] == [f"reviews_Electronics_5{suffix}", f"meta_Electronics{suffix}"]
    data = parse()
    assert len(data.reviews) == 290
    assert data.reviews["user"].nunique() == 289
    assert sorted(data.reviews["item"].unique()) == SAMPLE_ASINS
    first = data.reviews.iloc[0]
    assert (first["user"], first["item"], first["time"], first["rating"]) == ("AO94DHGC771SJ", "0528881469",
                                                                                1370131200, 5.0)
    assert dict(zip(data.meta["item"], data.meta["category"])) == LEAF  # unreviewed 0999999999 dropped
    assert data.expected == raw.AMAZON_EXPECTED["Electronics"]

    table = load_dataset("electronics_sample", "amazon", data_root, cache_dir=tmp_path / "cache",
                         options={"category": "Electronics", "download": False, "min_user_interactions": 1})
    assert (table.n_users, table.n_items, table.n_interactions, table.n_categories) == (289, 6, 290, 5)
    assert {k: table.category_keys[c] for k, c in zip(table.item_keys, table.item_category)} == LEAF


def test_sample_kind_loads_through_amazon_parser(tmp_path: Path) -> None:
    files, parse = raw.prepare("sample", tmp_path / "unused", tmp_path / "cache", n_users=200, n_items=150,
                               n_categories=8, seed=3)
    assert [f.name for f in files] == ["reviews_Sample_5.json.gz", "meta_Sample.json.gz"]
    assert files[0].parent.parent == tmp_path / "cache"
    data = parse()
    assert data.reviews["user"].nunique() == 200 and data.reviews["item"].nunique() == 150
    assert data.meta["category"].nunique() == 8
    mtime = files[0].stat().st_mtime_ns
    files2, _ = raw.prepare("sample", tmp_path / "unused", tmp_path / "cache", n_users=200, n_items=150,
                            n_categories=8, seed=3)
    assert files2 == files and files[0].stat().st_mtime_ns == mtime  # reused, not rewritten


def test_interactions_csv_tsv_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"uid": [10, 10, 10, 2, 2, 2], "iid": [7, 8, 9, 7, 100, 9],
                       "ts": [30, 10, 20, 5, 6, 7], "cat": ["x", "y", "y", "z", "y", "y"],
                       "stars": [5, 4, 3, 1, 2, 5]})
    opts = dict(user_col="uid", item_col="iid", time_col="ts", category_col="cat", rating_col="stars")
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_csv(tmp_path / "a.tsv", index=False, sep="\t")
    df.to_parquet(tmp_path / "a.parquet")
    for name in ("a.csv", "a.tsv", "a.parquet"):
        data = _parse("interactions", tmp_path, tmp_path, path=tmp_path / name, **opts)
        assert list(data.reviews["user"]) == ["000010"] * 3 + ["000002"] * 3, name
        assert list(data.reviews["item"])[:2] == ["000007", "000008"], name
        assert list(data.reviews["time"]) == [30, 10, 20, 5, 6, 7], name
        assert list(data.reviews["rating"]) == [5, 4, 3, 1, 2, 5], name
        assert dict(zip(data.meta["item"], data.meta["category"]))["000007"] == "z", name  # last row wins
    table = load_dataset("own", "interactions", tmp_path, cache_dir=tmp_path / "c",
                         options={"path": str(tmp_path / "a.csv"), **opts})
    assert table.stats() == {"users": 2, "items": 4, "categories": 2, "interactions": 6}  # x was overridden
    # string ids and ISO dates
    pd.DataFrame({"user": ["u1"] * 3, "item": ["a", "b", "c"],
                  "time": ["2014-01-02", "2014-01-01", "2014-01-03"]}).to_csv(tmp_path / "b.csv", index=False)
    data = _parse("interactions", tmp_path, tmp_path, path="b.csv")
    assert list(data.reviews["time"]) == [1388620800, 1388534400, 1388707200]
    assert list(data.meta["category"]) == ["all"] * 3


def test_unknown_kind_and_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known kinds"):
        raw.prepare("nope", tmp_path, tmp_path)
    with pytest.raises(TypeError, match="categroy"):
        raw.prepare("amazon", tmp_path, tmp_path, categroy="Electronics")


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the message names the file and the 1-based line, and says what was expected.

def _sample_lines(shared_data: Path) -> list[bytes]:
    return (shared_data / SAMPLE_REL).read_bytes().splitlines(keepends=True)


def _assert_names(err: pytest.ExceptionInfo, path: Path, line: int | None) -> str:
    msg = str(err.value)
    assert str(path) in msg, msg
    if line is not None:
        assert f"line {line}" in msg, msg
    assert "expected" in msg, msg
    return msg


def test_malformed_json_line(shared_data: Path, tmp_path: Path) -> None:
    lines = _sample_lines(shared_data)
    lines[2] = lines[2][:50] + b"\n"
    data_root = _amazon_dir(tmp_path, shared_data, reviews=b"".join(lines))
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon", data_root, tmp_path, download=False)
    msg = _assert_names(err, data_root / "amazon" / "reviews_Electronics_5.json.gz", 3)
    assert "not valid JSON" in msg


def test_missing_key(shared_data: Path, tmp_path: Path) -> None:
    lines = _sample_lines(shared_data)
    row = json.loads(lines[4])
    del row["unixReviewTime"]
    lines[4] = (json.dumps(row) + "\n").encode()
    data_root = _amazon_dir(tmp_path, shared_data, reviews=b"".join(lines), gz=False)
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon", data_root, tmp_path, download=False)
    msg = _assert_names(err, data_root / "amazon" / "reviews_Electronics_5.json", 5)
    assert "unixReviewTime" in msg


def test_fast_and_line_parsers_agree(shared_data: Path, tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "r.json.gz", (shared_data / SAMPLE_REL).read_bytes())
    pd.testing.assert_frame_equal(amazon._parse_reviews_arrow(path), amazon._parse_reviews_lines(path))


def test_reviews_edge_cases_blank_lines_and_missing_rating(shared_data: Path, tmp_path: Path) -> None:
    lines = _sample_lines(shared_data)
    row = json.loads(lines[1])
    del row["overall"]
    lines[1] = (json.dumps(row) + "\n").encode()
    lines.insert(3, b"\n")  # a blank line is skipped, not an error
    data_root = _amazon_dir(tmp_path, shared_data, reviews=b"".join(lines))
    data = _parse("amazon", data_root, tmp_path, download=False)
    assert len(data.reviews) == 290 and np.isnan(data.reviews["rating"].iloc[1])


@pytest.mark.parametrize("bad", ["two_objects", "wrong_type", "not_object"])
def test_bad_review_lines(shared_data: Path, tmp_path: Path, bad: str) -> None:
    lines = _sample_lines(shared_data)
    lines[6] = {"two_objects": lines[6].rstrip(b"\n") + lines[7],
                "wrong_type": lines[6].replace(b'"unixReviewTime": 1', b'"unixReviewTime": "1').replace(
                    b', "reviewTime"', b'", "reviewTime"'),
                "not_object": b"[1, 2, 3]\n"}[bad]
    data_root = _amazon_dir(tmp_path, shared_data, reviews=b"".join(lines))
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon", data_root, tmp_path, download=False)
    _assert_names(err, data_root / "amazon" / "reviews_Electronics_5.json.gz", 7)


def test_meta_line_literal_eval_rejects(shared_data: Path, tmp_path: Path) -> None:
    meta = list(META_LINES)
    meta[1] = meta[1][:-1]  # drop the closing brace
    data_root = _amazon_dir(tmp_path, shared_data, meta=("\n".join(meta) + "\n").encode())
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon", data_root, tmp_path, download=False)
    _assert_names(err, data_root / "amazon" / "meta_Electronics.json.gz", 2)


def test_meta_missing_categories(shared_data: Path, tmp_path: Path) -> None:
    meta = list(META_LINES) + ["{'asin': '0528881469', 'title': 'no categories'}"]
    data_root = _amazon_dir(tmp_path, shared_data, meta=("\n".join(meta) + "\n").encode())
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon", data_root, tmp_path, download=False)
    assert "categories" in _assert_names(err, data_root / "amazon" / "meta_Electronics.json.gz", 8)


def test_truncated_gzip(shared_data: Path, tmp_path: Path) -> None:
    data_root = _amazon_dir(tmp_path, shared_data)
    path = data_root / "amazon" / "reviews_Electronics_5.json.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon", data_root, tmp_path, download=False)
    msg = _assert_names(err, path, None)
    line = int(msg.split("line ")[1].split(":")[0])
    assert 1 < line <= 290 and "truncated" in msg


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_empty_file(shared_data: Path, tmp_path: Path, gz: bool) -> None:
    data_root = _amazon_dir(tmp_path, shared_data, reviews=b"", gz=gz)
    path = data_root / "amazon" / ("reviews_Electronics_5.json" + (".gz" if gz else ""))
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon", data_root, tmp_path, download=False)
    assert "empty" in _assert_names(err, path, 1)


def test_wrong_path_amazon_says_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(raw.DataNotFoundError) as err:
        raw.prepare("amazon", tmp_path / "nowhere", tmp_path, category="Clothing_Shoes_and_Jewelry", download=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for name in ("reviews_Clothing_Shoes_and_Jewelry_5.json.gz", "meta_Clothing_Shoes_and_Jewelry.json.gz"):
        assert name in msg
        for url in raw.load_manifest()["files"][name]["urls"]:
            assert url in msg
    assert str((tmp_path / "nowhere" / "amazon").resolve()) in msg


@pytest.mark.parametrize("kind", ["clothing_seq", "amazon_hin", "grocery"])
def test_wrong_path_shared_loaders(tmp_path: Path, kind: str) -> None:
    with pytest.raises(raw.DataNotFoundError) as err:
        raw.prepare(kind, tmp_path / "nowhere", tmp_path)
    assert str((tmp_path / "nowhere").resolve()) in str(err.value)


def _copy_shared(shared_data: Path, tmp_path: Path, folder: str) -> Path:
    shutil.copytree(shared_data / folder, tmp_path / "data" / folder)
    for p in (tmp_path / "data" / folder).iterdir():
        p.chmod(0o644)
    return tmp_path / "data"


def _replace_line(path: Path, lineno: int, new: bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[lineno - 1] = new
    path.write_bytes(b"".join(lines))


def test_bad_row_amazon_hin(shared_data: Path, tmp_path: Path) -> None:
    data_root = _copy_shared(shared_data, tmp_path, "amazon_hin")
    path = data_root / "amazon_hin" / "user_item.dat"
    _replace_line(path, 4, b"28\t2645\t5\n")
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon_hin", data_root, tmp_path)
    _assert_names(err, path, 4)
    _replace_line(path, 4, b"28\t2645\tfive\t1387670400\n")
    with pytest.raises(raw.DataFormatError) as err:
        _parse("amazon_hin", data_root, tmp_path)
    assert "rating" in _assert_names(err, path, 4)


def test_bad_row_grocery(shared_data: Path, tmp_path: Path) -> None:
    data_root = _copy_shared(shared_data, tmp_path, "grocery_rechorus")
    path = data_root / "grocery_rechorus" / "test.csv"
    _replace_line(path, 7, b"6185;762;1149206400\r\n")
    with pytest.raises(raw.DataFormatError) as err:
        _parse("grocery", data_root, tmp_path)
    _assert_names(err, path, 7)


def test_bad_row_clothing_seq(tmp_path: Path) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("U1 a b c d e\nU2 a b c d e\nU3\n")
    with pytest.raises(raw.DataFormatError) as err:
        _parse("clothing_seq", tmp_path, tmp_path, path=path)
    _assert_names(err, path, 3)


def test_bad_row_interactions(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("user,item,time\nu,a,1\nu,b,2\nu,c,yesterday\n")
    with pytest.raises(raw.DataFormatError) as err:
        _parse("interactions", tmp_path, tmp_path, path=path)
    _assert_names(err, path, 4)
    path.write_text("user,item,when\nu,a,1\n")
    with pytest.raises(raw.DataFormatError) as err:
        _parse("interactions", tmp_path, tmp_path, path=path)
    assert "when" in _assert_names(err, path, 1)


# ---------------------------------------------------------------------------------------------------------------
# Download: atomic, verified, and a clear error when offline.

class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, fail_after: int | None = None):
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection dropped")
        return super().read(min(n, 1000) if n and n > 0 else n)


def _manifest(tmp_path: Path, reviews: bytes, size: int | None = None, sha256: str | None = None) -> dict:
    return {"files": {
        "reviews_Electronics_5.json.gz": {"urls": ["http://a.example/r.gz", "http://b.example/r.gz"],
                                          "size": size, "sha256": sha256},
        "meta_Electronics.json.gz": {"urls": ["http://a.example/m.gz"], "size": None, "sha256": None},
    }}


def _serve(monkeypatch: pytest.MonkeyPatch, blobs: dict[str, bytes], calls: list, fail_after: int | None = None):
    def opener(url: str, timeout: float):
        calls.append((url, timeout))
        if url not in blobs:
            raise urllib.error.URLError("offline")
        return _FakeResponse(blobs[url], fail_after)
    monkeypatch.setattr(download, "_urlopen", opener)


def test_download_offline_error_names_files_urls_and_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    _serve(monkeypatch, {}, calls)
    with pytest.raises(raw.DataNotFoundError) as err:
        raw.prepare("amazon", tmp_path / "data", tmp_path, category="Electronics")
    msg = str(err.value)
    manifest = raw.load_manifest()["files"]
    for name in ("reviews_Electronics_5.json.gz", "meta_Electronics.json.gz"):
        assert name in msg
        for url in manifest[name]["urls"]:
            assert url in msg
    assert "offline" in msg and str((tmp_path / "data" / "amazon").resolve()) in msg
    assert all(timeout <= 60 for _, timeout in calls) and len(calls) == 6
    assert list((tmp_path / "data" / "amazon").iterdir()) == []  # no partial files


def _gz_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def test_download_lands_atomically_and_parses(shared_data: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    reviews = _gz_bytes((shared_data / SAMPLE_REL).read_bytes())
    meta = _gz_bytes(("\n".join(META_LINES) + "\n").encode())
    monkeypatch.setattr(amazon, "load_manifest", lambda: _manifest(tmp_path, reviews, len(reviews),
                                                                hashlib.sha256(reviews).hexdigest()))
    calls: list = []
    # first URL offline, second one serves: the loader falls through the list
    _serve(monkeypatch, {"http://b.example/r.gz": reviews, "http://a.example/m.gz": meta}, calls)
    files, parse = raw.prepare("amazon", tmp_path / "data", tmp_path, category="Electronics")
    assert files[0].read_bytes() == reviews and files[1].read_bytes() == meta
    assert sorted(p.name for p in files[0].parent.iterdir()) == sorted(f.name for f in files)  # no temp left
    assert len(parse().reviews) == 290
    n_calls = len(calls)
    raw.prepare("amazon", tmp_path / "data", tmp_path, category="Electronics")
    assert len(calls) == n_calls  # present files are not fetched again


@pytest.mark.parametrize("bad", ["size", "sha256"])
def test_download_mismatch_is_rejected_and_removed(shared_data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    reviews = _gz_bytes((shared_data / SAMPLE_REL).read_bytes())
    size = len(reviews) + (1 if bad == "size" else 0)
    sha = "0" * 64 if bad == "sha256" else hashlib.sha256(reviews).hexdigest()
    monkeypatch.setattr(amazon, "load_manifest", lambda: _manifest(tmp_path, reviews, size, sha))
    _serve(monkeypatch, {"http://a.example/r.gz": reviews, "http://a.example/m.gz": _gz_bytes(b"{}\n")}, [])
    with pytest.raises(raw.DataNotFoundError) as err:
        raw.prepare("amazon", tmp_path / "data", tmp_path, category="Electronics")
    assert f"{bad} mismatch" in str(err.value)
    assert [p.name for p in (tmp_path / "data" / "amazon").iterdir()] == ["meta_Electronics.json.gz"]


def test_download_interrupted_leaves_nothing(shared_data: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    reviews = _gz_bytes((shared_data / SAMPLE_REL).read_bytes())
    monkeypatch.setattr(amazon, "load_manifest", lambda: _manifest(tmp_path, reviews))
    _serve(monkeypatch, {"http://a.example/r.gz": reviews, "http://a.example/m.gz": reviews}, [], fail_after=3000)
    with pytest.raises(raw.DataNotFoundError) as err:
        raw.prepare("amazon", tmp_path / "data", tmp_path, category="Electronics")
    assert "connection dropped" in str(err.value)
    assert list((tmp_path / "data" / "amazon").iterdir()) == []


def test_sample_generation_crash_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = amazon_writer._write_gzip
    calls = []

    def crash_on_second_file(path, lines, compresslevel):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(path, lines, compresslevel)
    monkeypatch.setattr(amazon_writer, "_write_gzip", crash_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        raw.prepare("sample", tmp_path, tmp_path / "cache", n_users=50, n_items=60, n_categories=4)
    assert list((tmp_path / "cache").iterdir()) == []
