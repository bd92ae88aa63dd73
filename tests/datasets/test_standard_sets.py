"""The field's standard sets by name: dataset=sports|toys|yelp|lastfm (shipped S3Rec files), beauty and games
(downloaded: generated stand-ins served from file:// URLs here), the `user item` format, and the offline error."""
from __future__ import annotations

import hashlib
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from datasets import download, fetch
from datasets.load import load_dataset
from datasets.raw_errors import DataFormatError, DataNotFoundError
from datasets.s3rec import choose_categories
from datasets.table import UNKNOWN_CATEGORY

REPO = Path(__file__).resolve().parents[2]
S3REC_COMMIT = "49a890dcb516c9ed3126564495234ea74d5cd566"
# ../shared/data/README.md, section s3rec/: users, items, interactions; categories under the configs' rarest rule
# (Yelp: 942 attributes plus "<unknown>" for its one item with an empty attribute list); repeated items kept.
SHIPPED = {
    "sports": ("Sports_and_Outdoors", 35_598, 18_357, 296_337, 2_160, 0),
    "toys": ("Toys_and_Games", 19_412, 11_924, 167_597, 987, 0),
    "yelp": ("Yelp", 30_431, 20_033, 316_354, 943, 11_830),
    "lastfm": ("LastFM", 1_090, 3_646, 52_551, 352, 0),
}


def dataset_config(name: str):
    """conf/dataset/<name>.yaml as the runner composes it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"dataset={name}"]).dataset


def load_named(name: str, data_root: Path, cache_dir: Path):
    from omegaconf import OmegaConf

    d = dataset_config(name)
    return load_dataset(d.name, d.kind, data_root, cache_dir, OmegaConf.to_container(d.options, resolve=True))


@pytest.fixture(scope="module")
def shipped_tables(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("standard_cache")
    return {name: load_named(name, shared_data, cache) for name in SHIPPED}


def _repeats(table) -> int:
    """Interactions whose item the same user already had earlier in the sequence."""
    return sum(int(hi - lo - len(np.unique(table.items[lo:hi])))
               for lo, hi in zip(table.indptr[:-1], table.indptr[1:]))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_set_has_the_readme_counts_and_loses_nobody(name: str, shipped_tables: dict,
                                                          shared_data: Path) -> None:
    file, users, items, interactions, categories, repeats = SHIPPED[name]
    table = shipped_tables[name]
    assert dataset_config(name).options.file == file
    assert (table.n_users, table.n_items, table.n_interactions) == (users, items, interactions)
    assert table.n_categories == categories
    assert all(v == 0 for v in table.cleaning.values()), table.cleaning  # 5-core files: the data policy keeps all
    assert table.lengths.min() >= 5
    assert _repeats(table) == repeats  # a repeat within a line is a visit at its own position, never a duplicate
    with open(shared_data / "s3rec" / f"{file}.txt") as f:  # the first line, in order, is user 1's history
        first = [int(x) for x in f.readline().split()]
    u = int(np.searchsorted(table.user_keys, f"{first[0]:06d}"))
    row = slice(table.indptr[u], table.indptr[u + 1])
    assert [int(k) for k in table.item_keys[table.items[row]]] == first[1:]
    assert np.array_equal(table.times[row], 86_400 * np.arange(len(first) - 1))


def test_category_rules_on_a_hand_made_attribute_file() -> None:
    # carriers: 5 on three items, 7 and 9 on two, 8 on one (listed twice, counted once)
    attributes = {"1": [5, 7, 9], "2": [5, 7], "3": [5, 9, 8, 8], "4": []}
    assert choose_categories(attributes, "rarest") == {1: 7, 2: 7, 3: 8}  # item 1: 7 and 9 tie, the earlier wins
    assert choose_categories(attributes, "first") == {1: 5, 2: 5, 3: 5}
    assert choose_categories(attributes, "last") == {1: 9, 2: 7, 3: 8}


def _write_s3rec(directory: Path, file: str, lines: list[str], attributes: dict) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    seq, attr = directory / f"{file}.txt", directory / f"{file}_item2attributes.json"
    seq.write_text("\n".join(lines) + "\n")
    attr.write_text(json.dumps(attributes))
    return [seq, attr]


def test_rarest_category_reaches_the_table_and_an_empty_list_is_unknown(tmp_path: Path) -> None:
    _write_s3rec(tmp_path / "s3rec", "Mini", ["1 1 2 3", "2 3 2 1 3", "3 2 4 1"],
                 {"1": [5, 7], "2": [5, 9, 7], "3": [5, 9], "4": []})
    options = {"file": "Mini", "category": "rarest", "download": False, "subdir": "s3rec"}
    table = load_dataset("mini", "s3rec", tmp_path, tmp_path / "cache", options)
    category = {int(k): table.category_keys[c] for k, c in zip(table.item_keys, table.item_category)}
    assert category == {1: "000007", 2: "000009", 3: "000009", 4: UNKNOWN_CATEGORY}  # item 2: a 7/9 tie
    assert table.n_interactions == 10 and table.cleaning["duplicate_rows_dropped"] == 0  # user 2's repeat of 3 stays
    table = load_dataset("mini", "s3rec", tmp_path, tmp_path / "cache", {**options, "category": "none"})
    assert list(table.category_keys) == ["all"]
    with pytest.raises(ValueError, match="category='brand'; expected one of"):
        load_dataset("mini", "s3rec", tmp_path, tmp_path / "cache", {**options, "category": "brand"})


def _stub_manifest(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path], sha256: dict[str, str] | None = None):
    """Manifest entries "<subdir>/<name>" serving each local file through a file:// URL."""
    entries = {key: {"urls": [p.resolve().as_uri()], "size": p.stat().st_size,
                     "sha256": (sha256 or {}).get(key, hashlib.sha256(p.read_bytes()).hexdigest())}
               for key, p in files.items()}
    monkeypatch.setattr(fetch, "load_manifest", lambda: {"files": entries})


