"""Protocol comparison: the `paper` protocol (checkpoint selected on the test set) against `loo_val` (selected on
validation), and the `optimism` diagnostic that measures what test-set selection adds on one split.

Diagnostic protocols never get a Table 3 nor intervals: their runs only feed the section "Optimism of test-set
selection (diagnostic)", so a diagnostic number can never be read as a headline one.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.cells import format_cell, format_logged, wide_cell, wide_cells
from reports.labels import (DASH, DIAGNOSTIC_PROTOCOLS, PAPER_METRIC, column_title, dataset_order, fmt_num, label,
                            md_code, md_text, model_order, paper_column_of)
from reports.runs import finished

OPTIMISM_COLUMNS = (("test_auc_at_test_best", "test AUC at the test-selected step"),
                    ("test_auc", "test AUC at the validation-selected step"),
                    ("optimism", "difference"))
SIDE_STATS = ("mean", "sd", "n", "n_failed", "statuses", "n_finished")   # kept per protocol in selection_comparison
OPTIMISM_INTRO = (
    "the `loo_val` split and selection on validation, but the test set is also evaluated at every evaluation{every}. "
    "*Test-selected* = the best test AUC seen along training (`test_auc_at_test_best`) = what the paper's test-set "
    "selection would report on this split; *validation-selected* = the test AUC of the weights validation picks "
    "(`test_auc`, the honest number); optimism = their difference (logged as `optimism`, ≥ 0 by construction). These "
    "runs appear in no Table 3 above.")
SELECTION_INTRO = (
    "`test_auc` per model under both protocols (mean ± sd over finished seeds, n). Both test each user's last item, "
    "but `paper` selects the checkpoint with the best TEST AUC and trains on one more item per user (no validation "
    "item held out), while `loo_val` selects on validation and reads test once; so paper − loo_val mixes selection "
    "optimism with that extra training item (the optimism diagnostic, when present, isolates the selection part on "
    "one split).")


def selected_steps(picked: pd.DataFrame, curves: pd.DataFrame | None) -> dict[str, tuple[float, float | None]]:
    """run id -> (validation-selected step = metrics.best_step, test-selected step = first argmax of
    curve/test_auc, or None without that curve)."""
    out = {}
    for _, r in picked.iterrows():
        test_step = None
        if curves is not None and len(curves):
            t = curves[(curves["run_id"] == r["run_id"]) & (curves["key"] == "curve/test_auc")].sort_values("step")
            if len(t):
                test_step = float(t["step"].iloc[int(np.argmax(t["value"].to_numpy()))])
        out[r["run_id"]] = (r.get("metrics.best_step", math.nan), test_step)
    return out


def optimism_cells(picked: pd.DataFrame) -> pd.DataFrame:
    """The optimism runs' three numbers per (recipe, dataset, model), as wide cells over finished seeds."""
    return wide_cells(picked[picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS)], tuple(m for m, _ in OPTIMISM_COLUMNS))


def optimism_vs_loo_val(picked: pd.DataFrame) -> pd.DataFrame:
    """Cross-check: an optimism run and the loo_val run of the same (recipe, dataset, model, seed) share split and
    selection, so their test_auc should agree. Rows: recipe, dataset, model, seed, optimism, loo_val, diff."""
    cols = ["recipe", "dataset", "model", "seed", "optimism", "loo_val", "diff"]
    done = picked[(picked["status"] == "FINISHED") & picked["metrics.test_auc"].notna() & ~picked["from_optimism"]]
    key = ["recipe", "dataset", "model", "seed"]
    a, b = (done[done["protocol"] == p][key + ["metrics.test_auc"]].rename(columns={"metrics.test_auc": p})
            for p in ("optimism", "loo_val"))
    both = a.merge(b, on=key)
    return both.assign(diff=both["optimism"] - both["loo_val"])[cols] if len(both) else pd.DataFrame(columns=cols)


