"""reports/stats.py on constructed per-user outcome vectors with known answers."""
from __future__ import annotations

import numpy as np

from reports import stats


def outcomes(rate: float, n: int, seed: int = 0) -> np.ndarray:
    """Exactly round(rate * n) successes in random order."""
    x = np.zeros(n)
    x[: round(rate * n)] = 1.0
    return np.random.default_rng(seed).permutation(x)


def test_bootstrap_ci_width_matches_the_normal_interval():
    x = outcomes(0.8, 10_000)
    boot = stats.bootstrap_ci(x, n_boot=2000, seed=1)
    normal = stats.normal_ci(x)
    analytic_width = 2 * stats.Z95 * np.sqrt(0.8 * 0.2 / 10_000)   # 0.01568
    assert np.isclose(normal.width, analytic_width, rtol=1e-3)
    assert abs(boot.width / normal.width - 1) < 0.10
    assert boot.estimate == 0.8
    assert abs(boot.lo - normal.lo) < 1e-3 and abs(boot.hi - normal.hi) < 1e-3   # centred where the analytic one is


def test_percentile_interval_is_the_percentiles_of_the_resamples():
    x = outcomes(0.3, 500, seed=4)
    ci = stats.bootstrap_ci(x, n_boot=700, seed=5, level=0.9)
    lo, hi = np.percentile(stats.bootstrap_means(x, 700, seed=5), [5, 95])
    assert (ci.lo, ci.hi) == (lo, hi)
    const = stats.bootstrap_ci(np.full(50, 0.25), n_boot=200)       # a constant sample: no sampling spread
    assert (const.lo, const.hi, const.width) == (0.25, 0.25, 0.0)


def test_difference_interval_excludes_zero_only_for_a_real_difference():
    rng = np.random.default_rng(6)
    a = (rng.random(4000) < 0.75).astype(float)
    planted = np.where(rng.random(4000) < 0.10, 0.0, a)              # 10% of users turned to failures
    same_rate = (rng.random(4000) < 0.75).astype(float)              # another model, no true difference
    boot = stats.bootstrap_means(np.stack([a, planted, same_rate], 1), n_boot=1000, seed=0)
    real = stats.percentile_interval(a.mean() - planted.mean(), boot[:, 0] - boot[:, 1])
    none = stats.percentile_interval(a.mean() - same_rate.mean(), boot[:, 0] - boot[:, 2])
    assert real.lo > 0
    assert none.lo < 0 < none.hi


def test_bootstrap_means_pairs_columns_on_the_same_users():
    a = outcomes(0.7, 2000, seed=2)
    boot = stats.bootstrap_means(np.stack([a, a], 1), n_boot=300, seed=0)   # [B, 2]
    assert boot.shape == (300, 2)
    assert np.array_equal(boot[:, 0], boot[:, 1])            # identical users drawn for both columns
    assert np.array_equal(stats.bootstrap_means(a, 300, seed=0), boot[:, 0])


def test_bootstrap_pvalue_separates_a_real_difference_from_none():
    rng = np.random.default_rng(3)
    a = (rng.random(5000) < 0.80).astype(float)
    flip = rng.random(5000) < 0.05                            # b = a with 5% of users turned to failures
    b = np.where(flip, 0.0, a)
    boot = stats.bootstrap_means(np.stack([a, b], 1), n_boot=1000, seed=0)
    diff = boot[:, 0] - boot[:, 1]
    assert stats.bootstrap_pvalue(a.mean() - b.mean(), diff) < 0.01
    same = boot[:, 0] - boot[:, 0]
    assert stats.bootstrap_pvalue(0.0, same) == 1.0


def test_mcnemar_counts_discordant_users():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0])
    res = stats.mcnemar(a, b)
    assert (res.only_a, res.only_b) == (3, 1)
    assert np.isclose(res.p_value, 0.625)                    # exact binomial: 2 * P(X <= 1 | n=4, 1/2)
    assert stats.mcnemar(a, a).p_value == 1.0


def test_kendall_tau_of_agreeing_and_reversed_rankings():
    paper = np.array([0.70, 0.78, 0.79, 0.80])
    assert stats.kendall_tau(paper, paper + 0.01)[0] == 1.0
    assert stats.kendall_tau(paper, -paper)[0] == -1.0
    assert np.isnan(stats.kendall_tau(paper[:1], paper[:1])[0])