def test_beauty_is_downloaded_checked_and_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [" ".join(str(x) for x in [u, *((u + k) % 7 + 1 for k in range(5))]) for u in range(1, 9)]
    src = _write_s3rec(tmp_path / "served", "Beauty", lines, {str(i): [i % 3, 10 + i] for i in range(1, 8)})
    _stub_manifest(monkeypatch, {f"s3rec/{p.name}": p for p in src})
    data_root = tmp_path / "data"
    table = load_named("beauty", data_root, tmp_path / "cache")
    for p in src:  # landed at the exact path the config names, byte for byte
        assert (data_root / "s3rec" / p.name).read_bytes() == p.read_bytes()
    assert (table.n_users, table.n_items, table.n_interactions) == (8, 7, 40)
    assert table.n_categories == 7  # the rarest attribute (10 + i) is each item's own


def test_user_item_format_on_a_generated_file(tmp_path: Path) -> None:
    # interleaved users; time = the line's rank within its user; a repeat (user 1, item 5) stays
    path = tmp_path / "mine.txt"
    path.write_text("2 10\n1 5\n2 11\n1 6\n\n1 7\n2 12\n1 5\n")
    table = load_dataset("mine", "user_item", tmp_path, tmp_path / "cache",
                         {"file": None, "subdir": "sasrec", "download": False, "path": str(path)})
    seqs = {int(table.user_keys[u]): [int(table.item_keys[i]) for i in table.items[lo:hi]]
            for u, (lo, hi) in enumerate(zip(table.indptr[:-1], table.indptr[1:]))}
    assert seqs == {1: [5, 6, 7, 5], 2: [10, 11, 12]}
    assert np.array_equal(table.times[table.indptr[0]:table.indptr[1]], 86_400 * np.arange(4))
    path.write_text("1 5\n1 6 7\n")
    with pytest.raises(DataFormatError, match=r"mine\.txt, line 2: 3 field\(s\)"):
        load_dataset("mine2", "user_item", tmp_path, tmp_path / "cache2", {"file": None, "subdir": "sasrec",
                                                                          "download": False, "path": str(path)})


def test_games_is_downloaded_and_read_as_user_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "served" / "Video.txt"
    src.parent.mkdir()
    src.write_text("".join(f"{u} {i}\n" for i in range(1, 5) for u in (1, 2, 3)) + "4 9\n4 1\n")
    _stub_manifest(monkeypatch, {"sasrec/Video.txt": src})
    cfg = dataset_config("games")
    assert (cfg.kind, cfg.options.file, cfg.options.subdir) == ("user_item", "Video.txt", "sasrec")
    table = load_named("games", tmp_path / "data", tmp_path / "cache")
    assert (tmp_path / "data" / "sasrec" / "Video.txt").read_bytes() == src.read_bytes()
    # user 4 (two actions) falls under the data policy's min_user_interactions=3
    assert (table.n_users, table.n_interactions, table.cleaning["short_users_dropped"]) == (3, 12, 1)


def test_wrong_sha256_is_refused_and_nothing_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write_s3rec(tmp_path / "served", "Beauty", ["1 1 2 3"], {"1": [1]})
    _stub_manifest(monkeypatch, {f"s3rec/{p.name}": p for p in src}, sha256={"s3rec/Beauty.txt": "0" * 64})
    with pytest.raises(DataNotFoundError) as err:
        load_named("beauty", tmp_path / "data", tmp_path / "cache")
    target = (tmp_path / "data" / "s3rec" / "Beauty.txt").resolve()
    assert "sha256 mismatch" in str(err.value) and str(target) in str(err.value)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == ["Beauty_item2attributes.json"]  # no partial file either


def test_offline_error_names_the_exact_path_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def offline(url: str, timeout: float):
        calls.append(url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(download, "_urlopen", offline)
    with pytest.raises(DataNotFoundError) as err:
        load_named("beauty", tmp_path / "data", tmp_path / "cache")
    msg = str(err.value)
    for name in ("Beauty.txt", "Beauty_item2attributes.json"):
        path = (tmp_path / "data" / "s3rec" / name).resolve()
        url = f"https://raw.githubusercontent.com/aHuiWang/CIKM2020-S3Rec/{S3REC_COMMIT}/data/{name}"
        assert f"  - {path}\n" in msg and url in msg and f"wget -O {path} {url}" in msg
    assert "offline" in msg and len(calls) == 2
    with pytest.raises(DataNotFoundError, match="Downloading is off") as err:
        load_dataset("games", "user_item", tmp_path / "data", tmp_path / "cache",
                     {"file": "Video.txt", "subdir": "sasrec", "download": False})
    assert str((tmp_path / "data" / "sasrec" / "Video.txt").resolve()) in str(err.value) and len(calls) == 2


def test_manifest_matches_the_shipped_copies(shared_data: Path) -> None:
    entries = {k: v for k, v in download.load_manifest()["files"].items() if k.startswith("s3rec/")}
    shipped = sorted(p.name for p in (shared_data / "s3rec").iterdir() if not p.name.startswith("Finetune"))
    assert sorted(k.split("/", 1)[1] for k in entries) == sorted(shipped + ["Beauty.txt",
                                                                            "Beauty_item2attributes.json"])
    for name in shipped:
        data = (shared_data / "s3rec" / name).read_bytes()
        entry = entries[f"s3rec/{name}"]
        assert (entry["size"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), name
    assert all(S3REC_COMMIT in url for e in entries.values() for url in e["urls"])