def _dataset_blocks(cells: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(recipe, dataset, its rows in model order) for the table blocks of the selection sections."""
    out = []
    for recipe in sorted(set(cells["recipe"]), key=lambda r: (r != "default", r)):
        sub = cells[cells["recipe"] == recipe]
        for d in dataset_order(sub):
            rows = sub[sub["dataset"] == d]
            order = {m: i for i, m in enumerate(model_order(set(rows["model"])))}
            out.append((recipe, d, rows.assign(_o=rows["model"].map(order)).sort_values("_o").drop(columns="_o")))
    return out


def _block_title(recipe: str, dataset: str, paper_column: str | None, n_recipes: int) -> str:
    title = column_title(dataset, paper_column_of(dataset, paper_column))
    return f"**{title}**" + (f", recipe {md_code(recipe)}" if n_recipes > 1 or recipe != "default" else "")


def _optimism_intro(opt_runs: pd.DataFrame) -> list[str]:
    """The warning that these are diagnostics, what the three columns mean and how the steps were picked."""
    plabel = md_text(opt_runs["protocol_label"].iloc[0] or "diagnostic")
    every = sorted(set(opt_runs["params.trainer.eval_every"].dropna().astype(str)) - {"", "None"})
    return [f"> **DIAGNOSTIC, not a headline number.** Protocol `optimism` ({plabel}): "
            + OPTIMISM_INTRO.format(every=f" (every {', '.join(every)} steps)" if every else ""), "",
            "Cells: mean ± sd over finished seeds (n); " + DASH + " = not logged. Steps: the evaluation each "
            "selection picked, per seed (validation / test; from `best_step` and the `curve/test_auc` history)."]


def _optimism_row(r: pd.Series, steps: dict[str, tuple[float, float | None]]) -> str:
    per_seed = [f"seed {seed}: {fmt_num(steps[rid][0])} / {fmt_num(steps[rid][1])}"
                for seed, rid in zip(r["seeds"], r["run_ids"]) if rid in steps]
    return (f"| {label(r['model'])} | " + " | ".join(format_cell(r, m) for m, _ in OPTIMISM_COLUMNS)
            + f" | {'; '.join(per_seed) or DASH} |")


def _optimism_summary(cells: pd.DataFrame, steps: dict[str, tuple[float, float | None]],
                      opt_runs: pd.DataFrame) -> list[str]:
    """The range of optimism over the cells; an exact 0 where both selections picked the same step is called
    unmeasurable at this budget, not evidence that test-set selection is harmless."""
    have = cells[cells["optimism:n"] > 0]
    if not len(have):
        return []
    lo, hi = have["optimism:mean"].min(), have["optimism:mean"].max()
    text = (f"Across {len(have)} model/dataset cell(s) with a value: optimism from {lo:+.4f} to {hi:+.4f} "
            f"(mean {have['optimism:mean'].mean():+.4f}).")
    all_same = all(t is not None and v == t for v, t in steps.values())
    all_final = all(v == opt_runs[opt_runs["run_id"] == rid].iloc[0].get("metrics.steps", math.nan)
                    for rid, (v, _) in steps.items())
    if all_same and hi == 0:
        text += (" Every run's two selections picked the same evaluation"
                 + (", the last one (both curves were at their best at the end of training)" if all_final else "")
                 + ", so the optimism is exactly 0 here: this budget cannot measure it, which is no evidence "
                 "that test-set selection is harmless at the paper's budget.")
    return ["", text]


def _cross_check(picked: pd.DataFrame) -> list[str]:
    check = optimism_vs_loo_val(picked)
    if not len(check):
        return []
    worst = check.loc[check["diff"].abs().idxmax()]
    same = int((check["diff"].abs() < 5e-5).sum())
    return ["", (f"Cross-check: the validation-selected test AUC of an optimism run should equal the `loo_val` "
            f"run's test_auc for the same model and seed (same split, same selection): equal to 4 decimals for "
            f"{same} of {len(check)} pair(s); largest |difference| {abs(worst['diff']):.6f} "
            f"({label(worst['model'])}, seed {worst['seed']}).")]


def optimism_markdown(picked: pd.DataFrame, curves: pd.DataFrame | None = None) -> str:
    """The diagnostic section's body: per (recipe, dataset) a table of the optimism runs, then a cross-check."""
    opt_runs = picked[picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS)]
    cells = optimism_cells(picked)
    if cells.empty:
        return "No optimism runs match these filters."
    steps = selected_steps(finished(opt_runs), curves)
    lines = _optimism_intro(opt_runs)
    n_recipes = len(set(cells["recipe"]))
    for recipe, d, rows in _dataset_blocks(cells):
        lines += ["", _block_title(recipe, d, rows["paper_column"].iloc[0], n_recipes), "",
                  "| Model | " + " | ".join(f"{t} (`{m}`)" for m, t in OPTIMISM_COLUMNS)
                  + " | selected step, validation / test |", "|---|---:|---:|---:|---|"]
        lines += [_optimism_row(r, steps) for _, r in rows.iterrows()]
    return "\n".join(lines + _optimism_summary(cells, steps, opt_runs) + _cross_check(picked))


