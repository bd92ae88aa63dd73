"""Metrics on per-user evaluation outcomes. Models only produce scores; everything here is numpy.

The paper's AUC (the reference's `mf_auc`): each test user has one positive and one sampled negative, and
AUC = mean over users of 1[score(pos) > score(neg)] (ties count 0, as `x > 0` in the reference).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def paper_auc(score_pos: np.ndarray, score_neg: np.ndarray) -> float:
    return float(np.mean(score_pos > score_neg))


def pooled_roc_auc(score_pos: np.ndarray, score_neg: np.ndarray) -> float:
    """ROC-AUC over all (positive, negative) pairs pooled across users (scikit-learn), a cross-check."""
    y = np.concatenate([np.ones(len(score_pos)), np.zeros(len(score_neg))])
    return float(roc_auc_score(y, np.concatenate([score_pos, score_neg])))


def gauc(score_pos: np.ndarray, score_negs: np.ndarray) -> float:
    """GAUC as in DIN/BARS: per-user AUC of the positive against that user's negatives [U, K] (ties count 1/2),
    averaged with weights = impressions per user (1 + K, equal here, so a plain mean)."""
    score_negs = score_negs.reshape(len(score_pos), -1)
    per_user = ((score_pos[:, None] > score_negs).mean(1) + 0.5 * (score_pos[:, None] == score_negs).mean(1))
    return float(per_user.mean())


TIES = ("pessimistic", "random", "optimistic")  # protocol.ties


def check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"protocol.ties must be one of {', '.join(TIES)}, got {ties!r}")


def resolve_ties(greater: np.ndarray, equal: np.ndarray, ties: str, seed: int = 0) -> np.ndarray:
    """0-based ranks from the counts of items scored above the target (`greater`) and tied with it (`equal`, the
    target itself not counted). pessimistic: the target ranks after all its ties; optimistic: before them all
    (S3Rec's `argsort().argsort()` rule read with a stable sort: the target, column 0, comes first; numpy's default
    unstable sort places it elsewhere among its ties); random: at a uniform place among them, drawn from `seed`."""
    check_ties(ties)
    greater, equal = np.asarray(greater, dtype=np.int64), np.asarray(equal, dtype=np.int64)
    if ties == "pessimistic":
        return greater + equal
    if ties == "optimistic":
        return greater
    return greater + np.random.default_rng(seed).integers(0, equal + 1)


def ranks_among(score_pos: np.ndarray, score_others: np.ndarray, ties: str = "pessimistic",
                seed: int = 0) -> np.ndarray:
    """0-based rank of the positive among itself and the others [U, K], ties resolved by `ties` (resolve_ties)."""
    greater = np.count_nonzero(score_others > score_pos[:, None], axis=1)
    equal = np.count_nonzero(score_others == score_pos[:, None], axis=1)
    return resolve_ties(greater, equal, ties, seed)


def hit_ndcg_mrr(ranks: np.ndarray, ks: tuple[int, ...] = (5, 10, 20)) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr_{k}"] = float(hit.mean())
        out[f"ndcg_{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out
