"""Provenance: where every number comes from. The report's header (source, filters, metric, the command that
regenerates it, the budget) and its closing sections (per cell: runs, commits, data hashes, budgets, steps, wall
time; runs that did not finish; whether the runs compare cleanly in the MLflow UI).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from reports.cells import protocol_label_of
from reports.labels import DASH, DIAGNOSTIC_PROTOCOLS, PAPER_METRIC, fmt_num, label, md_code, md_text, model_order
from reports.runs import GROUP, KEY_METRICS, RunFilter, finished, seed_key

REPO_ROOT = Path(__file__).resolve().parents[1]
PROVENANCE_HEADER = ("| Model | Dataset | Protocol | Recipe | Seeds (status) | Budget | Steps done | Epochs done | "
                     "Best step | Stopped by | Wall time s (sum) | Git commit | Data hash | Run ids |")


def _given(value) -> bool:
    """A logged param that was set (MLflow logs an unset option as the string 'None'; absent columns are NaN)."""
    return value is not None and value == value and value != "None"


def _budget(r: pd.Series, with_model_cap: bool = False) -> str:
    """The trainer's budget; a model's own epoch cap (model.epochs) only on request, as it is a recipe choice."""
    epochs = r.get("params.trainer.epochs")
    cap = (f", epochs≤{epochs}" if _given(epochs) else
           f", epochs≤{r.get('params.model.epochs')} (model)" if with_model_cap else "")
    patience = r.get("params.trainer.patience")
    stop = f", patience={patience}" if _given(patience) else ""
    return f"max_steps={r.get('params.trainer.max_steps')}{cap}, eval_every={r.get('params.trainer.eval_every')}{stop}"


def stopped_by(r: pd.Series) -> str:
    """Why a finished run ended: its budget (max_steps or the epoch cap) or early stopping (patience ran out)."""
    if r["status"] != "FINISHED" or r["metrics.steps"] != r["metrics.steps"]:
        return DASH
    max_steps = r.get("params.trainer.max_steps")
    if _given(max_steps) and r["metrics.steps"] >= float(max_steps):
        return "budget"
    cap = next((c for c in (r.get("params.trainer.epochs"), r.get("params.model.epochs")) if _given(c)), None)
    epochs = r.get("metrics.epochs_done")
    if cap is not None and _given(epochs) and epochs >= float(cap) - 1e-6:
        return "budget"
    return "patience" if _given(r.get("params.trainer.patience")) else DASH


def budget_line(picked: pd.DataFrame) -> str:
    """One line on the training budget: the same for every finished run, or the distinct ones."""
    budgets = sorted({_budget(r) for _, r in finished(picked).iterrows()})
    if not budgets:
        return "Budget: no finished runs."
    if len(budgets) == 1:
        return f"Budget (every finished run): {budgets[0]}; steps actually run are in the provenance block."
    return "Budgets differ between runs (see the provenance block): " + " | ".join(budgets) + "."


def portable(text: str, repo: Path = REPO_ROOT, home: Path | None = None) -> str:
    """`text` (a tracking URI, a filter, a command) without the absolute paths of the machine that wrote the report:
    paths inside the repository become relative to it (sqlite:////abs/repo/mlruns/mlflow.db -> sqlite:///mlruns/
    mlflow.db), paths in the home folder start with ~; other URIs and paths stay as given."""
    home = Path.home() if home is None else home
    text = text.replace(f"{repo}/", "")
    return text.replace(f"{home}/", "~/") if str(home) not in ("/", "") else text


def header_lines(picked: pd.DataFrame, *, title: str, metric: str, tracking_uri: str, flt: RunFilter, command: str,
                 note: str = "") -> list[str]:
    """Title, when and from what the report was made, how to regenerate it, the note and the budget."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = (" (the paper's per-user AUC, mean of 1[score(pos) > score(neg)])" if metric == PAPER_METRIC
            else " (the paper column applies to test_auc only)")
    return [f"# {title}", "",
            f"Generated {now} from MLflow only (`{portable(tracking_uri)}`), runs filtered by: "
            f"{md_text(portable(flt.describe()))}. Metric: `{metric}`{what}. Regenerate any time with "
            f"`{portable(command)}` (from the repository root).", "",
            *([note, ""] if note else []), budget_line(picked), ""]