def selection_comparison(picked: pd.DataFrame) -> pd.DataFrame:
    """test_auc per (recipe, dataset, model) that has both a `paper` and a `loo_val` cell, side by side: wide cells
    with `paper:*` and `loo_val:*` columns and diff = paper − loo_val (NaN unless both have a value)."""
    cells = wide_cells(picked[picked["protocol"].isin(("paper", "loo_val"))], (PAPER_METRIC,))
    key = ["recipe", "dataset", "model"]
    cols = key + ["paper_column"] + [f"{p}:{c}" for p in ("paper", "loo_val") for c in SIDE_STATS] + ["diff"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    sides = []
    for p in ("paper", "loo_val"):
        s = cells[cells["protocol"] == p].rename(columns={f"{PAPER_METRIC}:{c}": c for c in ("mean", "sd", "n")})
        sides.append(s[key + ["paper_column"] * (p == "paper") + list(SIDE_STATS)].rename(
            columns={c: f"{p}:{c}" for c in SIDE_STATS}))
    both = sides[0].merge(sides[1], on=key)
    ok = (both["paper:n"] > 0) & (both["loo_val:n"] > 0)
    both["diff"] = np.where(ok, both["paper:mean"] - both["loo_val:mean"], np.nan)
    return both[cols].reset_index(drop=True)


def selection_comparison_markdown(cmp: pd.DataFrame) -> str:
    """Per (recipe, dataset): each model's test_auc under `paper` and `loo_val` and their difference."""
    lines = [SELECTION_INTRO]
    n_recipes = len(set(cmp["recipe"]))
    for recipe, d, rows in _dataset_blocks(cmp):
        lines += ["", _block_title(recipe, d, rows["paper_column"].iloc[0], n_recipes), "",
                  "| Model | paper (test-set selection) | loo_val (validation selection) | paper − loo_val |",
                  "|---|---:|---:|---:|"]
        for _, r in rows.iterrows():
            lines.append(f"| {label(r['model'])} | {format_logged(wide_cell(r, 'paper'))} | "
                         f"{format_logged(wide_cell(r, 'loo_val'))} | {fmt_num(r['diff'], '{:+.4f}')} |")
    return "\n".join(lines)


def selection_section(picked: pd.DataFrame) -> list[str]:
    """The "paper vs loo_val" section; none without a model run under both."""
    cmp = selection_comparison(picked)
    if not len(cmp):
        return []
    return ["", "## paper protocol (test-set selection) vs loo_val (validation selection)", "",
            selection_comparison_markdown(cmp)]


def headline_section(picked: pd.DataFrame) -> list[str]:
    """Models x datasets from the optimism runs: the validation-selected test AUC (mean ± sd over seeds, the honest
    number) with the test-selected one (what the paper's selection reports) beside it; none without such runs."""
    cells = optimism_cells(picked)
    if cells.empty:
        return []
    datasets = dataset_order(cells)
    models = model_order(set(cells["model"]))
    by = {(r["dataset"], r["model"]): r for _, r in cells[cells["recipe"] == "default"].iterrows()}
    columns = dict(zip(cells["dataset"], cells["paper_column"]))
    lines = ["", "## Headline: validation-selected test AUC, test-selected beside it", "",
             "Per cell: `test_auc` of the weights validation picks, mean ± sd over finished seeds (n); after the "
             "slash, the mean best test AUC seen along training (`test_auc_at_test_best`, test-set selection as "
             "in the paper, on the same runs). Recipe `default` only.", "",
             "| Model | " + " | ".join(column_title(d, paper_column_of(d, columns[d])) for d in datasets) + " |",
             "|---|" + "---:|" * len(datasets)]
    for m in models:
        row = [by.get((d, m)) for d in datasets]
        if all(r is None for r in row):
            continue
        lines.append(f"| {label(m)} | " + " | ".join(
            DASH if r is None else f"{format_logged(wide_cell(r, 'test_auc'))} / "
            f"{fmt_num(r['test_auc_at_test_best:mean'], '{:.4f}')}" for r in row) + " |")
    return lines + _run_time_line(finished(picked[picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS)]), datasets)


def _run_time_line(done: pd.DataFrame, datasets: list[str]) -> list[str]:
    """The summed wall time of the finished runs per dataset (what the sweep cost, one run at a time)."""
    hours = done["metrics.wall_time_s"].groupby(done["dataset"]).sum(min_count=1) / 3600   # as the provenance sums
    parts = [f"{md_text(d)} {hours[d]:.1f} h ({int((done['dataset'] == d).sum())} runs)" for d in datasets
             if d in hours and not math.isnan(hours[d])]
    return ["", "Wall time of the finished runs, summed (one thread each): " + "; ".join(parts) + "."] if parts else []


def optimism_section(picked: pd.DataFrame, curves: pd.DataFrame | None) -> list[str]:
    """The diagnostic section; none without a diagnostic run."""
    if not picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS).any():
        return []
    return ["", "## Optimism of test-set selection (diagnostic)", "", optimism_markdown(picked, curves)]
