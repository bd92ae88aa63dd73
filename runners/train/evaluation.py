"""Evaluation: score held-out rows (positive, frozen negative, optional sampled negatives) and full rankings.

The test rows are only reachable through TestSetGuard, which counts reads (protocol loo_val allows one).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from datasets.batching import BatchMaker, Rows
from datasets.device_batches import DeviceBatchMaker
from datasets.split import Split
from models.interface import SeqRecModel
from runners.train import metrics


class TestSetGuard:
    """The one accessor of the test rows. Counts accesses; with a limit (loo_val: 1), a further access raises."""

    __test__ = False  # not a pytest test class

    def __init__(self, rows: Rows, limit: int | None):
        self._rows, self.limit, self.accesses = rows, limit, 0

    def rows(self) -> Rows:
        if self.limit is not None and self.accesses >= self.limit:
            raise RuntimeError(f"the test set was already read {self.accesses} time(s); this protocol allows "
                               f"{self.limit} (model selection must use the validation set)")
        self.accesses += 1
        return self._rows


@dataclass
class EvalOutcome:
    user: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    score_pos: np.ndarray
    score_neg: np.ndarray
    score_negs: np.ndarray | None = None  # [U, K] scores of extra sampled negatives

    @property
    def auc(self) -> float:
        return metrics.paper_auc(self.score_pos, self.score_neg)


@torch.no_grad()
def evaluate(model: SeqRecModel, maker: BatchMaker, rows: Rows, batch_size: int,
             extra_negs: np.ndarray | None = None) -> EvalOutcome:
    """Score each row's positive, its frozen negative and optional extra negatives [U, K] in one call per batch."""
    was_training = model.training
    model.eval()
    maker = on_model_device(maker, model)
    pos, neg, extra = [], [], []
    lengths = rows.end - maker.indptr[rows.user]
    if maker.max_len:
        lengths = np.minimum(lengths, maker.max_len)
    by_length = np.argsort(lengths, kind="stable")  # little padding per batch
    for idx in _eval_batches(by_length, lengths, batch_size):
        batch = maker.make(rows.take(idx))
        cands = [batch.target[:, None], batch.neg[:, None]]
        if extra_negs is not None:
            cands.append(torch.from_numpy(extra_negs[rows.user[idx]].astype(np.int64)).to(batch.target.device))
        s = model.score(batch, torch.cat(cands, dim=1)).float()  # [B, 2 (+K)], read back once at the end
        pos.append(s[:, 0]), neg.append(s[:, 1]), extra.append(s[:, 2:])
    model.train(was_training)
    restore = np.argsort(by_length)  # back to the rows' order
    pos, neg, extra = (torch.cat(x).cpu().numpy() for x in (pos, neg, extra))
    return EvalOutcome(rows.user, rows.target, rows.neg, pos[restore], neg[restore],
                       extra[restore] if extra_negs is not None else None)


def on_model_device(maker: BatchMaker | DeviceBatchMaker, model: SeqRecModel) -> BatchMaker | DeviceBatchMaker:
    """`maker` itself when its batches land where the model is (always on the CPU); for a model on an
    accelerator and a host BatchMaker, its device twin (built once per maker and kept on it)."""
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    if getattr(maker, "device", torch.device("cpu")) == device:
        return maker
    twin = getattr(maker, "_device_twin", None)
    if twin is None or twin.device != device:
        twin = DeviceBatchMaker.from_maker(maker, device)
        maker._device_twin = twin
    return twin


