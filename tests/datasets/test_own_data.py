"""dataset=interactions on the four shapes users' data comes in, each from a real file of the shared data folder:
a CSV/Parquet table, one line per user (with and without a timestamp file), and RecBole's .inter (+ .item),
written here from the grocery files. Bad input names the file and the line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets import raw
from datasets.load import load_dataset
from datasets.raw_errors import DataFormatError

CLOTHING = "amazon_clothing_seq/user_sequence.txt"
ELECTRONICS_CSV = "electronics_sample_csv/amazon_electronics_sample.csv"


def parse(tmp_path: Path, shared_data: Path, **options) -> raw.RawData:
    files, thunk = raw.prepare("interactions", shared_data, tmp_path / "cache", **options)
    return thunk()


def head_lines(src: Path, dst: Path, n: int) -> Path:
    with open(src) as f:
        dst.write_text("".join(next(f) for _ in range(n)))
    return dst


def test_table_csv_and_parquet_give_the_same_table(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / ELECTRONICS_CSV
    df = pd.read_csv(src)
    df.to_parquet(tmp_path / "e.parquet")
    opts = dict(user_col="user_id", item_col="item_id", category_col="cate_id")
    tables = [load_dataset("mine", "interactions", shared_data, tmp_path / "c", options={"path": str(p), **opts})
              for p in (src, tmp_path / "e.parquet")]
    kept = df.groupby("user_id").filter(lambda g: len(g) >= 3)  # the table stage's minimum history
    assert tables[0].stats() == {"users": kept.user_id.nunique(), "items": kept.item_id.nunique(),
                                 "categories": kept.cate_id.nunique(), "interactions": len(kept)}
    for field in ("indptr", "items", "times", "item_category"):
        assert np.array_equal(getattr(tables[0], field), getattr(tables[1], field)), field


def test_sequence_file_time_is_position(shared_data: Path, tmp_path: Path) -> None:
    path = head_lines(shared_data / CLOTHING, tmp_path / "seq.txt", 500)
    data = parse(tmp_path, shared_data, path=path)
    first = path.read_text().splitlines()[0].split()
    rows = data.reviews[data.reviews["user"] == first[0]]
    assert list(rows["item"]) == first[1:]
    assert list(rows["time"]) == [86_400 * k for k in range(len(first) - 1)]
    assert len(data.reviews) == sum(len(line.split()) - 1 for line in path.read_text().splitlines())
    assert set(data.meta["category"]) == {"all"}


def test_sequence_file_with_a_parallel_timestamp_file(shared_data: Path, tmp_path: Path) -> None:
    path = head_lines(shared_data / CLOTHING, tmp_path / "seq.txt", 50)
    lines = [line.split() for line in path.read_text().splitlines()]
    times = tmp_path / "times.txt"
    times.write_text("".join(f"{p[0]} " + " ".join(str(1_400_000_000 + 3600 * k) for k in range(len(p) - 1)) + "\n"
                             for p in lines))
    data = parse(tmp_path, shared_data, path=path, times_path=times)
    assert list(data.reviews["time"][: len(lines[0]) - 1]) == [1_400_000_000 + 3600 * k for k in range(len(lines[0]) - 1)]
    bad = tmp_path / "bad_times.txt"
    bad.write_text(times.read_text().replace(f"{lines[3][0]} ", "someone_else ", 1))
    with pytest.raises(DataFormatError, match=rf"bad_times.txt, line 4: expected .*user '{lines[3][0]}'"):
        parse(tmp_path, shared_data, path=path, times_path=bad)


def write_recbole(shared_data: Path, tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """grocery's train.csv as grocery.inter and its item_meta.csv as grocery.item, in RecBole's typed form."""
    train = pd.read_csv(shared_data / "grocery_rechorus/train.csv", sep="\t")
    meta = pd.read_csv(shared_data / "grocery_rechorus/item_meta.csv", sep="\t")
    inter, item = tmp_path / "grocery.inter", tmp_path / "grocery.item"
    train.rename(columns={"user_id": "user_id:token", "item_id": "item_id:token", "time": "timestamp:float"}
                 ).assign(**{"rating:float": 5.0}).to_csv(inter, sep="\t", index=False)
    meta[["item_id", "i_category"]].assign(i_category=lambda d: "root " + d.i_category.astype(str)).rename(
        columns={"item_id": "item_id:token", "i_category": "categories:token_seq"}).to_csv(item, sep="\t", index=False)
    return inter, item, train.merge(meta[["item_id", "i_category"]], on="item_id", how="left")


def test_recbole_inter_and_item(shared_data: Path, tmp_path: Path) -> None:
    inter, item, expected = write_recbole(shared_data, tmp_path)
    opts = dict(user_col="user_id", item_col="item_id", time_col="timestamp", rating_col="rating",
                category_col="categories", item_path=str(item))
    data = parse(tmp_path, shared_data, path=inter, **opts)
    assert len(data.reviews) == len(expected) and data.reviews["rating"].eq(5.0).all()
    assert list(data.reviews["time"][:3]) == list(expected["time"][:3])
    cats = dict(zip(data.meta["item"], data.meta["category"]))
    first = data.reviews["item"].iloc[0]
    assert cats[first] == str(expected["i_category"].iloc[0])  # token_seq "root <c>": the last token
    table = load_dataset("mine", "interactions", shared_data, tmp_path / "c", options={"path": str(inter), **opts})
    assert table.n_categories == expected.groupby("item_id").i_category.last().nunique()


def test_recbole_header_errors_name_the_file_and_line(shared_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "x.inter"
    bad.write_text("user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DataFormatError, match=r"x.inter, line 1: header cell 'user_id' is not RecBole's 'name:type'"):
        parse(tmp_path, shared_data, path=bad, user_col="user_id", item_col="item_id", time_col="timestamp")
    bad.write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(DataFormatError, match=r"x.inter, line 1: missing field\(s\) \['timestamp'\]"):
        parse(tmp_path, shared_data, path=bad, user_col="user_id", item_col="item_id", time_col="timestamp")


def test_unknown_suffix_asks_for_a_format(shared_data: Path, tmp_path: Path) -> None:
    odd = tmp_path / "data.dat"
    odd.write_text("u i t\n")
    with pytest.raises(DataFormatError, match=r"data.dat: cannot tell the format .* format=table\|sequence\|recbole"):
        parse(tmp_path, shared_data, path=odd)
    data = parse(tmp_path, shared_data, path=head_lines(shared_data / CLOTHING, tmp_path / "s.dat", 5),
                 format="sequence")
    with open(shared_data / CLOTHING) as f:  # one review per item of the first 5 lines
        assert len(data.reviews) == sum(len(next(f).split()) - 1 for _ in range(5))
