"""Is a difference real? Paired per-user statistics of the models of one table column, and their markdown.

Intervals bootstrap USERS; with several seeds a user's outcome is averaged over that model's seeds first, so the
interval measures test-user sampling for these seeds (seed spread is the table's sd). Every model of a column is
resampled with the same user draws, so differences are paired. The statistics themselves are in reports/stats.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reports import stats
from reports.labels import DASH, column_title, dataset_order, fmt_p, label, model_order, paper_column_of
from reports.runs import seed_key

OUTCOME_COLUMN = {"test_auc": "correct"}   # metrics that are a mean of a per-user column of test_outcomes.csv
PAIR_KEYS = ["reviewerID", "pos", "neg"]   # a user's test pair; models are paired on identical pairs only
POP = "pop"                                # the floor every learned model must clear


@dataclass
class AdjacentTest:
    a: str
    b: str
    diff: float                       # mean outcome of a minus b
    p_bootstrap: float
    mcnemar: stats.McNemar | None     # on one common seed's 0/1 outcomes
    mcnemar_seed: str | None


@dataclass
class ColumnStats:
    """Paired statistics of the models of one table column, on the users every one of them was tested on."""
    dataset: str
    n_users: int
    models: list[str]
    n_seeds: dict[str, int]
    ci: dict[str, stats.Interval]
    best: str
    diff_to_best: dict[str, stats.Interval]
    p_vs_best: dict[str, float]
    adjacent: list[AdjacentTest] = field(default_factory=list)
    dropped_users: int = 0
    diff_to_pop: dict[str, stats.Interval] = field(default_factory=dict)   # paired, when POP is in the column


def seed_matrix(outcomes: dict[str, pd.DataFrame], column: str = "correct") -> pd.DataFrame:
    """seed -> outcome frame, joined on the test pair: one column per seed (users present in every seed)."""
    joined = None
    for seed, df in outcomes.items():
        part = df[PAIR_KEYS + [column]].rename(columns={column: seed})
        joined = part if joined is None else joined.merge(part, on=PAIR_KEYS, how="inner")
    return joined


def _paired_users(mats: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The users every model was tested on, from each model's seed_matrix: column `<model>` is the seed-averaged
    outcome, `<model>@<seed>` one seed's outcome (for McNemar)."""
    joined = None
    for m, mat in mats.items():
        seeds = list(mat.columns[len(PAIR_KEYS):])
        part = mat[PAIR_KEYS].assign(**{m: mat[seeds].to_numpy(float).mean(1)})
        for s in seeds:
            part[f"{m}@{s}"] = mat[s].to_numpy()
        joined = part if joined is None else joined.merge(part, on=PAIR_KEYS, how="inner")
    return joined


def _adjacent_tests(models: list[str], per_model: dict, joined: pd.DataFrame, est: np.ndarray,
                    boot: np.ndarray) -> list[AdjacentTest]:
    """Each model against the next one in table order: bootstrap p and McNemar on their first common seed."""
    adjacent = []
    for i in range(len(models) - 1):
        a, b = models[i], models[i + 1]
        d = boot[:, i] - boot[:, i + 1]
        common = sorted(set(per_model[a]) & set(per_model[b]), key=seed_key)
        mc = stats.mcnemar(joined[f"{a}@{common[0]}"], joined[f"{b}@{common[0]}"]) if common else None
        adjacent.append(AdjacentTest(a, b, float(est[i] - est[i + 1]), stats.bootstrap_pvalue(est[i] - est[i + 1], d),
                                     mc, common[0] if common else None))
    return adjacent


def column_stats(dataset: str, per_model: dict[str, dict[str, pd.DataFrame]], order: list[str],
                 column: str = "correct", n_boot: int = 2000, seed: int = 0) -> ColumnStats | None:
    """per_model: model -> seed -> outcome frame. Users are resampled jointly for all models (paired)."""
    models = [m for m in order if per_model.get(m)]
    if not models:
        return None
    mats = {m: seed_matrix(per_model[m], column) for m in models}
    joined = _paired_users(mats)
    x = joined[models].to_numpy(float)                          # [U, M] seed-averaged outcomes
    boot = stats.bootstrap_means(x, n_boot, seed)               # [B, M], same user draws for every model
    est = x.mean(0)
    best_i = int(np.argmax(est))
    ci = {m: stats.percentile_interval(est[i], boot[:, i]) for i, m in enumerate(models)}

    def diff(i: int, j: int) -> stats.Interval:   # model i minus model j, on the same user resamples
        return stats.percentile_interval(est[i] - est[j], boot[:, i] - boot[:, j])

    diff_best = {m: diff(i, best_i) for i, m in enumerate(models)}
    p_best = {m: stats.bootstrap_pvalue(est[i] - est[best_i], boot[:, i] - boot[:, best_i]) if i != best_i
              else math.nan for i, m in enumerate(models)}
    pop_i = models.index(POP) if POP in models else None
    diff_pop = {} if pop_i is None else {m: diff(i, pop_i) for i, m in enumerate(models) if i != pop_i}
    return ColumnStats(dataset, len(x), models, {m: len(per_model[m]) for m in models}, ci, models[best_i],
                       diff_best, p_best, _adjacent_tests(models, per_model, joined, est, boot),
                       dropped_users=max(map(len, mats.values())) - len(x), diff_to_pop=diff_pop)


