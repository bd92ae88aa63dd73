"""Tie policies (protocol.ties) and the user's history in full ranking (protocol.full_ranking_history): exact ranks
on hand-made scores, POP-like integer scores with many ties, and full ranking of every user against a brute-force
numpy ranking of a score matrix built by hand from model.full_scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.batching import BatchMaker, eval_rows
from datasets.split import make_split
from models.registry import get_model
from runners.train import metrics
from runners.train.evaluation import final_evaluation, full_ranks, history_cells
from tests.datasets.conftest import make_table
from tests.runners.train.test_evaluation import FixedScores, small_world

POS = np.array([3.0, 2.0, 5.0, 1.0])
OTHERS = np.array([[3.0, 3.0, 1.0, 4.0], [2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 1.0, 2.0]])
# per row: (above the positive, tied with it) = (1, 2), (0, 4), (0, 0), (1, 2)
EXACT = {"pessimistic": [3, 4, 0, 3], "optimistic": [1, 0, 0, 1]}


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_sampled_ranks_of_each_policy_on_hand_made_scores(ties):
    assert metrics.ranks_among(POS, OTHERS, ties).tolist() == EXACT[ties]


def test_random_ties_are_seeded_and_uniform_among_the_ties():
    ranks = metrics.ranks_among(POS, OTHERS, "random", seed=3)
    assert np.array_equal(ranks, metrics.ranks_among(POS, OTHERS, "random", seed=3))
    assert ranks[2] == 0 and 1 <= ranks[0] <= 3 and 0 <= ranks[1] <= 4 and 1 <= ranks[3] <= 3
    # 50,000 users whose positive ties with all 4 others: each of the 5 places drawn about 10,000 times
    many = metrics.resolve_ties(np.zeros(50_000, int), np.full(50_000, 4), "random", seed=0)
    counts = np.bincount(many, minlength=5)
    assert len(counts) == 5 and (np.abs(counts - 10_000) < 500).all()
    assert not np.array_equal(many, metrics.resolve_ties(np.zeros(50_000, int), np.full(50_000, 4), "random", 1))


def test_pop_like_integer_scores_with_many_ties():
    """A POP score (an item's count) of 3 among 99 negatives: one count above (5), two tied (3, 3), the rest
    below; and a target whose count every negative shares."""
    negs = np.array([[5, 3, 3, 1, 1] + [0] * 94, [2] * 99], dtype=float)
    pos = np.array([3.0, 2.0])
    assert metrics.ranks_among(pos, negs, "pessimistic").tolist() == [3, 99]
    assert metrics.ranks_among(pos, negs, "optimistic").tolist() == [1, 0]
    drawn = np.stack([metrics.ranks_among(pos, negs, "random", seed=s) for s in range(200)])
    assert set(drawn[:, 0]) == {1, 2, 3} and drawn[:, 1].min() >= 0 and drawn[:, 1].max() <= 99
    assert len(set(drawn[:, 1])) > 50  # spread over the 100 places, not stuck at one end


def test_an_unknown_tie_policy_is_refused_by_name():
    with pytest.raises(ValueError, match="protocol.ties must be one of pessimistic, random, optimistic, got 'first'"):
        metrics.ranks_among(POS, OTHERS, "first")


def hand_made_world():
    """u0: a b c | d (target d, history a b c); zz_filler: e f g | h. Scores by user and item, ties on purpose."""
    t = make_table({"u0": ["a", "b", "c", "d"]}, extra_items=("e", "f", "g", "h"))
    by_user = {"u0": dict(a=5, b=1, c=3, d=3, e=3, f=3, g=0, h=7),
               "zz_filler": dict(a=0, b=0, c=-2, d=1, e=4, f=-1, g=2, h=0)}
    scores = np.array([[by_user[u][i] for i in t.item_keys] for u in t.user_keys], dtype=float)
    rows = eval_rows(t, make_split(t, "paper"), "test")
    return t, scores, rows


@pytest.mark.parametrize("history, ties, expected", [
    # u0: a (5) is history, so excluded or zeroed; h above; e, f tied with d
    # zz_filler (target h, 0): d above; excluded history: a, b tied; zeroed history: a, b, e, f, g tied
    ("exclude", "pessimistic", {"u0": 3, "zz_filler": 3}),
    ("exclude", "optimistic", {"u0": 1, "zz_filler": 1}),
    ("zero", "pessimistic", {"u0": 3, "zz_filler": 6}),
    ("zero", "optimistic", {"u0": 1, "zz_filler": 1}),
])
def test_full_ranks_of_each_policy_on_hand_made_scores(history, ties, expected):
    t, scores, rows = hand_made_world()
    assert [t.item_keys[i] for i in rows.target] == ["d", "h"]
    ranks = full_ranks(FixedScores(scores), BatchMaker(t), rows, batch_size=1, ties=ties, history=history)
    assert dict(zip(t.user_keys[rows.user], ranks.tolist())) == expected


def test_full_ranks_random_ties_stay_among_the_ties_and_follow_the_seed():
    t, scores, rows = hand_made_world()
    model, maker = FixedScores(scores), BatchMaker(t)
    drawn = np.stack([full_ranks(model, maker, rows, 2, "random", "zero", seed=s) for s in range(100)])
    assert set(drawn[:, 0]) == {1, 2, 3} and set(drawn[:, 1]) == {1, 2, 3, 4, 5, 6}
    assert np.array_equal(full_ranks(model, maker, rows, 1, "random", "zero", seed=7),
                          full_ranks(model, maker, rows, 2, "random", "zero", seed=7))  # batching changes nothing
    with pytest.raises(ValueError, match="protocol.full_ranking_history must be one of exclude, zero, got 'drop'"):
        full_ranks(model, maker, rows, 2, history="drop")


def test_history_cells_are_every_item_before_each_target():
    indptr, items = np.array([0, 3, 3, 7]), np.array([10, 11, 12, 20, 21, 22, 23])
    rows, cells = history_cells(indptr, items, np.array([2, 0, 1, 2]), np.array([6, 2, 3, 4]))
    assert rows.tolist() == [0, 0, 0, 1, 1, 3] and cells.tolist() == [20, 21, 22, 10, 11, 20]


def brute_force_ranks(scores: np.ndarray, maker, rows, ties: str, history: str, seed: int) -> np.ndarray:
    """Ranks of each row's target in its row of the score matrix, with numpy."""
    greater, equal = np.zeros(len(rows), int), np.zeros(len(rows), int)
    for r, (u, end, target) in enumerate(zip(rows.user, rows.end, rows.target)):
        s = scores[r].copy()
        s[maker.items[maker.indptr[u]:end]] = -np.inf if history == "exclude" else 0.0
        greater[r], equal[r] = (s > s[target]).sum(), (s == s[target]).sum() - 1
    return metrics.resolve_ties(greater, equal, ties, seed)


def small_model(name: str, t):
    torch.manual_seed(0)
    if name == "pop":
        model = get_model("pop")(t.n_users, t.n_items, t.n_categories, t.item_category)
        model.counts.copy_(torch.from_numpy(np.bincount(t.items, minlength=t.n_items) // 2))  # few, tied counts
    else:
        model = get_model("sasrec")(t.n_users, t.n_items, t.n_categories, t.item_category, dim=8, max_len=5)
    return model.eval()


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread (two spin against each other on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["pop", "sasrec"])
def test_full_ranking_of_every_user_equals_brute_force(name, one_thread):
    t, _ = small_world()
    split = make_split(t, "loo_val")
    rows = eval_rows(t, split, "test")
    model, maker = small_model(name, t), BatchMaker(t, max_len=6)
    with torch.no_grad():  # the score matrix by hand: one row at a time
        scores = np.stack([model.full_scores(maker.make(rows.take(np.array([r])))).double().numpy()[0]
                           for r in range(len(rows))])
    if name == "pop":
        assert len(np.unique(scores)) <= 6  # a few integer counts over 40 items: many ties
    for ties, history in [("pessimistic", "exclude"), ("optimistic", "zero"), ("random", "exclude"),
                          ("random", "zero"), ("pessimistic", "zero")]:
        expected = brute_force_ranks(scores, maker, rows, ties, history, seed=5)
        ranks = full_ranks(model, maker, rows, 4, ties, history, seed=5, max_scores=3 * t.n_items)
        assert np.array_equal(ranks, expected), (ties, history)
        _, extra = final_evaluation(model, maker, rows, split, 4, -1, 5, ties, history)
        assert extra["full_ranking_users_ranked"] == len(rows) and extra["full_ranking_seconds"] > 0
        assert extra["full_mrr"] == pytest.approx(metrics.hit_ndcg_mrr(expected)["mrr"], abs=1e-12)


@pytest.mark.parametrize("protocol, users", [("loo_val", -1), ("paper", 0), ("optimism", 0)])
def test_protocol_defaults_rank_all_users_under_loo_val_with_pessimistic_ties(protocol, users):
    from runners.config import check_config, job_settings
    from tests.runners.conftest import compose

    cfg = compose([f"protocol={protocol}", "model=sasrec"])
    check_config(cfg)
    job = job_settings(cfg)
    assert (job.full_ranking_users, job.ties, job.full_ranking_history) == (users, "pessimistic", "exclude")
    atrank = job_settings(compose([f"protocol={protocol}", "model=atrank"]))  # a forward pass per item: capped
    assert atrank.full_ranking_users == (1000 if users == -1 else users)


def test_all_users_means_all_for_one_vector_models_and_the_target_aware_cap_for_the_others():
    """protocol.full_ranking_users=-1 ranks every user where full_scores is one vector per row (SASRec, BPR, POP,
    ...) and protocol.full_ranking_target_aware_users where each item is a forward pass (ATRank, DIN, Bi-LSTM +
    Attention); an explicit count is kept for both."""
    from models.registry import get_model
    from runners.config import ranked_users

    vector = {m for m in ("sasrec", "bert4rec", "caser", "pop", "bpr", "bilstm", "cnn", "gru4rec", "attrec")}
    for name in vector | {"atrank", "din", "bilstm_att"}:
        assert get_model(name).one_user_vector == (name in vector), name
    assert ranked_users(-1, 1000, True) == -1 and ranked_users(-1, 1000, False) == 1000
    assert ranked_users(500, 1000, False) == 500 and ranked_users(0, 1000, True) == 0
