"""Standard benchmarks beside their published tables: measured test metrics (mean and sd over seeds) per dataset,
model and metric, the published figure and the difference, as markdown.

The published figures live in reports/published/<table>.csv (dataset, evaluation, metric, model, value); the runs
come from reports/runs.py (MLflow only). A run's row name is its model tag plus its variant
(`+tags.variant=ce` -> "sasrec [ce]"); the published column is the model tag's (POP for "pop [optimistic_ties]").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reports.agreement import protocol_settings
from reports.labels import md_text
from reports.runs import RunFilter, finished, pick_runs, query_runs

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
METRICS = {"sampled": ("hr_1", "hr_5", "hr_10", "ndcg_5", "ndcg_10", "mrr"),
           "full": ("hr_5", "hr_10", "hr_20", "ndcg_5", "ndcg_10", "ndcg_20")}
MODEL_ORDER = ("pop", "gru4rec", "caser", "sasrec", "bert4rec", "atrank")


@dataclass(frozen=True)
class Cell:
    mean: float
    sd: float
    n: int
    published: float

    @property
    def diff(self) -> float:
        return self.mean - self.published


def published(table: str) -> pd.DataFrame:
    """The published figures of `table` (e.g. "s3rec"): dataset, evaluation, metric, model, value."""
    return pd.read_csv(PUBLISHED_DIR / f"{table}.csv", comment="#")


def measured(runs: pd.DataFrame) -> pd.DataFrame:
    """Long rows (dataset, row, base_model, evaluation, metric, seed, value) from FINISHED runs' test metrics."""
    rows = []
    for _, r in runs.iterrows():
        for evaluation, names in METRICS.items():
            for m in names:
                value = r.get(f"metrics.test_{evaluation}_{m}", np.nan)
                if pd.notna(value):
                    rows.append((r["dataset"], r["model"], r["model"].split(" [")[0], evaluation, m, r["seed"],
                                 float(value)))
    return pd.DataFrame(rows, columns=["dataset", "row", "base_model", "evaluation", "metric", "seed", "value"])


def cells(long: pd.DataFrame, pub: pd.DataFrame) -> dict[tuple[str, str, str, str], Cell]:
    """(dataset, row, evaluation, metric) -> Cell; published NaN where the table has no such model."""
    pub_map = {tuple(k): v for k, v in zip(pub[["dataset", "evaluation", "metric", "model"]].to_numpy(),
                                           pub["value"])}
    out = {}
    for key, g in long.groupby(["dataset", "row", "evaluation", "metric"]):
        base = g["base_model"].iloc[0]
        v = g["value"].to_numpy()
        out[key] = Cell(float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v),
                        pub_map.get((key[0], key[2], key[3], base), float("nan")))
    return out


def _row_order(row: str) -> tuple:
    base = row.split(" [")[0]
    return (MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER), row)


def _fmt(c: Cell) -> str:
    sd = f" ± {c.sd:.4f}" if c.n > 1 else ""
    pub = "–" if np.isnan(c.published) else f"{c.published:.4f}"
    diff = "" if np.isnan(c.published) else f" ({c.diff:+.4f})"
    return f"{c.mean:.4f}{sd} / {pub}{diff}"


def render(all_cells: dict, runs: pd.DataFrame, title: str, command: str) -> str:
    lines = [f"# {md_text(title)}", "", f"Made by `{command}`. Each cell: measured mean ± sd over seeds / "
             "published (measured − published). Runs: FINISHED only; n = seeds per row.", ""]
    for dataset in sorted({k[0] for k in all_cells}):
        lines += [f"## {md_text(dataset)}", "", "Settings: " + protocol_settings(runs[runs["dataset"] == dataset]), ""]
        for evaluation, names in METRICS.items():
            rows = sorted({k[1] for k in all_cells if k[0] == dataset and k[2] == evaluation}, key=_row_order)
            if not rows:
                continue
            lines += [f"### {evaluation.capitalize()} metrics", "",
                      "| model | n | " + " | ".join(m.upper().replace("_", "@") for m in names) + " |",
                      "|---|---:|" + "---:|" * len(names)]
            for row in rows:
                got = [all_cells.get((dataset, row, evaluation, m)) for m in names]
                n = max((c.n for c in got if c), default=0)
                lines.append(f"| {md_text(row)} | {n} | " + " | ".join(_fmt(c) if c else "" for c in got) + " |")
            lines.append("")
    wall = runs.groupby("model")["metrics.wall_time_s"].sum() / 60 if "metrics.wall_time_s" in runs else None
    if wall is not None and len(wall):
        lines += ["## Wall time (minutes, all runs of a row summed)", "", "| model | minutes |", "|---|---:|"]
        lines += [f"| {md_text(m)} | {v:.1f} |" for m, v in sorted(wall.items(), key=lambda kv: _row_order(kv[0]))]
        lines.append("")
    return "\n".join(lines)


def write_benchmark_report(tracking_uri: str, table: str, out_dir: Path, name: str, command: str,
                           flt: RunFilter = RunFilter()) -> Path:
    """Query the runs of protocol `table`, compare them with reports/published/<table>.csv, write <name>.md."""
    flt = RunFilter(**{**vars(flt), "protocols": flt.protocols or (table,)})
    runs = finished(pick_runs(query_runs(tracking_uri, flt)))
    if runs.empty:
        raise SystemExit(f"no FINISHED runs of protocol {table!r} in {tracking_uri} ({flt.describe()})")
    text = render(cells(measured(runs), published(table)), runs, f"Standard benchmark: {table}", command)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.md"
    path.write_text(text)
    return path
