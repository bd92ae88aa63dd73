"""Rendering: the report's markdown from already-loaded inputs, section by section, and Table 3 itself.

Pure apart from the clock in the header: every input (runs, column statistics, figure paths, curves) is passed
in, so the same MLflow data always gives the same document.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.agreement import agreement_section, paper_ranking_lines
from reports.cells import (format_measured, headline_groups, of_group, protocol_label_of, protocol_order,
                           summarize_cells)
from reports.labels import (DASH, DIAGNOSTIC_PROTOCOLS, PAPER_METRIC, column_title, dataset_order, label, model_order,
                            md_code, md_text, paper_column_of, paper_value)
from reports.protocols import headline_section, optimism_section, selection_section
from reports.provenance import header_lines, provenance_section
from reports.runs import RunFilter
from reports.significance import ColumnStats, significance_lines


def _best_means(cells: pd.DataFrame, columns: list[str]) -> dict[str, float | None]:
    """Per dataset, the best mean over the cells with a value (the one set in bold)."""
    best = {}
    for d in columns:
        means = cells[(cells["dataset"] == d) & (cells["n"] > 0)]["mean"]
        best[d] = means.max() if len(means) else None
    return best


def table3_markdown(cells: pd.DataFrame, metric: str = PAPER_METRIC, datasets: tuple[str, ...] = ()) -> str:
    """One (protocol, recipe) group's Table 3: model rows x (measured | paper | diff) per dataset, best in bold."""
    columns = dataset_order(cells, datasets)
    by_key = {(r.dataset, r.model): r for r in cells.itertuples(index=False)}
    pcol = {d: paper_column_of(d, next((r.paper_column for r in cells.itertuples() if r.dataset == d), None))
            for d in columns}
    best = _best_means(cells, columns)
    header = ["Model"] + [h for d in columns for h in (f"{column_title(d, pcol[d])}: {metric}", "paper", "Δ")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for m in model_order(set(cells["model"])):
        out = [label(m)]
        for d in columns:
            r = by_key.get((d, m))
            cell = pd.Series(r._asdict()) if r is not None else None
            is_best = cell is not None and cell["n"] > 0 and best[d] is not None and cell["mean"] == best[d]
            pv = paper_value(m, pcol[d], metric)
            diff = (f"{cell['mean'] - pv:+.4f}" if cell is not None and cell["n"] > 0 and pv is not None else DASH)
            out += [format_measured(cell, is_best), f"{pv:.4f}" if pv is not None else DASH, diff]
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def figure_links(paths: list[Path]) -> list[str]:
    """Markdown images for PNGs written beside the report."""
    return [f"![{p.stem}]({p.name})" for p in paths]


def _protocols_line(cells: pd.DataFrame, protocols: list[str]) -> str:
    def plabel(p: str) -> str:
        return md_text(protocol_label_of(cells, p)) + (" (diagnostic only: its own section below, never a Table 3)"
                                              if p in DIAGNOSTIC_PROTOCOLS else "")
    return "Protocols in this report: " + "; ".join(f"{md_code(p)} = {plabel(p)}" for p in protocols) + "."


def _table3_section(picked: pd.DataFrame, cells: pd.DataFrame, proto: str, recipe: str, *, metric: str,
                    datasets: tuple[str, ...], column_stats_by_key: dict[tuple[str, str, str], ColumnStats],
                    figures: list[Path], n_boot: int, missing_outcomes: tuple[str, ...]) -> list[str]:
    """One headline table: Table 3, its "Is it real?" statistics, the paper-vs-ours ranking and its figures."""
    g = of_group(cells, proto, recipe)
    plabel = md_text(g["protocol_label"].iloc[0])
    run_ids = set(of_group(picked, proto, recipe)["run_id"])
    by_dataset = {k[2]: v for k, v in column_stats_by_key.items() if k[:2] == (proto, recipe)}
    out = ["", f"## Table 3: {plabel} (protocol {md_code(proto)}, recipe {md_code(recipe)})", "",
           (f"These numbers use the {md_code(proto)} protocol: {plabel}. Cells: mean ± sd over seeds (n = seeds "
            f"that finished); paper = ATRank Table 3; Δ = ours − paper; best per column in bold; {DASH} = "
            "no run."), "",
           table3_markdown(g, metric, datasets), "", "### Is it real?", "",
           *significance_lines(g, run_ids, by_dataset, metric, n_boot, missing_outcomes),
           *paper_ranking_lines(g, metric)]
    if figures:
        out += ["", "### Figures", ""] + figure_links(figures)
    return out


def render_report(picked: pd.DataFrame, *, runs: pd.DataFrame | None = None, title: str, metric: str,
                  tracking_uri: str, flt: RunFilter, column_stats_by_key: dict[tuple[str, str, str], ColumnStats],
                  figures: dict[tuple[str, str], list[Path]], command: str, n_boot: int, note: str = "",
                  missing_outcomes: tuple[str, ...] = (), curves: pd.DataFrame | None = None,
                  diagnostic_figures: list[Path] = ()) -> str:
    """The markdown document from already-loaded inputs (pure apart from the clock). Diagnostic protocols
    (DIAGNOSTIC_PROTOCOLS) get their own section only, never a Table 3; `curves` (optional) gives the optimism
    section the test-selected steps."""
    out = header_lines(picked, title=title, metric=metric, tracking_uri=tracking_uri, flt=flt, command=command,
                       note=note)
    if picked.empty:
        return "\n".join(out + ["No runs match these filters."]) + "\n"
    cells = summarize_cells(picked, metric)
    groups = headline_groups(cells)
    protocols = protocol_order(cells)
    out.append(_protocols_line(cells, protocols))
    out += headline_section(picked)
    if not groups:
        out += ["", "No Table 3: only diagnostic runs match these filters."]
    for proto, recipe in groups:
        out += _table3_section(picked, cells, proto, recipe, metric=metric, datasets=flt.datasets,
                               column_stats_by_key=column_stats_by_key, figures=figures.get((proto, recipe), []),
                               n_boot=n_boot, missing_outcomes=missing_outcomes)
    out += selection_section(picked)
    diagnostic = optimism_section(picked, curves)
    out += diagnostic + ([""] + figure_links(diagnostic_figures) if diagnostic and diagnostic_figures else [])
    if groups:
        out += agreement_section(picked, groups)
    out += provenance_section(picked, cells, protocols, runs)
    return "\n".join(out) + "\n"
