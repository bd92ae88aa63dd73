"""Table cells: one per (protocol, recipe, dataset, model), the mean and sd of a metric over its finished seeds,
and how a cell reads in markdown.

A cell is mean +- sd (ddof=1) over the seeds that finished; failed seeds are counted, never averaged. Metrics a run
did not log show as a dash, never as a number.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.labels import DASH, DIAGNOSTIC_PROTOCOLS, PAPER_METRIC
from reports.runs import GROUP, seed_key

CELL_STATS = ("mean", "sd", "n", "n_failed", "statuses")   # what format_measured reads


def summarize_cells(picked: pd.DataFrame, metric: str = PAPER_METRIC) -> pd.DataFrame:
    """Per (protocol, recipe, dataset, model): mean, sd, n over finished seeds, failed counts, seeds, run ids."""
    cols = GROUP + ["mean", "sd", "n", "n_failed", "statuses", "seeds", "run_ids", "paper_column", "protocol_label"]
    rows = []
    for key, g in picked.groupby(GROUP, sort=False):
        g = g.sort_values("seed", key=lambda s: s.map(seed_key))
        done = g[(g["status"] == "FINISHED") & g[f"metrics.{metric}"].notna()] if f"metrics.{metric}" in g else g[:0]
        values = done[f"metrics.{metric}"].to_numpy(float) if len(done) else np.array([])
        rows.append((*key, float(values.mean()) if len(values) else math.nan,
                     float(values.std(ddof=1)) if len(values) > 1 else math.nan, len(values),
                     int((g["status"] == "FAILED").sum()), tuple(g["status"]), tuple(g["seed"]), tuple(g["run_id"]),
                     g["paper_column"].iloc[0], g["protocol_label"].iloc[0]))
    return pd.DataFrame(rows, columns=cols)


def wide_cells(picked: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """summarize_cells for several metrics at once: one row per (protocol, recipe, dataset, model) with
    `<metric>:mean`, `<metric>:sd`, `<metric>:n` (n = finished seeds that logged the metric; a metric no run logged
    has n = 0, never a value) and n_finished."""
    base = None
    for m in metrics:
        c = summarize_cells(picked, m).rename(columns={"mean": f"{m}:mean", "sd": f"{m}:sd", "n": f"{m}:n"})
        base = c if base is None else base.merge(c[GROUP + [f"{m}:mean", f"{m}:sd", f"{m}:n"]], on=GROUP)
    if base is None or base.empty:
        return pd.DataFrame(columns=GROUP + ["n_finished"])
    base["n_finished"] = [sum(s == "FINISHED" for s in st) for st in base["statuses"]]
    return base


def table_groups(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(protocol, recipe) pairs, the paper protocol and the default recipe first."""
    pairs = set(zip(cells["protocol"], cells["recipe"]))
    return sorted(pairs, key=lambda p: (p[0] != "paper", p[0], p[1] != "default", p[1]))


def headline_groups(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """table_groups without the diagnostic protocols: the (protocol, recipe) pairs that get a Table 3."""
    return [g for g in table_groups(cells) if g[0] not in DIAGNOSTIC_PROTOCOLS]


def of_group(frame: pd.DataFrame, protocol: str, recipe: str) -> pd.DataFrame:
    """The rows (runs or cells) of one (protocol, recipe) table."""
    return frame[(frame["protocol"] == protocol) & (frame["recipe"] == recipe)]


def format_measured(cell: pd.Series | dict | None, bold: bool = False) -> str:
    """'0.7470 ± 0.0031 (n=2)', '0.7470 (n=1; 1 FAILED)', 'FAILED ×2', or a dash when nothing ran."""
    if cell is None:
        return DASH
    other = [s for s in cell["statuses"] if s not in ("FINISHED", "FAILED")]
    notes = ([f"{cell['n_failed']} FAILED"] if cell["n_failed"] else []) + [s for s in sorted(set(other))]
    if cell["n"] == 0:
        failed = f"FAILED ×{cell['n_failed']}" if cell["n_failed"] else ""
        return ", ".join(x for x in [failed] + sorted(set(other)) if x) or "no metric"
    value = f"**{cell['mean']:.4f}**" if bold else f"{cell['mean']:.4f}"
    sd = f" ± {cell['sd']:.4f}" if cell["n"] > 1 else ""
    return f"{value}{sd} (n={cell['n']}{'; ' + ', '.join(notes) if notes else ''})"


def wide_cell(row: pd.Series | dict, prefix: str, stats: tuple[str, ...] = CELL_STATS) -> dict:
    """One metric's (or one protocol's) cell out of a wide row: `<prefix>:mean` -> `mean`, and so on. A column the
    row shares across its metrics (n_failed, statuses) is read unprefixed when there is no prefixed one."""
    return {s: row[f"{prefix}:{s}"] if f"{prefix}:{s}" in row else row[s] for s in stats}


def format_logged(cell: dict) -> str:
    """format_measured, except that finished runs that did not log the metric give a dash rather than 'no metric'."""
    if cell["n"] == 0 and not cell["n_failed"] and set(cell["statuses"]) <= {"FINISHED"}:
        return DASH
    return format_measured(cell)


def format_cell(row: pd.Series | dict | None, metric: str) -> str:
    """format_measured of one metric of a wide row; finished runs that did not log the metric give a dash."""
    if row is None:
        return DASH
    return format_logged(wide_cell(row, metric))


def format_value(row: pd.Series | dict, metric: str) -> str:
    """Compact: '0.6174', '0.6174 ± 0.0021', '0.6174 (n=1)' when fewer seeds logged it than finished; dash if none."""
    c = wide_cell(row, metric, ("mean", "sd", "n"))
    if c["n"] == 0:
        return DASH
    sd = f" ± {c['sd']:.4f}" if c["n"] > 1 else ""
    return f"{c['mean']:.4f}{sd}" + (f" (n={c['n']})" if c["n"] != row["n_finished"] else "")


def seeds_text(row: pd.Series | dict) -> str:
    """'2', '1, 1 FAILED', '1, RUNNING': finished seeds, then the others by status."""
    other = sorted({s for s in row["statuses"] if s not in ("FINISHED", "FAILED")})
    return ", ".join([str(row["n_finished"])] + ([f"{row['n_failed']} FAILED"] if row["n_failed"] else []) + other)


def protocol_order(cells: pd.DataFrame) -> list[str]:
    """The protocols with cells: paper first, then alphabetically, the diagnostic ones last."""
    protocols = list(dict.fromkeys(p for p, _ in table_groups(cells)))
    protocols.sort(key=lambda p: p in DIAGNOSTIC_PROTOCOLS)
    return protocols


def protocol_label_of(frame: pd.DataFrame, protocol: str) -> str:
    """The human-readable label of a protocol, as its runs tag it."""
    return frame[frame["protocol"] == protocol]["protocol_label"].iloc[0]
