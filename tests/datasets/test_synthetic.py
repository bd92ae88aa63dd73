"""datasets/synthetic.py: deterministic, 5-core, no repeats, Electronics-shaped, and with a planted sequential
signal that a sequence model can use and a non-sequential one cannot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets import raw, synthetic
from datasets.load import load_dataset
from datasets.table import Table


@pytest.fixture(scope="module")
def sample_table(tmp_path_factory: pytest.TempPathFactory) -> Table:
    """The default embedded sample, through load_dataset (generated, written as raw files, parsed, tabled)."""
    tmp = tmp_path_factory.mktemp("sample")
    return load_dataset("sample", "sample", tmp / "unused", cache_dir=tmp / "cache")


def test_sample_files_are_deterministic(tmp_path: Path) -> None:
    def files(seed: int, where: str) -> list[bytes]:
        paths, _ = raw.prepare("sample", tmp_path, tmp_path / where, n_users=300, n_items=200, n_categories=10,
                               seed=seed)
        return [p.read_bytes() for p in paths]

    first = files(0, "a")
    assert files(0, "b") == first  # same seed, fresh cache: identical bytes
    other = files(1, "c")
    assert other[0] != first[0] and other[1] != first[1]


def test_sample_shape(sample_table: Table) -> None:
    t = sample_table
    assert (t.n_users, t.n_items, t.n_categories) == (3000, 1500, 40)
    assert t.lengths.min() >= 5
    assert 5 <= np.median(t.lengths) <= 7 and t.lengths.max() >= 50  # long tail
    for u in range(t.n_users):  # no item twice within a user
        h = t.items[t.indptr[u]:t.indptr[u + 1]]
        assert len(np.unique(h)) == len(h)
    counts = np.bincount(t.items, minlength=t.n_items)
    assert counts.min() >= 5 and counts.max() > 20 * np.median(counts)  # 5-core, long-tailed popularity
    days = t.times // 86_400
    assert (t.times % 86_400 == 0).all()
    gaps = np.concatenate([np.diff(days[t.indptr[u]:t.indptr[u + 1]]) for u in range(200)])
    assert (gaps >= 0).all() and 0.02 < (gaps == 0).mean() < 0.3 and np.median(gaps) >= 3


def test_planted_sequential_dependence(sample_table: Table) -> None:
    t = sample_table
    cat = t.item_category[t.items]
    same_user = np.ones(len(t.items) - 1, dtype=bool)
    same_user[t.indptr[1:-1] - 1] = False  # pairs across a user boundary
    frac_same = (cat[1:] == cat[:-1])[same_user].mean()
    share = np.bincount(cat) / len(cat)
    chance = (share ** 2).sum()
    assert frac_same > 0.5 and frac_same > 5 * chance, (frac_same, chance)

    # Next-item hit rate @10 on each user's last item: "most frequent successor of the previous item" (a first-order
    # sequence model, fitted on the other positions) vs. global popularity (non-sequential).
    last = t.indptr[1:] - 1
    is_last = np.zeros(len(t.items), dtype=bool)
    is_last[last] = True
    train_pairs = same_user & ~is_last[1:]
    prev, nxt = t.items[:-1][train_pairs], t.items[1:][train_pairs]
    bigram = np.zeros((t.n_items, t.n_items), dtype=np.int32)
    np.add.at(bigram, (prev, nxt), 1)
    pop_top = np.argsort(-np.bincount(t.items[~is_last], minlength=t.n_items))[:10]
    seq_top = np.argsort(-bigram[t.items[last - 1]], axis=1)[:, :10]
    hr_seq = (seq_top == t.items[last][:, None]).any(axis=1).mean()
    hr_pop = np.isin(t.items[last], pop_top).mean()
    assert hr_seq > 0.25 and hr_seq > 3 * hr_pop, (hr_seq, hr_pop)


def test_electronics_like_scaled_shape() -> None:
    data = synthetic.electronics_like(seed=1, scale=0.05)
    reviews = data.reviews
    assert data.expected == {"users": 9_620, "items": 3_150, "categories": 40, "interactions": 84_459}
    assert reviews["user"].nunique() == 9_620 and reviews["item"].nunique() == 3_150
    assert data.meta["category"].nunique() == 40 and len(reviews) == 84_459
    lengths = reviews.groupby("user").size()
    assert lengths.min() == 5 and 5 <= lengths.median() <= 7 and lengths.max() >= 100
    assert not reviews.duplicated(["user", "item"]).any()
    assert reviews.groupby("item").size().min() >= 5
    assert (reviews["item"].to_numpy()[:-1] <= reviews["item"].to_numpy()[1:]).all()  # raw-file order: by asin


@pytest.mark.slow
def test_electronics_like_full_size() -> None:
    data = synthetic.electronics_like()
    assert data.expected == {"users": 192_403, "items": 63_001, "categories": 801, "interactions": 1_689_188}
    assert data.reviews["user"].nunique() == 192_403 and data.reviews["item"].nunique() == 63_001
    assert 5 <= data.reviews.groupby("user").size().median() <= 7


def test_writer_round_trip(tmp_path: Path) -> None:
    data = synthetic.generate(n_users=120, n_items=90, n_categories=6, seed=5)
    reviews_path, meta_path = synthetic.write_amazon_raw(data, tmp_path, "Toys", extra_meta_rows=500,
                                                        review_text_chars=200, seed=5)
    assert [reviews_path.name, meta_path.name] == ["reviews_Toys_5.json.gz", "meta_Toys.json.gz"]
    back = raw.parse_amazon(reviews_path, meta_path)
    for col in ("user", "item", "time", "rating"):
        assert back.reviews[col].tolist() == data.reviews[col].tolist(), col
    assert sorted(zip(back.meta["item"], back.meta["category"])) == sorted(zip(data.meta["item"],
                                                                               data.meta["category"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta_Toys.json.gz", "reviews_Toys_5.json.gz"]


def test_generate_rejects_impossible_shapes() -> None:
    with pytest.raises(ValueError, match="n_categories"):
        synthetic.generate(n_users=10, n_items=5, n_categories=6)
    with pytest.raises(ValueError, match="min_item_count"):
        synthetic.generate(n_users=10, n_items=1000, n_categories=6)
