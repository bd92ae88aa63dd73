"""Evaluation: full-ranking metrics against brute force, the test-set guard, sampled negatives, protocols."""
from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
import torch

from datasets.batching import BatchMaker, eval_rows
from datasets.split import draw_eval_negatives, make_split
from models.interface import SeqRecModel
from runners.train import metrics
from runners.train.evaluation import TestSetGuard, evaluate, extra_metrics, full_ranks
from runners.run import run
from tests.datasets.conftest import make_table
from tests.runners.conftest import compose


class FixedScores(SeqRecModel):
    """Scores read from a fixed [n_users, n_items] matrix."""

    def __init__(self, table: np.ndarray):
        super().__init__()
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.n_items = table.shape[1]

    def score(self, batch, candidates):
        return self.table[batch.user][torch.arange(len(batch))[:, None], candidates]

    def full_scores(self, batch, chunk: int = 0):
        return self.table[batch.user]


def small_world(seed: int = 0):
    rng = np.random.default_rng(seed)
    items = [f"i{k:02d}" for k in range(40)]
    seqs = {f"u{u}": list(rng.choice(items[:30], size=rng.integers(4, 9), replace=False)) for u in range(12)}
    unused = tuple(i for i in items if not any(i in s for s in seqs.values()))
    assert len(unused) >= 3  # the filler user that carries them needs a split too
    t = make_table(seqs, extra_items=unused)
    return t, rng.normal(size=(t.n_users, t.n_items))


def brute_force(table, scores: np.ndarray, positions: np.ndarray, ks=(5, 10, 20)) -> dict[str, float]:
    hr = {k: [] for k in ks}
    nd = {k: [] for k in ks}
    rr = []
    for u, pos in enumerate(positions):
        target = table.items[pos]
        seen = set(table.items[table.indptr[u]:pos].tolist())
        candidates = [i for i in range(table.n_items) if i not in seen]  # target included, training items out
        ranked = sorted(candidates, key=lambda i: -scores[u, i])
        r = ranked.index(target)
        rr.append(1 / (r + 1))
        for k in ks:
            hr[k].append(r < k)
            nd[k].append(1 / math.log2(r + 2) if r < k else 0.0)
    out = {f"hr_{k}": float(np.mean(hr[k])) for k in ks}
    out.update({f"ndcg_{k}": float(np.mean(nd[k])) for k in ks})
    out["mrr"] = float(np.mean(rr))
    return out


@pytest.mark.parametrize("protocol", ["paper", "loo_val"])
def test_full_ranking_matches_brute_force_excluding_training_items(protocol):
    t, scores = small_world()
    split = make_split(t, protocol)
    rows = eval_rows(t, split, "test")
    ranks = full_ranks(FixedScores(scores), BatchMaker(t), rows, batch_size=5)
    ours = metrics.hit_ndcg_mrr(ranks)
    expected = brute_force(t, scores, split.test_pos)
    assert ours == pytest.approx(expected, abs=1e-12)
    # excluding training items matters: without exclusion the ranks would be worse somewhere
    naive = [(scores[u] > scores[u, t.items[p]]).sum() for u, p in enumerate(split.test_pos)]
    assert (np.array(naive) >= ranks).all() and (np.array(naive) > ranks).any()


def test_sampled_metrics_and_gauc_from_constructed_scores():
    pos = np.array([3.0, 0.0, 1.0])
    negs = np.array([[1.0, 2.0, 4.0, 0.0], [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.5, 0.2]])
    assert metrics.gauc(pos, negs) == pytest.approx(np.mean([3 / 4, 0.0, (3 + 0.5) / 4]))
    assert metrics.ranks_among(pos, negs).tolist() == [1, 4, 1]


def test_eval_negatives_are_frozen_and_never_the_users_items():
    t, _ = small_world()
    a = draw_eval_negatives(t, 10, seed=7)
    assert np.array_equal(a, draw_eval_negatives(t, 10, seed=7))
    for u in range(t.n_users):
        assert not set(a[u].tolist()) & set(t.items[t.indptr[u]:t.indptr[u + 1]].tolist())
        assert len(set(a[u].tolist())) == 10
    pop = draw_eval_negatives(t, 10, seed=7, kind="popularity")
    assert not np.array_equal(a, pop)


def test_test_guard_counts_and_refuses_a_second_read():
    t, scores = small_world()
    guard = TestSetGuard(eval_rows(t, make_split(t, "loo_val"), "test"), limit=1)
    guard.rows()
    with pytest.raises(RuntimeError, match="already read 1 time"):
        guard.rows()
    assert guard.accesses == 1


def test_evaluate_scores_extra_negatives_in_row_order():
    t, scores = small_world()
    split = make_split(t, "paper", eval_negatives=5)
    rows = eval_rows(t, split, "test")
    out = evaluate(FixedScores(scores), BatchMaker(t), rows, batch_size=4, extra_negs=split.eval_negs)
    u = rows.user
    assert np.allclose(out.score_pos, scores[u, rows.target]) and np.allclose(out.score_neg, scores[u, rows.neg])
    assert np.allclose(out.score_negs, np.take_along_axis(scores[u], split.eval_negs[u], 1))
    sampled = {f"sampled_{m}_{k}" for m in ("hr", "ndcg") for k in (1, 5, 10, 20)} | {"sampled_mrr"}
    assert set(extra_metrics(out, None)) == {"roc_auc", "gauc", *sampled}


QUICK = ["dataset=sample", "trainer.max_steps=120", "trainer.eval_every=40", "trainer.num_threads=1",
         "protocol.full_ranking_users=200"]


def curves(uri: str, run_id: str, *names: str) -> dict[str, dict[int, float]]:
    """{name: {step: value}} of the run's per-evaluation curves (curve/<name>) in MLflow."""
    client = mlflow.MlflowClient(uri)
    return {n: {m.step: m.value for m in client.get_metric_history(run_id, f"curve/{n}")} for n in names}


def test_loo_val_reads_test_once_and_optimism_protocol_measures_the_gap(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    common = [f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}"]
    honest = run(compose(["model=bpr", "protocol=loo_val", *QUICK, *common]))
    assert honest["test_accesses"] == 1
    # the tie policy and the history rule are named in the run's params; the full ranking's users and time logged
    params = mlflow.MlflowClient(uri).get_run(honest["run_id"]).data.params
    assert params["protocol.ties"] == "pessimistic" and params["protocol.full_ranking_history"] == "exclude"
    assert honest["test_full_ranking_users_ranked"] == 200 and honest["test_full_ranking_seconds"] > 0
    # the final validation read, with the selected weights loaded, scores what the selection scored
    assert honest["valid_auc"] == pytest.approx(honest["best_valid_auc"], abs=1e-12)
    diag = run(compose(["model=bpr", "protocol=optimism", *QUICK, *common]))
    assert diag["test_accesses"] == 3 + 1  # one per evaluation, plus the final read
    # recomputed from the logged evaluations: the selected step is the first with the best validation AUC, the
    # optimism is the best test AUC seen minus the test AUC at that step
    curve = curves(uri, diag["run_id"], "valid_auc", "test_auc")
    assert sorted(curve["test_auc"]) == sorted(curve["valid_auc"]) == [40, 80, 120]
    selected = max(sorted(curve["valid_auc"]), key=curve["valid_auc"].get)
    assert diag["best_step"] == selected
    assert diag["test_auc"] == curve["test_auc"][selected]
    assert diag["test_auc_at_test_best"] == max(curve["test_auc"].values())
    assert diag["optimism"] == max(curve["test_auc"].values()) - curve["test_auc"][selected]
