"""Is a difference real? Per-user bootstrap intervals, paired tests and rank agreement, on plain numpy arrays.

The paper's AUC is a mean of per-user outcomes (1[score_pos > score_neg]), so resampling users with replacement
gives its sampling distribution. Every model in a column is resampled with the SAME user draws, so a difference
between two models gets a paired interval for free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z95 = float(sps.norm.ppf(0.975))


@dataclass(frozen=True)
class Interval:
    estimate: float
    lo: float
    hi: float

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi


@dataclass(frozen=True)
class McNemar:
    only_a: int      # users that model A gets right and model B wrong
    only_b: int
    p_value: float   # exact two-sided binomial test on the discordant users


def bootstrap_means(x: np.ndarray, n_boot: int = 2000, seed: int = 0, chunk: int = 100) -> np.ndarray:
    """Means of `n_boot` user resamples of x [U] or [U, M] -> [n_boot] or [n_boot, M] (same draws for every column)."""
    x = np.asarray(x, dtype=float)
    flat = x.ndim == 1
    x2 = x[:, None] if flat else x                               # [U, M]
    n = len(x2)
    if n == 0:
        raise ValueError("bootstrap of an empty outcome vector")
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, x2.shape[1]))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]  # row r draws into block r
        counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)   # [b, U] multiplicities
        out[start:start + b] = counts @ x2 / n
    return out[:, 0] if flat else out


def percentile_interval(estimate: float, samples: np.ndarray, level: float = 0.95) -> Interval:
    """The central `level` share of bootstrap `samples` around an `estimate` computed on the full sample."""
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return Interval(float(estimate), float(lo), float(hi))


def bootstrap_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of mean(x) over users."""
    x = np.asarray(x, dtype=float)
    return percentile_interval(float(x.mean()), bootstrap_means(x, n_boot, seed), level)


def normal_ci(x: np.ndarray, level: float = 0.95) -> Interval:
    """Analytic normal interval mean +- z * sd / sqrt(n) (for a 0/1 vector: the Wald interval of a proportion)."""
    x = np.asarray(x, dtype=float)
    z = float(sps.norm.ppf(0.5 + level / 2.0))
    half = z * x.std(ddof=1) / np.sqrt(len(x))
    return Interval(float(x.mean()), float(x.mean() - half), float(x.mean() + half))


def bootstrap_pvalue(observed: float, diff_samples: np.ndarray) -> float:
    """Two-sided p-value of 'no difference', from the bootstrap distribution of a difference shifted to mean 0:
    the share of centred draws at least as far from 0 as the observed difference (add-one smoothed)."""
    centred = np.asarray(diff_samples) - np.mean(diff_samples)
    extreme = int(np.sum(np.abs(centred) >= abs(observed) - 1e-12))
    return (1 + extreme) / (1 + len(centred))


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact McNemar test on paired 0/1 outcomes of the same users."""
    a = np.asarray(correct_a).astype(bool)
    b = np.asarray(correct_b).astype(bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(sps.binomtest(min(only_a, only_b), n, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


def kendall_tau(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Kendall's tau-b between two score vectors over the same models, and its p-value (nan for < 2 models)."""
    if len(x) < 2:
        return float("nan"), float("nan")
    res = sps.kendalltau(x, y)
    return float(res.statistic), float(res.pvalue)
