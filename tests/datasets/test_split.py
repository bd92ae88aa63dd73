"""The split: the reference's RNG stream, exact positions per protocol, frozen negatives."""
from __future__ import annotations

import random

import numpy as np
import pandas as pd

from datasets.batching import eval_rows, train_rows
from datasets.split import make_split
from tests.datasets.conftest import make_table


def test_clothing_paper_split_reproduces_reference_test_pairs(clothing_table, shared_data):
    t = clothing_table
    split = make_split(t, "paper", seed=1234)
    ref = pd.read_csv(shared_data / "reference_split" / "clothing_seq_test_pairs.csv", dtype=str)
    ours = pd.DataFrame({"reviewerID": t.user_keys, "pos_asin": t.item_keys[t.items[split.test_pos]],
                         "neg_asin": t.item_keys[split.neg[split.test_pos]]})
    assert len(ref) == len(ours) == 39_387
    merged = ref.merge(ours, on="reviewerID", how="outer", suffixes=("_ref", ""), indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged["pos_asin_ref"] == merged["pos_asin"]).all()
    mismatched = merged[merged["neg_asin_ref"] != merged["neg_asin"]]
    assert len(mismatched) == 0, mismatched.head()


def test_clothing_counts_and_negatives(clothing_table):
    t = clothing_table
    split = make_split(t, "paper")
    assert len(eval_rows(t, split, "test")) == 39_387
    assert len(train_rows(t, split, "pointwise")) == 399_806
    assert len(train_rows(t, split, "pairwise")) == 239_290  # BPR: positions 0..n-2
    users = np.repeat(np.arange(t.n_users), t.lengths)
    pairs = set(zip(users.tolist(), t.items.tolist()))
    assert not any((u, n) in pairs for u, n in zip(users.tolist(), split.neg.tolist()))


def test_same_seed_same_bytes_other_seed_differs(clothing_table):
    a, b = make_split(clothing_table, "paper", 1234), make_split(clothing_table, "paper", 1234)
    c = make_split(clothing_table, "paper", 99)
    assert a.neg.tobytes() == b.neg.tobytes() and a.test_pos.tobytes() == b.test_pos.tobytes()
    assert a.neg.tobytes() != c.neg.tobytes()


def reference_draw_loop(sequences_in_id_order: list[list[int]], item_count: int, seed: int) -> list[list[int]]:
    """PROTOCOL.md's draw loop written out plainly."""
    random.seed(seed)
    out = []
    for pos_list in sequences_in_id_order:
        def gen_neg():
            neg = pos_list[0]
            while neg in pos_list:
                neg = random.randint(0, item_count - 1)
            return neg
        out.append([gen_neg() for _ in range(len(pos_list))])
    return out


def test_three_users_follow_python_random_stream():
    # raw keys chosen so sorted order differs from insertion order
    seqs = {"u_c": ["i3", "i1", "i4", "i0"], "u_a": ["i2", "i0", "i1"], "u_b": ["i4", "i2", "i3", "i1", "i0"]}
    t = make_table(seqs, extra_items=("i5", "i6", "i7"))
    split = make_split(t, "paper", seed=1234)
    in_id_order = [t.items[t.indptr[u]:t.indptr[u + 1]].tolist() for u in range(t.n_users)]
    expected = reference_draw_loop(in_id_order, t.n_items, 1234)
    assert split.neg.tolist() == [n for user in expected for n in user]


def test_hand_made_split_positions_for_both_protocols():
    seqs = {"a": ["x1", "x2", "x3", "x4", "x5"], "b": ["y1", "y2", "y3", "y4"], "c": ["z1", "z2", "z3", "z4"]}
    t = make_table(seqs, extra_items=tuple(f"w{i}" for i in range(10)))
    paper, loo = make_split(t, "paper"), make_split(t, "loo_val")

    def targets(rows, user: str) -> list[str]:
        return [t.item_keys[i] for i, u in zip(rows.target, rows.user) if t.user_keys[u] == user]

    def held_out(split, which: str) -> dict[str, str]:
        rows = eval_rows(t, split, which)
        return {t.user_keys[u]: t.item_keys[i] for u, i in zip(rows.user, rows.target)}

    # paper: pairwise (BPR) targets are positions 0..n-2, pointwise positives 1..n-2, test n-1
    assert targets(train_rows(t, paper, "pairwise"), "a") == ["x1", "x2", "x3", "x4"]
    pt = train_rows(t, paper, "pointwise")
    assert targets(pt, "a")[:3] == ["x2", "x3", "x4"] and len(targets(pt, "a")) == 6  # + 3 negatives
    assert {k: v for k, v in held_out(paper, "test").items() if k != "zz_filler"} == {"a": "x5", "b": "y4", "c": "z4"}
    # loo_val: validation = n-2, test = n-1, training targets end before both
    assert targets(train_rows(t, loo, "pairwise"), "a") == ["x1", "x2", "x3"]
    assert targets(train_rows(t, loo, "pairwise"), "b") == ["y1", "y2"]
    assert held_out(loo, "valid")["a"] == "x4" and held_out(loo, "test")["a"] == "x5"
    assert held_out(loo, "valid")["c"] == "z3" and held_out(loo, "test")["c"] == "z4"
    seq = train_rows(t, loo, "sequence")
    assert (seq.end - t.indptr[:-1]).tolist() == (t.lengths - 2).tolist()
    for split in (paper, loo):  # frozen negatives never hit the user's own items
        for u in range(t.n_users):
            mine = set(t.items[t.indptr[u]:t.indptr[u + 1]].tolist())
            assert not mine & set(split.neg[t.indptr[u]:t.indptr[u + 1]].tolist())


def test_protocol_needs_enough_interactions():
    t = make_table({"a": ["p", "q", "r"], "b": ["p", "q", "s"]})
    make_split(t, "paper")
    import pytest

    with pytest.raises(ValueError, match="needs >= 4 interactions"):
        make_split(t, "loo_val")


def test_user_with_every_item_is_an_error_not_a_hang():
    import pytest

    t = make_table({"a": ["p", "q", "r"], "b": ["p", "q", "r"]})
    with pytest.raises(ValueError, match="reviewed all 3 items"):
        make_split(t, "paper")