def _eval_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, cells: int = 1024 * 48 * 48):
    """Batches of `order` (ascending length) with at most `batch_size` rows and B * L^2 <= `cells`, so attention
    over long histories stays bounded in memory (a 400-item history at 1,024 rows would need ~5 GB)."""
    start = 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        longest = max(int(lengths[order[end - 1]]), 1)
        end = min(end, start + max(1, cells // (longest * longest)))
        while end > start + 1 and int(lengths[order[end - 1]]) ** 2 * (end - start) > cells:
            end = start + max(1, cells // max(int(lengths[order[end - 1]]), 1) ** 2)
        yield order[start:end]
        start = end


HISTORY = {"exclude": float("-inf"), "zero": 0.0}  # protocol.full_ranking_history -> the score its items get


def history_cells(indptr: np.ndarray, items: np.ndarray, user: np.ndarray,
                  end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) of every item before each row's target in its user's sequence: row r's items are
    items[indptr[user[r]]:end[r]], gathered with one np.repeat (no per-row loop)."""
    starts = indptr[user]
    counts = end - starts
    first = np.cumsum(counts) - counts  # where each row's cells begin in the output
    flat = np.arange(int(counts.sum())) + np.repeat(starts - first, counts)
    return np.repeat(np.arange(len(user)), counts), items[flat].astype(np.int64)


def count_above(scores: torch.Tensor, target_score: torch.Tensor, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the items scored >= the target (the target included) and, with `strict`, those scored > it;
    counted by numpy on the CPU (several times faster than torch's bool sum), by torch elsewhere."""
    if scores.device.type == "cpu":
        s, t = scores.numpy(), target_score.numpy()
        at_least = np.count_nonzero(s >= t, axis=1)
        return at_least, np.count_nonzero(s > t, axis=1) if strict else at_least
    at_least = (scores >= target_score).sum(1).cpu().numpy()
    return at_least, (scores > target_score).sum(1).cpu().numpy() if strict else at_least


@torch.no_grad()
def full_ranks(model: SeqRecModel, maker: BatchMaker, rows: Rows, batch_size: int, ties: str = "pessimistic",
               history: str = "exclude", seed: int = 0, max_scores: int = 16_000_000) -> np.ndarray:
    """0-based rank of each row's target among ALL items. The items before it in the user's sequence (their
    training items) are excluded (`history="exclude"`: scored -inf) or scored 0 and still ranked ("zero", S3Rec's);
    ties are resolved by `ties` (metrics.resolve_ties, random ties drawn from `seed`). Batches keep
    B x n_items <= `max_scores`, so memory stays bounded (no n_users x n_items matrix)."""
    metrics.check_ties(ties)
    if history not in HISTORY:
        raise ValueError(f"protocol.full_ranking_history must be one of {', '.join(HISTORY)}, got {history!r}")
    was_training = model.training
    model.eval()
    maker = on_model_device(maker, model)
    n_items = model.n_items
    lengths = rows.end - maker.indptr[rows.user]
    if maker.max_len:
        lengths = np.minimum(lengths, maker.max_len)
    order = np.argsort(lengths, kind="stable")
    at_least, greater = np.empty(len(rows), dtype=np.int64), np.empty(len(rows), dtype=np.int64)
    step = max(1, min(batch_size, max_scores // max(n_items, 1)))
    indptr, items = np.asarray(maker.indptr), np.asarray(maker.items)
    for idx in _eval_batches(order, lengths, step):
        part = rows.take(idx)
        scores = model.full_scores(maker.make(part)).float()  # [B, n_items]
        seen_rows, seen_items = history_cells(indptr, items, part.user, part.end)
        scores[torch.from_numpy(seen_rows).to(scores.device), torch.from_numpy(seen_items).to(scores.device)] = \
            HISTORY[history]
        target_score = scores.gather(1, torch.from_numpy(part.target.astype(np.int64)).to(scores.device)[:, None])
        at_least[idx], greater[idx] = count_above(scores, target_score, strict=ties != "pessimistic")
    model.train(was_training)
    if ties == "pessimistic":
        return at_least - 1
    return metrics.resolve_ties(greater, at_least - greater - 1, ties, seed)


def extra_metrics(outcome: EvalOutcome, ranks: np.ndarray | None, ks: tuple[int, ...] = (5, 10, 20),
                  ties: str = "pessimistic", seed: int = 0) -> dict:
    """Metrics beyond the paper's AUC: pooled ROC-AUC; with sampled negatives, sampled AUC (= GAUC), HR/NDCG@{1,5,
    10,20} and MRR (ties resolved by `ties`); with full ranks, HR/NDCG@{5,10,20} and MRR over the whole catalogue."""
    out = {"roc_auc": metrics.pooled_roc_auc(outcome.score_pos, outcome.score_neg)}
    if outcome.score_negs is not None and outcome.score_negs.size:
        out["gauc"] = metrics.gauc(outcome.score_pos, outcome.score_negs)
        ranks_sampled = metrics.ranks_among(outcome.score_pos, outcome.score_negs, ties, seed)
        sampled = metrics.hit_ndcg_mrr(ranks_sampled, ks=(1, 5, 10, 20))
        out.update({f"sampled_{k}": v for k, v in sampled.items()})
    if ranks is not None:
        out.update({f"full_{k}": v for k, v in metrics.hit_ndcg_mrr(ranks, ks).items()})
    return out


def ranking_subset(n_rows: int, full_ranking_users: int, seed: int) -> np.ndarray:
    """Sorted indices of the rows ranked against the whole catalogue: all (-1) or a seeded subset of the count."""
    if full_ranking_users == 0:
        raise ValueError("full ranking needs ranked users: set protocol.full_ranking_users to -1 (all) or a count "
                         ">= 1")
    n = n_rows if full_ranking_users < 0 else min(full_ranking_users, n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=n, replace=False))


def final_evaluation(model: SeqRecModel, maker: BatchMaker, rows: Rows, split: Split, batch_size: int,
                     full_ranking_users: int, seed: int, ties: str = "pessimistic",
                     history: str = "exclude") -> tuple[EvalOutcome, dict]:
    """Outcomes on `rows` (positive, frozen negative, the split's sampled negatives) and the extra metrics; full
    ranking on a seeded subset of `full_ranking_users` users (-1: all, 0: none), with the users it ranked and the
    seconds it took (full_ranking_users_ranked, full_ranking_seconds). Ties and the user's history: full_ranks."""
    outcome = evaluate(model, maker, rows, batch_size, extra_negs=split.eval_negs)
    ranks, timing = None, {}
    if full_ranking_users:
        subset = ranking_subset(len(rows), full_ranking_users, seed)
        t0 = time.perf_counter()
        ranks = full_ranks(model, maker, rows.take(subset), batch_size, ties, history, seed)
        timing = {"full_ranking_seconds": time.perf_counter() - t0, "full_ranking_users_ranked": len(subset)}
    return outcome, {**extra_metrics(outcome, ranks, ties=ties, seed=seed), **timing}