def stats_by_column(done: pd.DataFrame, outcomes: dict[str, pd.DataFrame], metric: str,
                    n_boot: int) -> dict[tuple[str, str, str], ColumnStats]:
    """(protocol, recipe, dataset) -> ColumnStats of the finished runs `done`, from their per-user outcomes."""
    out: dict[tuple[str, str, str], ColumnStats] = {}
    for (proto, recipe, d), g in done.groupby(["protocol", "recipe", "dataset"]):
        per_model: dict[str, dict[str, pd.DataFrame]] = {}
        for r in g.itertuples():
            if r.run_id in outcomes:
                per_model.setdefault(r.model, {})[r.seed] = outcomes[r.run_id]
        col = column_stats(d, per_model, model_order(set(g["model"])), OUTCOME_COLUMN[metric], n_boot)
        if col is not None:
            out[(proto, recipe, d)] = col
    return out


def significance_markdown(col: ColumnStats, title: str) -> str:
    """One column's intervals against the best model, then each pair of adjacent rows."""
    lines = [f"**{title}**: {col.n_users:,} test users paired across {len(col.models)} model(s)"
             + (f" ({col.dropped_users:,} users not shared by every model left out)" if col.dropped_users else "")
             + f"; best: {label(col.best)}.", "",
             "| Model | seeds | AUC (per-user mean) | 95% CI | Δ to best | 95% CI of Δ | p (Δ = 0) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m in col.models:
        c, d = col.ci[m], col.diff_to_best[m]
        same = m == col.best
        lines.append(f"| {label(m)} | {col.n_seeds[m]} | {c.estimate:.4f} | [{c.lo:.4f}, {c.hi:.4f}] | "
                     f"{'best' if same else f'{d.estimate:+.4f}'} | {DASH if same else f'[{d.lo:+.4f}, {d.hi:+.4f}]'} "
                     f"| {fmt_p(col.p_vs_best[m])} |")
    if col.adjacent:
        lines += ["", "Adjacent rows (table order):", "",
                  "| Pair | Δ (upper − lower) | bootstrap p | McNemar: only upper / only lower right | McNemar p |",
                  "|---|---:|---:|---:|---:|"]
        for t in col.adjacent:
            mc = (f"{t.mcnemar.only_a:,} / {t.mcnemar.only_b:,} (seed {t.mcnemar_seed})", fmt_p(t.mcnemar.p_value)) \
                if t.mcnemar else (DASH, DASH)
            lines.append(f"| {label(t.a)} vs {label(t.b)} | {t.diff:+.4f} | {fmt_p(t.p_bootstrap)} | {mc[0]} "
                         f"| {mc[1]} |")
    return "\n".join(lines + pop_floor_lines(col))


def pop_floor_lines(col: ColumnStats) -> list[str]:
    """Each model against POP: the paired difference, and whether it exceeds the model's own 95% CI half-width
    (the bar a learned model must clear to count as beating popularity)."""
    if not col.diff_to_pop:
        return []
    lines = ["", "Against POP (paired on the same users; clears = Δ larger than the model's 95% CI half-width):", "",
             "| Model | Δ to POP | 95% CI of Δ | model's CI half-width | clears POP |", "|---|---:|---:|---:|---|"]
    for m, d in col.diff_to_pop.items():
        half = col.ci[m].width / 2
        lines.append(f"| {label(m)} | {d.estimate:+.4f} | [{d.lo:+.4f}, {d.hi:+.4f}] | {half:.4f} | "
                     f"{'yes' if d.estimate > half else '**no**'} |")
    return lines


def significance_lines(cells: pd.DataFrame, run_ids: set[str], by_dataset: dict[str, ColumnStats], metric: str,
                       n_boot: int, missing_outcomes: tuple[str, ...] = ()) -> list[str]:
    """The body of one table's "Is it real?" section: how the intervals are made, which runs lack outcomes, then
    each dataset's statistics (`by_dataset`: dataset -> ColumnStats of this table)."""
    if metric not in OUTCOME_COLUMN:
        return [f"Per-user outcomes define `{', '.join(OUTCOME_COLUMN)}` only; no intervals for `{metric}`."]
    out = [f"Percentile bootstrap over test users ({n_boot:,} resamples, the same draws for every model "
           "so differences are paired). With several seeds, each user's outcome is first averaged over "
           "that model's seeds: the intervals measure test-user sampling, the table's sd measures seeds. "
           "p (Δ = 0): two-sided bootstrap p-value; McNemar: exact test on one common seed's 0/1 "
           "outcomes."]
    lacking = [r for r in missing_outcomes if r in run_ids]
    if lacking:
        out.append("Finished runs without an outcomes artifact, left out of the intervals: "
                   + ", ".join(f"`{r}`" for r in lacking) + ".")
    for d in dataset_order(cells):
        col = by_dataset.get(d)
        if col is not None:
            pcol = paper_column_of(d, cells[cells["dataset"] == d]["paper_column"].iloc[0])
            out += ["", significance_markdown(col, column_title(d, pcol))]
    return out
