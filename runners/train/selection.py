"""What a job evaluates, built once (EvalData), and the metric that selects the model and stops training early.

runners/run.py builds one EvalData per job and hands it to the training loop (runners/train/trainer.py) and to the
final test; the loop scores the selection split with `selection_score` at every evaluation. The metric is the
protocol's `select_metric`: `auc` (the paper's AUC on the one frozen negative), `sampled_<m>` (against the split's
sampled negatives, read through `selection_negatives`) or `full_<m>` (a full ranking of a seeded subset of the
selection users, as the final evaluation ranks), where <m> is mrr, hr_<k> or ndcg_<k> for k in 5, 10, 20.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.batching import BatchMaker, Rows, eval_rows
from datasets.split import Split, eval_negatives_at
from datasets.table import Table
from models.interface import SeqRecModel
from runners.train import metrics
from runners.train.evaluation import EvalOutcome, TestSetGuard, evaluate, full_ranks, ranking_subset

RANK_METRICS = ("mrr", "hr_5", "hr_10", "hr_20", "ndcg_5", "ndcg_10", "ndcg_20")  # metrics.hit_ndcg_mrr's names
SELECT_METRICS = ("auc", *(f"sampled_{m}" for m in RANK_METRICS), *(f"full_{m}" for m in RANK_METRICS))


@dataclass
class EvalData:
    """A job's evaluation inputs, built once: the batch maker, the validation rows (None: the split has none), the
    test rows behind their guard (None on data-parallel workers that do not evaluate), the split (its sampled
    negatives), the table (for redrawn negatives) and how the selection split is scored."""
    maker: BatchMaker
    valid_rows: Rows | None
    test_guard: TestSetGuard | None
    split: Split
    table: Table | None = None  # None: negatives are never redrawn (split.eval_negs_redraw needs the table)
    metric: str = "auc"  # one of SELECT_METRICS
    full_ranking_users: int = 0  # users of the selection split ranked for a full_* metric (-1: all)
    seed: int = 0  # the seed of that subset and of random ties (the final evaluation's)
    ties: str = "pessimistic"  # protocol.ties (runners/train/metrics.resolve_ties)
    history: str = "exclude"  # protocol.full_ranking_history (runners/train/evaluation.full_ranks)


def eval_data(table: Table, split: Split, max_len: int | None, test_guard: TestSetGuard | None, metric: str = "auc",
              full_ranking_users: int = 0, seed: int = 0, ties: str = "pessimistic",
              history: str = "exclude") -> EvalData:
    """The EvalData of `table` and `split`: one host BatchMaker and the validation rows, if the split has them."""
    if metric not in SELECT_METRICS:
        raise ValueError(f"protocol.select_metric must be one of {', '.join(SELECT_METRICS)}, got {metric!r}")
    valid = eval_rows(table, split, "valid") if split.valid_pos is not None else None
    return EvalData(BatchMaker(table, max_len=max_len), valid, test_guard, split, table, metric, full_ranking_users,
                    seed, ties, history)


def selection_negatives(evals: EvalData, evaluation: int) -> np.ndarray:
    """The sampled negatives [n_users, K] that evaluation number `evaluation` (0, 1, ...) of a run scores a
    sampled_* metric against: the split's frozen ones (protocol.eval_negatives), or with
    protocol.eval_negatives_redraw a fresh seeded draw per evaluation (datasets/split.eval_negatives_at; the final
    test reads the split's stored draw, evaluation 0's)."""
    split = evals.split
    if split.eval_negs is None:
        raise ValueError("a sampled_* protocol.select_metric needs sampled negatives: set protocol.eval_negatives "
                         "> 0")
    if split.eval_negs_redraw and evals.table is None:
        raise ValueError("redrawn negatives (protocol.eval_negatives_redraw) need EvalData.table")
    return eval_negatives_at(split, evals.table, evaluation) if split.eval_negs_redraw else split.eval_negs


def selection_score(model: SeqRecModel, evals: EvalData, rows: Rows, batch_size: int,
                    evaluation: int) -> tuple[EvalOutcome, float]:
    """(outcomes on `rows`, the value of `evals.metric` on them): the positive and frozen negative are always
    scored (the AUC is logged beside any metric); a sampled metric adds the sampled negatives to the same call, a
    full one ranks the selection subset against the whole catalogue."""
    family, _, name = evals.metric.partition("_")
    if family == "auc":
        outcome = evaluate(model, evals.maker, rows, batch_size)
        return outcome, outcome.auc
    ks = () if name == "mrr" else (int(name.rsplit("_", 1)[1]),)
    if family == "sampled":
        outcome = evaluate(model, evals.maker, rows, batch_size,
                           extra_negs=selection_negatives(evals, evaluation))
        ranks = metrics.ranks_among(outcome.score_pos, outcome.score_negs, evals.ties, evals.seed)
    else:
        outcome = evaluate(model, evals.maker, rows, batch_size)
        subset = ranking_subset(len(rows), evals.full_ranking_users, evals.seed)
        ranks = full_ranks(model, evals.maker, rows.take(subset), batch_size, evals.ties, evals.history, evals.seed)
    return outcome, metrics.hit_ndcg_mrr(ranks, ks)[name]
