"""runners/benchkit/bench_measure's timing plans: which batches are timed, in what order, and what each stratum stands for.
(The timings themselves are never asserted: they depend on the machine.)"""
from __future__ import annotations

import numpy as np

from runners.benchkit.bench_measure import consecutive_plan, draw_strata, stratified_plan, stratum_index


def epoch_widths() -> np.ndarray:
    """120 batches: narrow ones (1-8 wide) in a shuffled order and three 300-wide ones near the end."""
    rng = np.random.default_rng(0)
    widths = rng.choice([1, 2, 3, 5, 8], size=120)
    widths[[100, 110, 119]] = 300
    return widths


def test_consecutive_plan_times_the_epochs_own_order_after_the_warm_up():
    widths = epoch_widths()
    (warm, warm_order), (picks, order) = consecutive_plan(widths, window=50, warmup=5, extra=2,
                                                          rng=np.random.default_rng(1))
    assert [i for _, i in warm_order] == [0, 1, 2, 3, 4]
    assert [i for _, i in order[:50]] == list(range(5, 55))  # the window, in the epoch's order
    which = stratum_index(widths)
    assert [n for n, _ in picks] == [int((which == k).sum()) for k in np.unique(which)]  # counts: the whole epoch
    for position, i in order:  # every timed batch is counted in its own stratum
        assert i in picks[position][1] and which[i] == np.unique(which)[position]


def test_a_stratum_the_window_misses_is_timed_on_batches_drawn_from_it():
    widths = epoch_widths()
    _, (picks, order) = consecutive_plan(widths, window=50, warmup=5, extra=2, rng=np.random.default_rng(1))
    n_wide, wide = picks[-1]
    assert n_wide == 3 and len(wide) == 2 and set(wide) <= {100, 110, 119}
    assert [i for _, i in order[50:]] == wide  # after the window
    assert len(order) == 52


def test_a_window_longer_than_the_epoch_times_every_batch_after_the_warm_up():
    widths = epoch_widths()
    (_, warm_order), (picks, order) = consecutive_plan(widths, window=10_000, warmup=20, extra=3,
                                                      rng=np.random.default_rng(2))
    assert len(warm_order) == 20 and [i for _, i in order] == list(range(20, 120))
    assert sum(len(idx) for _, idx in picks) == 100


def test_stratified_plan_warms_up_then_repeats_every_drawn_batch():
    widths = epoch_widths()
    strata = draw_strata(widths, 4, np.random.default_rng(3))
    plan = stratified_plan(strata, warmup=1, repeats=2, rng=np.random.default_rng(4))
    assert len(plan) == 3 and plan[1][0] is strata
    drawn = sorted(i for _, idx in strata for i in idx)
    assert sorted(i for _, i in plan[1][1]) == drawn and sorted(i for _, i in plan[2][1]) == drawn
    assert len(plan[0][1]) == len(strata)  # one warm-up batch per stratum


def test_the_machine_line_names_the_cpu_generation_and_its_vector_extensions():
    from runners.bench import cpu_description

    zen5 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
            "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert cpu_description(zen5) == "AMD EPYC (family 26 model 2, avx2 avx512f avx512_bf16)"
    assert cpu_description("model name\t: Some CPU\nflags\t: sse\n") == "Some CPU"
    assert cpu_description("") == "unknown CPU"
