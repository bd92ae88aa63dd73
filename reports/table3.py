"""ATRank Table 3 regenerated from MLflow: the public entry. `write_report` queries MLflow, computes the cells,
statistics and figures, renders the markdown and writes it atomically.

The I/O is here and in reports/runs.py; every module in between is a pure function on DataFrames:
runs (MLflow) -> cells -> significance, protocols, agreement -> render (+ provenance) -> this file writes.
One run per (protocol, recipe, dataset, model, seed) stands for its seed (runs.pick_runs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from datasets.atomic import atomic_write_text
from reports.cells import headline_groups, of_group, summarize_cells
from reports.labels import DIAGNOSTIC_PROTOCOLS, PAPER_METRIC
from reports.protocols import optimism_cells, selection_comparison
from reports.render import render_report
from reports.runs import (RunFilter, finished, load_curves, load_outcomes, optimism_as_loo_val, pick_runs,
                          query_runs)
from reports.significance import OUTCOME_COLUMN, ColumnStats, stats_by_column

__all__ = ["PAPER_METRIC", "Report", "RunFilter", "write_report"]


@dataclass
class Report:
    path: Path
    figures: list[Path]
    cells: pd.DataFrame
    stats: dict[tuple[str, str, str], ColumnStats]
    optimism: pd.DataFrame | None = None        # optimism_cells: the diagnostic runs' numbers
    selection: pd.DataFrame | None = None       # selection_comparison: paper vs loo_val test_auc


def _interval_stats(tracking_uri: str, picked: pd.DataFrame, metric: str,
                    n_boot: int) -> tuple[dict[tuple[str, str, str], ColumnStats], tuple[str, ...]]:
    """Paired statistics of the headline runs from their outcomes, and the finished runs that lack outcomes."""
    done = finished(picked[~picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS)])
    if metric not in OUTCOME_COLUMN or not len(done):
        return {}, ()
    outcomes = load_outcomes(tracking_uri, list(done["run_id"]))
    missing = tuple(r for r in done["run_id"] if r not in outcomes)
    return stats_by_column(done, outcomes, metric, n_boot), missing


def _curves(tracking_uri: str, picked: pd.DataFrame, with_figures: bool) -> pd.DataFrame | None:
    """Every curve for the figures; without figures, only the test curve the optimism section reads."""
    if with_figures and len(picked):
        return load_curves(tracking_uri, finished(picked))
    diagnostic = finished(picked[picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS)])
    return load_curves(tracking_uri, diagnostic, keys=("curve/test_auc",)) if len(diagnostic) else None


def _write_figures(picked: pd.DataFrame, cells: pd.DataFrame, curves: pd.DataFrame,
                   col_stats: dict[tuple[str, str, str], ColumnStats], *, metric: str, out_dir: Path,
                   name: str) -> tuple[dict[tuple[str, str], list[Path]], list[Path]]:
    """Each Table 3's PNGs (named `<name>[_<protocol>[_<recipe>]]_*.png` when there are several) and the
    diagnostic one."""
    from reports import figures as figs   # matplotlib only when figures are asked for

    groups = headline_groups(cells)
    figures: dict[tuple[str, str], list[Path]] = {}
    for proto, recipe in groups:
        suffix = "" if len(groups) == 1 else f"_{proto}" + ("" if recipe == "default" else f"_{recipe}")
        figures[(proto, recipe)] = figs.make_figures(
            of_group(picked, proto, recipe), of_group(cells, proto, recipe), curves,
            {k: v for k, v in col_stats.items() if k[:2] == (proto, recipe)},
            metric=metric, out_dir=out_dir, stem=f"{name}{suffix}")
    if not len(finished(picked[picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS)])):
        return figures, []
    made = figs.optimism_figure(picked, curves, out_dir / f"{name}_optimism.png")
    return figures, [made] if made is not None else []


def write_report(tracking_uri: str, flt: RunFilter = RunFilter(), *, out_dir: Path, name: str,
                 metric: str = PAPER_METRIC, n_boot: int = 2000, with_figures: bool = True,
                 title: str | None = None, note: str = "", command: str = "python runners/report.py",
                 optimism_headline: bool = False) -> Report:
    """Query MLflow, compute, and write `<out_dir>/<name>.md` with its PNGs beside it (each file atomically, so a
    crash leaves the previous report or none, never half of one). `optimism_headline`: the optimism runs'
    validation-selected test AUC also fills a `loo_val` Table 3 (runs.optimism_as_loo_val)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = query_runs(tracking_uri, flt)
    if optimism_headline:
        runs = optimism_as_loo_val(runs)
    picked = pick_runs(runs)
    cells = summarize_cells(picked, metric)
    col_stats, missing = _interval_stats(tracking_uri, picked, metric, n_boot)
    curves = _curves(tracking_uri, picked, with_figures)
    figures, diagnostic_figures = {}, []
    if with_figures and len(picked):
        figures, diagnostic_figures = _write_figures(picked, cells, curves, col_stats, metric=metric, out_dir=out_dir,
                                                     name=name)
    text = render_report(picked, runs=runs, title=title or f"ATRank Table 3 regenerated: {name}", metric=metric,
                         tracking_uri=tracking_uri, flt=flt, column_stats_by_key=col_stats, figures=figures,
                         command=command, n_boot=n_boot, note=note, missing_outcomes=missing, curves=curves,
                         diagnostic_figures=diagnostic_figures)
    path = out_dir / f"{name}.md"
    atomic_write_text(path, text)
    made = [p for ps in figures.values() for p in ps] + diagnostic_figures
    if not len(picked):
        return Report(path, made, cells, col_stats)
    return Report(path, made, cells, col_stats, optimism_cells(picked), selection_comparison(picked))
