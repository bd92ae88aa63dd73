"""The metric that selects and stops (runners/train/selection.py, protocol.select_metric): its value on hand-made
scores, the loop selecting and early-stopping on it, and the job logging it as <select_on>_<metric>."""
from __future__ import annotations

import mlflow
import numpy as np
import pytest

from datasets.batching import eval_rows
from datasets.split import make_split
from runners.run import run
from runners.train import trainer
from runners.train.selection import eval_data, selection_negatives, selection_score
from tests.runners.conftest import compose
from tests.runners.train.test_evaluation import FixedScores, brute_force, small_world

QUICK = ["dataset=sample", "protocol=loo_val", "trainer.eval_every=10", "trainer.num_threads=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, list[str]]:
    """(MLflow URI, overrides): one store and data cache for this module's jobs (each config is its own run)."""
    root = tmp_path_factory.mktemp("selection")
    uri = f"sqlite:///{root / 'm.db'}"
    return uri, [f"paths.cache_dir={root / 'cache'}", f"mlflow.tracking_uri={uri}"]


def by_hand(ranks: np.ndarray) -> dict[str, float]:
    """MRR, HR@5 and NDCG@10 of 0-based ranks, written out."""
    return {"mrr": float(np.mean(1 / (ranks + 1))), "hr_5": float(np.mean(ranks < 5)),
            "ndcg_10": float(np.mean(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0)))}


@pytest.mark.parametrize("metric", ["sampled_mrr", "sampled_hr_5", "sampled_ndcg_10"])
def test_sampled_metric_ranks_the_positive_among_the_frozen_negatives(metric):
    t, scores = small_world()
    split = make_split(t, "loo_val", eval_negatives=6)
    rows = eval_rows(t, split, "valid")
    outcome, score = selection_score(FixedScores(scores), eval_data(t, split, None, None, metric), rows, 4, 0)
    u = rows.user
    pos, negs = scores[u, rows.target], np.take_along_axis(scores[u], split.eval_negs[u], 1)
    assert score == pytest.approx(by_hand((negs >= pos[:, None]).sum(1))[metric.removeprefix("sampled_")], abs=1e-12)
    assert outcome.auc == float(np.mean(pos > scores[u, rows.neg]))  # the AUC comes along


def test_full_metric_ranks_the_selection_users_against_the_catalogue():
    t, scores = small_world()
    split = make_split(t, "loo_val")
    rows = eval_rows(t, split, "valid")
    evals = eval_data(t, split, None, None, "full_ndcg_20", full_ranking_users=-1)
    _, score = selection_score(FixedScores(scores), evals, rows, 4, 0)
    assert score == pytest.approx(brute_force(t, scores, split.valid_pos)["ndcg_20"], abs=1e-12)


def test_selection_and_patience_follow_the_select_metric_and_the_job_logs_it(store, monkeypatch):
    """Scripted validation MRRs: best at the 2nd evaluation, then 2 worse ones stop training (patience 2), whatever
    the AUC does; the job logs valid_sampled_mrr, best_valid_sampled_mrr and the key, and a skip reports it."""
    script = [0.10, 0.30, 0.25, 0.20, 0.90, 0.95]
    real = trainer.selection_score

    def scripted(model, evals, rows, batch_size, evaluation):
        outcome, _ = real(model, evals, rows, batch_size, evaluation)
        return outcome, script[evaluation]

    monkeypatch.setattr(trainer, "selection_score", scripted)
    uri, where = store
    overrides = ["model=bpr", *QUICK, "trainer.max_steps=60", "trainer.patience=2",
                 "protocol.select_metric=sampled_mrr", *where]
    result = run(compose(overrides))
    assert (result["best_step"], result["steps"]) == (20, 40)
    assert result["best_valid_sampled_mrr"] == result["selection_score"] == 0.30
    client = mlflow.MlflowClient(uri)
    history = {k: {m.step: m.value for m in client.get_metric_history(result["run_id"], f"curve/{k}")}
               for k in ("valid_sampled_mrr", "best_valid_sampled_mrr", "valid_auc")}
    assert history["valid_sampled_mrr"] == dict(zip((10, 20, 30, 40), script))
    assert history["best_valid_sampled_mrr"] == {10: 0.10, 20: 0.30, 30: 0.30, 40: 0.30}
    assert sorted(history["valid_auc"]) == [10, 20, 30, 40]
    assert client.get_run(result["run_id"]).data.params["protocol.select_metric"] == "sampled_mrr"
    skipped = run(compose(overrides + ["skip_finished=true"]))
    assert (skipped["status"], skipped["selection_score"]) == ("SKIPPED", 0.30)


@pytest.mark.parametrize("metric", ["sampled_mrr", "full_ndcg_20"])
def test_selection_scores_what_the_final_validation_read_scores(metric, store):
    """The selected weights, read again at the end on the same negatives / the same ranked users, score exactly
    the best selection value: the loop and the final evaluation share the job's rows, negatives and subset."""
    uri, where = store
    result = run(compose(["model=bpr", *QUICK, "trainer.max_steps=30", f"protocol.select_metric={metric}",
                          "protocol.full_ranking_users=300", *where]))
    history = mlflow.MlflowClient(uri).get_metric_history(result["run_id"], f"curve/valid_{metric}")
    assert sorted(m.step for m in history) == [10, 20, 30]
    assert result[f"best_valid_{metric}"] == max(m.value for m in history)
    assert result[f"valid_{metric}"] == pytest.approx(result[f"best_valid_{metric}"], abs=1e-12)


def test_redrawn_negatives_change_per_evaluation_and_the_selection_scores_them():
    """protocol.eval_negatives_redraw: evaluation 0 scores the split's stored draw, evaluation 1 a fresh one (the
    metric is computed against whichever was drawn), frozen negatives are the same at every evaluation."""
    t, scores = small_world()
    for redraw in (False, True):
        split = make_split(t, "loo_val", eval_negatives=6, eval_negatives_redraw=redraw)
        rows = eval_rows(t, split, "valid")
        evals = eval_data(t, split, None, None, "sampled_mrr")
        negs = [selection_negatives(evals, i) for i in (0, 1)]
        assert (negs[0] is split.eval_negs) and (np.array_equal(negs[0], negs[1]) != redraw)
        u = rows.user
        pos = scores[u, rows.target]
        want = by_hand((np.take_along_axis(scores[u], negs[1][u], 1) >= pos[:, None]).sum(1))["mrr"]
        assert selection_score(FixedScores(scores), evals, rows, 4, 1)[1] == pytest.approx(want, abs=1e-12)