def _cell_row(key: tuple, g: pd.DataFrame) -> str:
    """One provenance row: a cell's seeds with their status, budgets, progress, commits, data hashes and run ids."""
    g = g.sort_values("seed", key=lambda s: s.map(seed_key))
    seeds = ", ".join(f"{s} ({st.lower()})" for s, st in zip(g["seed"], g["status"]))
    commits = sorted({f"{c[:10]}{'+dirty' if d == 'true' else ''}" for c, d in
                      zip(g["tags.git_commit"], g["tags.git_dirty"]) if c})
    budgets = sorted({_budget(r, with_model_cap=True) for _, r in g.iterrows()})
    steps = "/".join(fmt_num(v) for v in g["metrics.steps"])
    epochs = "/".join(fmt_num(v, "{:.2f}") for v in g["metrics.epochs_done"])
    best = "/".join(fmt_num(v) for v in g["metrics.best_step"])
    stops = "/".join(stopped_by(r) for _, r in g.iterrows())
    wall = g["metrics.wall_time_s"].sum(min_count=1)
    return (f"| {label(key[3])} | {md_text(key[2])} | {md_text(key[0])} | {md_text(key[1])} | {seeds} | "
            f"{'; '.join(budgets)} | {steps} | {epochs} | {best} | {stops} | {fmt_num(wall)} | "
            f"{', '.join(commits) or DASH} | "
            f"{', '.join(sorted(set(g['tags.data_hash']) - {''})) or DASH} | "
            f"{'<br>'.join(f'`{r}`' for r in g['run_id'])} |")


def _unfinished_lines(picked: pd.DataFrame, runs: pd.DataFrame | None) -> list[str]:
    """The runs that did not finish: those used (shown as failed) and those superseded by a finished re-run."""
    def item(r: pd.Series) -> str:
        error = f" ({md_text(r['tags.error'][:200])})" if r["tags.error"] else ""
        return f"- `{r.run_id}` {md_text(r.run_name)}: {r.status}{error}"
    lines = []
    failed = picked[picked["status"] != "FINISHED"].drop_duplicates("run_id")   # a run can serve two protocols
    if len(failed):
        lines += ["", "Runs that did not finish (shown as such in the table, never as numbers):", ""]
        lines += [item(r) for _, r in failed.iterrows()]
    if runs is not None and len(runs):
        superseded = runs[~runs["run_id"].isin(picked["run_id"]) & (runs["status"] != "FINISHED")]
        superseded = superseded.drop_duplicates("run_id")
        if len(superseded):
            lines += ["", "Runs that did not finish, not used because a FINISHED run of the same seed exists:", ""]
            lines += [item(r) for _, r in superseded.iterrows()]
    return lines


def provenance_markdown(picked: pd.DataFrame, runs: pd.DataFrame | None = None) -> str:
    """One row per cell: its runs, commit, data hash, protocol, seeds, budget, steps/epochs done and wall time;
    then the runs that did not finish, used (shown as failed) or superseded by a finished run of the same seed."""
    lines = [PROVENANCE_HEADER, "|---|---|---|---|---|---|---:|---:|---:|---|---:|---|---|---|"]
    order = {m: i for i, m in enumerate(model_order(set(picked["model"])))}
    keyed = picked.assign(_o=picked["model"].map(order)).sort_values(["protocol", "recipe", "dataset", "_o"])
    lines += [_cell_row(key, g) for key, g in keyed.groupby(GROUP, sort=False)]
    return "\n".join(lines + _unfinished_lines(picked, runs))


def ui_check_markdown(picked: pd.DataFrame) -> str:
    """Are the runs comparable in the MLflow UI: standard names, the key metrics on every finished run?"""
    done = finished(picked)
    expected = done["model"] + "/" + done["dataset"] + "/seed" + done["seed"]
    misnamed = done[done["run_name"] != expected]
    missing = {m: int(done[f"metrics.{m}"].isna().sum()) for m in KEY_METRICS if done[f"metrics.{m}"].isna().any()}
    exps = ", ".join(md_code(e) for e in sorted(set(picked["experiment"])))
    lines = [f"Experiments: {exps}. In the UI, select these runs and use Compare: every finished run is named "
             "`<model>/<dataset>/seed<k>` and carries the same params (the flattened config) and key metrics ("
             + ", ".join(f"`{m}`" for m in KEY_METRICS) + ")."]
    if len(misnamed):
        lines.append("Runs with a non-standard name: " + ", ".join(md_code(r) for r in misnamed["run_name"]))
    if missing:
        lines.append("Finished runs missing a key metric: " + ", ".join(f"`{k}` ({v})" for k, v in missing.items()))
    else:
        lines.append(f"Check: all {len(done)} finished run(s) have every key metric.")
    return " ".join(lines)


def provenance_section(picked: pd.DataFrame, cells: pd.DataFrame, protocols: list[str],
                       runs: pd.DataFrame | None) -> list[str]:
    """The closing sections: which protocol the numbers use, the provenance block and the MLflow UI check."""
    used = "Which protocol the numbers use: " + "; ".join(f"{md_code(p)} ({md_text(protocol_label_of(cells, p))})"
                                                           for p in protocols)
    if "paper" in protocols:
        used += ". Only `loo_val` numbers are honest held-out estimates; `paper` picks the checkpoint on the test set"
    if any(p in DIAGNOSTIC_PROTOCOLS for p in protocols):
        used += "; `optimism` runs are diagnostics (test read at every evaluation), never headline numbers"
    return ["", "## Provenance", "", used + ".", "", provenance_markdown(picked, runs), "", "## MLflow UI", "",
            ui_check_markdown(picked)]
