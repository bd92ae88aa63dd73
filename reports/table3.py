"""ATRank Table 3 regenerated from MLflow: queries, the table, "is it real?" statistics and provenance, as markdown.

MLflow is the only source (docs/design.md, "What a run logs to MLflow"): runs are found by tags, numbers are
final metrics, curves are metric histories and per-user outcomes are the `outcomes/test_outcomes.csv` artifact.
The I/O lives in `query_runs`, `load_outcomes`, `load_curves` and `write_report`; everything between them is a
pure function on DataFrames.

Choices, stated once:
- One run per (protocol, recipe, dataset, model, seed): the latest FINISHED one, else the latest of any status
  (so a seed whose only run failed shows as failed, and a later re-run that finished replaces it).
- A cell is mean +- sd (ddof=1) over the seeds that finished; failed seeds are counted, never averaged.
- Intervals bootstrap USERS; with several seeds a user's outcome is averaged over that model's seeds first, so the
  interval measures test-user sampling for these seeds (seed spread is the table's sd).
- Diagnostic protocols (`optimism`: test tracked along training) never get a Table 3 nor intervals: their runs only
  feed the section "Optimism of test-set selection (diagnostic)". Metrics a run did not log show as a dash.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from reports import stats

PAPER_MODELS = ("bpr", "bilstm", "bilstm_att", "cnn", "atrank")    # Table 3's rows, in its order
OTHER_MODELS = ("din", "attrec", "gru4rec", "sasrec", "pop")
MODEL_LABELS = {"bpr": "BPR", "bilstm": "Bi-LSTM", "bilstm_att": "Bi-LSTM + Attention", "cnn": "CNN + Max Pooling",
                "atrank": "ATRank", "din": "DIN", "attrec": "AttRec", "gru4rec": "GRU4Rec", "sasrec": "SASRec",
                "pop": "POP"}
PAPER_METRIC = "test_auc"    # Table 3 reports the per-user AUC, mean of 1[score_pos > score_neg]
PAPER_TABLE3 = {             # /work/shared/PROTOCOL.md, "Table 3 (AUC) to regenerate"
    "Electro.": {"bpr": 0.7982, "bilstm": 0.8757, "bilstm_att": 0.8769, "cnn": 0.8804, "atrank": 0.8921},
    "Clothe.": {"bpr": 0.7061, "bilstm": 0.7869, "bilstm_att": 0.7835, "cnn": 0.7786, "atrank": 0.7905},
}
PAPER_COLUMN_ORDER = ("Electro.", "Clothe.")
DATASET_PAPER_COLUMN = {"electro": "Electro.", "clothing": "Clothe.", "clothing_seq": "Clothe."}  # absent columns
OUTCOME_COLUMN = {"test_auc": "correct"}   # metrics that are a mean of a per-user column of test_outcomes.csv
OUTCOMES_ARTIFACT = "outcomes/test_outcomes.csv"
PAIR_KEYS = ["reviewerID", "pos", "neg"]   # a user's test pair; models are paired on identical pairs only

TAGS = ("model", "dataset", "protocol", "protocol_label", "seed", "recipe", "paper_column", "git_commit", "git_dirty",
        "data_hash", "split_hash", "config_hash", "sweep_dir", "error", "mlflow.runName")
PARAMS = ("trainer.max_steps", "trainer.eval_every", "trainer.epochs", "model.epochs", "model.name", "dataset.name",
          "protocol.name", "protocol.eval_negatives", "protocol.eval_negatives_kind", "protocol.full_ranking_users",
          "seed")
KEY_METRICS = ("test_auc", "test_roc_auc", "best_step", "steps", "epochs_done", "train_seconds", "examples_per_s",
               "wall_time_s", "n_test_users")
GROUP = ["protocol", "recipe", "dataset", "model"]
DASH = "—"


@dataclass(frozen=True)
class RunFilter:
    """Which runs a report covers. Empty tuples mean 'all'."""
    experiments: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    recipes: tuple[str, ...] = ()
    sweep_dir: str | None = None
    filter_string: str = ""       # any extra MLflow filter, e.g. "params.trainer.max_steps = '2000'"

    def describe(self) -> str:
        parts = [f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in vars(self).items() if v]
        return "; ".join(parts) or "none (all runs)"


# ----------------------------------------------------------------------------------------------------------- I/O
@contextlib.contextmanager
def _tracking(uri: str):
    """mlflow.search_runs reads the global tracking URI; set it for the query only. set_tracking_uri mirrors the
    URI into $MLFLOW_TRACKING_URI, so that variable holds what to restore (None unsets both)."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow
    finally:
        mlflow.set_tracking_uri(before)


def query_runs(tracking_uri: str, flt: RunFilter = RunFilter()) -> pd.DataFrame:
    """The runs matching `flt`, one row each, in mlflow.search_runs' layout (tags.*, params.*, metrics.*)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    if flt.experiments:
        exps = [e for e in (client.get_experiment_by_name(n) for n in flt.experiments) if e is not None]
    else:
        exps = client.search_experiments()
    if not exps:
        return normalize_runs(pd.DataFrame(), {})
    conditions = [f"tags.sweep_dir = '{flt.sweep_dir}'"] if flt.sweep_dir else []
    if flt.filter_string:
        conditions.append(flt.filter_string)
    with _tracking(tracking_uri) as ml:
        df = ml.search_runs(experiment_ids=[e.experiment_id for e in exps], filter_string=" and ".join(conditions))
    runs = normalize_runs(df, {e.experiment_id: e.name for e in exps})
    for col, wanted in (("dataset", flt.datasets), ("protocol", flt.protocols), ("model", flt.models),
                        ("recipe", flt.recipes)):
        if wanted:
            runs = runs[runs[col].isin(wanted)]
    return runs.reset_index(drop=True)


def normalize_runs(df: pd.DataFrame, experiment_names: dict[str, str]) -> pd.DataFrame:
    """Give every run the columns the report reads (missing ones as NaN/""), short names for the key tags, and
    drop runs that are not ours (no `model` tag)."""
    df = df.copy()
    for c in ("run_id", "experiment_id", "status", "start_time", "end_time"):
        if c not in df:
            df[c] = pd.Series(dtype=object)
    for t in TAGS:
        df[f"tags.{t}"] = df[f"tags.{t}"].fillna("") if f"tags.{t}" in df else ""
    for p in PARAMS:
        if f"params.{p}" not in df:
            df[f"params.{p}"] = None
    for m in KEY_METRICS:
        if f"metrics.{m}" not in df:
            df[f"metrics.{m}"] = np.nan
    for t in ("model", "dataset", "protocol", "protocol_label", "seed", "recipe", "paper_column"):
        df[t] = df[f"tags.{t}"].astype(str)
    df["run_name"] = df["tags.mlflow.runName"]
    df["experiment"] = df["experiment_id"].map(lambda i: experiment_names.get(i, str(i)))
    df.loc[df["recipe"] == "", "recipe"] = "default"
    return df[df["model"] != ""].reset_index(drop=True)


def load_outcomes(tracking_uri: str, run_ids: list[str]) -> dict[str, pd.DataFrame]:
    """run id -> its per-user outcomes (reviewerID, pos, neg, correct, ...); runs without the artifact are left out."""
    import mlflow
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = mlflow.MlflowClient(tracking_uri)
    out: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rid in run_ids:
            try:
                path = client.download_artifacts(rid, OUTCOMES_ARTIFACT, dst_path=str(Path(tmp) / rid))
            except (OSError, MlflowException):   # no outcomes logged (mlflow.log_outcomes=false): reported
                path = None
            if path is not None:
                out[rid] = pd.read_csv(path, dtype={"reviewerID": str, "pos": str, "neg": str})
    return out


def load_curves(tracking_uri: str, runs: pd.DataFrame, keys: tuple[str, ...] = ("curve/test_auc", "curve/valid_auc",
                                                                               "curve/examples_per_s")) -> pd.DataFrame:
    """Metric histories of `runs` as long rows: run_id, key, step, value."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    rows = [(rid, k, m.step, m.value) for rid in runs["run_id"] for k in keys
            for m in client.get_metric_history(rid, k)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


# ------------------------------------------------------------------------------------------- runs -> cells (pure)
def pick_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per (protocol, recipe, dataset, model, seed): the latest FINISHED, else the latest of any status."""
    if runs.empty:
        return runs
    ordered = runs.assign(_unfinished=runs["status"] != "FINISHED").sort_values(
        ["_unfinished", "start_time"], ascending=[True, False], kind="stable")
    picked = ordered.groupby(GROUP + ["seed"], sort=False).head(1).drop(columns="_unfinished")
    return picked.reset_index(drop=True)


def _seed_key(s: str) -> tuple:
    return (0, int(s), "") if str(s).lstrip("-").isdigit() else (1, 0, str(s))


def summarize_cells(picked: pd.DataFrame, metric: str = PAPER_METRIC) -> pd.DataFrame:
    """Per (protocol, recipe, dataset, model): mean, sd, n over finished seeds, failed counts, seeds, run ids."""
    cols = GROUP + ["mean", "sd", "n", "n_failed", "statuses", "seeds", "run_ids", "paper_column", "protocol_label"]
    rows = []
    for key, g in picked.groupby(GROUP, sort=False):
        g = g.sort_values("seed", key=lambda s: s.map(_seed_key))
        done = g[(g["status"] == "FINISHED") & g[f"metrics.{metric}"].notna()] if f"metrics.{metric}" in g else g[:0]
        values = done[f"metrics.{metric}"].to_numpy(float) if len(done) else np.array([])
        rows.append((*key, float(values.mean()) if len(values) else math.nan,
                     float(values.std(ddof=1)) if len(values) > 1 else math.nan, len(values),
                     int((g["status"] == "FAILED").sum()), tuple(g["status"]), tuple(g["seed"]), tuple(g["run_id"]),
                     g["paper_column"].iloc[0], g["protocol_label"].iloc[0]))
    return pd.DataFrame(rows, columns=cols)


def model_order(models: set[str]) -> list[str]:
    """Table 3's five rows always (absent ones show a dash), then the peers and any other model that has runs."""
    known = list(PAPER_MODELS) + [m for m in OTHER_MODELS if m in models]
    return known + sorted(m for m in models if m not in known)


def paper_column_of(dataset: str, tag: str | None = None) -> str | None:
    tag = tag if tag not in (None, "", "None", "null", "nan") else None
    return tag or DATASET_PAPER_COLUMN.get(dataset)


def dataset_order(cells: pd.DataFrame, requested: tuple[str, ...] = ()) -> list[str]:
    """Electro. columns first, then Clothe., then the other datasets alphabetically (requested ones even if empty)."""
    names = set(cells["dataset"]) | set(requested)
    tags = dict(zip(cells["dataset"], cells["paper_column"]))

    def key(d: str) -> tuple:
        col = paper_column_of(d, tags.get(d))
        return (PAPER_COLUMN_ORDER.index(col) if col in PAPER_COLUMN_ORDER else len(PAPER_COLUMN_ORDER), d)
    return sorted(names, key=key)


def paper_value(model: str, paper_column: str | None, metric: str) -> float | None:
    if metric != PAPER_METRIC or paper_column is None:
        return None
    return PAPER_TABLE3.get(paper_column, {}).get(model)


def column_title(dataset: str, paper_column: str | None) -> str:
    return f"{paper_column} ({dataset})" if paper_column else dataset


def format_measured(cell: pd.Series | None, bold: bool = False) -> str:
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


def table_groups(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(protocol, recipe) pairs, the paper protocol and the default recipe first."""
    pairs = set(zip(cells["protocol"], cells["recipe"]))
    return sorted(pairs, key=lambda p: (p[0] != "paper", p[0], p[1] != "default", p[1]))


def table3_markdown(cells: pd.DataFrame, metric: str = PAPER_METRIC, datasets: tuple[str, ...] = ()) -> str:
    """One (protocol, recipe) group's Table 3: model rows x (measured | paper | diff) per dataset, best in bold."""
    columns = dataset_order(cells, datasets)
    rows = model_order(set(cells["model"]))
    by_key = {(r.dataset, r.model): r for r in cells.itertuples(index=False)}
    pcol = {d: paper_column_of(d, next((r.paper_column for r in cells.itertuples() if r.dataset == d), None))
            for d in columns}
    best = {}
    for d in columns:
        means = cells[(cells["dataset"] == d) & (cells["n"] > 0)]["mean"]
        best[d] = means.max() if len(means) else None
    header = ["Model"] + [h for d in columns for h in (f"{column_title(d, pcol[d])}: {metric}", "paper", "Δ")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for m in rows:
        out = [MODEL_LABELS.get(m, m)]
        for d in columns:
            r = by_key.get((d, m))
            cell = pd.Series(r._asdict()) if r is not None else None
            is_best = cell is not None and cell["n"] > 0 and best[d] is not None and cell["mean"] == best[d]
            pv = paper_value(m, pcol[d], metric)
            diff = (f"{cell['mean'] - pv:+.4f}" if cell is not None and cell["n"] > 0 and pv is not None else DASH)
            out += [format_measured(cell, is_best), f"{pv:.4f}" if pv is not None else DASH, diff]
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ is it real? (pure)
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


def seed_matrix(outcomes: dict[str, pd.DataFrame], column: str = "correct") -> pd.DataFrame:
    """seed -> outcome frame, joined on the test pair: one column per seed (users present in every seed)."""
    joined = None
    for seed, df in outcomes.items():
        part = df[PAIR_KEYS + [column]].rename(columns={column: seed})
        joined = part if joined is None else joined.merge(part, on=PAIR_KEYS, how="inner")
    return joined


def column_stats(dataset: str, per_model: dict[str, dict[str, pd.DataFrame]], order: list[str],
                 column: str = "correct", n_boot: int = 2000, seed: int = 0) -> ColumnStats | None:
    """per_model: model -> seed -> outcome frame. Users are resampled jointly for all models (paired)."""
    models = [m for m in order if per_model.get(m)]
    if not models:
        return None
    mats = {m: seed_matrix(per_model[m], column) for m in models}
    joined, total = None, max(len(x) for x in mats.values())
    for m in models:
        seeds = list(per_model[m])
        part = mats[m][PAIR_KEYS].assign(**{m: mats[m][seeds].to_numpy(float).mean(1)})
        for s in seeds:
            part[f"{m}@{s}"] = mats[m][s].to_numpy()
        joined = part if joined is None else joined.merge(part, on=PAIR_KEYS, how="inner")
    x = joined[models].to_numpy(float)                          # [U, M] seed-averaged outcomes
    boot = stats.bootstrap_means(x, n_boot, seed)               # [B, M], same user draws for every model
    est = x.mean(0)
    best_i = int(np.argmax(est))
    ci = {m: stats.percentile_interval(est[i], boot[:, i]) for i, m in enumerate(models)}
    diff_best, p_best = {}, {}
    for i, m in enumerate(models):
        d = boot[:, i] - boot[:, best_i]
        diff_best[m] = stats.percentile_interval(est[i] - est[best_i], d)
        p_best[m] = stats.bootstrap_pvalue(est[i] - est[best_i], d) if i != best_i else math.nan
    adjacent = []
    for i in range(len(models) - 1):
        a, b = models[i], models[i + 1]
        d = boot[:, i] - boot[:, i + 1]
        common = sorted(set(per_model[a]) & set(per_model[b]), key=_seed_key)
        mc = stats.mcnemar(joined[f"{a}@{common[0]}"], joined[f"{b}@{common[0]}"]) if common else None
        adjacent.append(AdjacentTest(a, b, float(est[i] - est[i + 1]), stats.bootstrap_pvalue(est[i] - est[i + 1], d),
                                     mc, common[0] if common else None))
    return ColumnStats(dataset, len(x), models, {m: len(per_model[m]) for m in models}, ci, models[best_i],
                       diff_best, p_best, adjacent, dropped_users=total - len(x))


def ranking_agreement(cells: pd.DataFrame, metric: str = PAPER_METRIC) -> list[dict]:
    """Per dataset with a paper column: the paper's ranking vs ours over the models both have, with Kendall's tau."""
    out = []
    for d in dataset_order(cells):
        sub = cells[(cells["dataset"] == d) & (cells["n"] > 0)]
        pcol = paper_column_of(d, sub["paper_column"].iloc[0] if len(sub) else None)
        pairs = [(r.model, paper_value(r.model, pcol, metric), r.mean) for r in sub.itertuples()]
        pairs = [p for p in pairs if p[1] is not None]
        if not pairs:
            continue
        tau, p = stats.kendall_tau(np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs]))
        out.append({"dataset": d, "paper_column": pcol, "n": len(pairs), "tau": tau, "p": p,
                    "paper": [m for m, _, _ in sorted(pairs, key=lambda t: -t[1])],
                    "ours": [m for m, _, _ in sorted(pairs, key=lambda t: -t[2])]})
    return out


def _p(p: float) -> str:
    return DASH if p is None or math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def significance_markdown(col: ColumnStats, title: str) -> str:
    label = MODEL_LABELS.get
    lines = [f"**{title}**: {col.n_users:,} test users paired across {len(col.models)} model(s)"
             + (f" ({col.dropped_users:,} users not shared by every model left out)" if col.dropped_users else "")
             + f"; best: {label(col.best, col.best)}.", "",
             "| Model | seeds | AUC (per-user mean) | 95% CI | Δ to best | 95% CI of Δ | p (Δ = 0) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m in col.models:
        c, d = col.ci[m], col.diff_to_best[m]
        same = m == col.best
        lines.append(f"| {label(m, m)} | {col.n_seeds[m]} | {c.estimate:.4f} | [{c.lo:.4f}, {c.hi:.4f}] | "
                     f"{'best' if same else f'{d.estimate:+.4f}'} | {DASH if same else f'[{d.lo:+.4f}, {d.hi:+.4f}]'} "
                     f"| {_p(col.p_vs_best[m])} |")
    if col.adjacent:
        lines += ["", "Adjacent rows (table order):", "",
                  "| Pair | Δ (upper − lower) | bootstrap p | McNemar: only upper / only lower right | McNemar p |",
                  "|---|---:|---:|---:|---:|"]
        for t in col.adjacent:
            mc = (f"{t.mcnemar.only_a:,} / {t.mcnemar.only_b:,} (seed {t.mcnemar_seed})", _p(t.mcnemar.p_value)) \
                if t.mcnemar else (DASH, DASH)
            lines.append(f"| {label(t.a, t.a)} vs {label(t.b, t.b)} | {t.diff:+.4f} | {_p(t.p_bootstrap)} | {mc[0]} "
                         f"| {mc[1]} |")
    return "\n".join(lines)


# ------------------------------------------------------- selection and metric honesty (pure; issue #9, items 4-5)
DIAGNOSTIC_PROTOCOLS = ("optimism",)     # never a Table 3 table, only their own clearly labelled section
OPTIMISM_COLUMNS = (("test_auc_at_test_best", "test AUC at the test-selected step"),
                    ("test_auc", "test AUC at the validation-selected step"),
                    ("optimism", "difference"))
RANK_METRICS = ("test_auc", "test_sampled_ndcg_10", "test_full_ndcg_10")      # the rankings compared
EXTRA_AGREEMENT_METRICS = ("test_gauc", "test_full_hr_10", "test_full_mrr")    # shown when logged
METRIC_HELP = {
    "test_auc": "the paper's AUC: the test item against 1 frozen negative per user",
    "test_gauc": "AUC of the test item against the user's K sampled negatives (ties count ½)",
    "test_sampled_ndcg_10": "NDCG@10 of the test item among itself and the K sampled negatives",
    "test_full_ndcg_10": "NDCG@10 of the test item in the whole catalogue (the user's history items excluded)",
    "test_full_hr_10": "hit rate @10 in the whole catalogue",
    "test_full_mrr": "mean reciprocal rank in the whole catalogue",
}


def headline_groups(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """table_groups without the diagnostic protocols: the (protocol, recipe) pairs that get a Table 3."""
    return [g for g in table_groups(cells) if g[0] not in DIAGNOSTIC_PROTOCOLS]


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


def _cell(row: pd.Series | dict, metric: str) -> dict:
    return {"mean": row[f"{metric}:mean"], "sd": row[f"{metric}:sd"], "n": row[f"{metric}:n"],
            "n_failed": row["n_failed"], "statuses": row["statuses"]}


def format_cell(row: pd.Series | dict | None, metric: str) -> str:
    """format_measured of one metric of a wide row; finished runs that did not log the metric give a dash."""
    if row is None:
        return DASH
    cell = _cell(row, metric)
    if cell["n"] == 0 and not cell["n_failed"] and all(s == "FINISHED" for s in cell["statuses"]):
        return DASH
    return format_measured(cell)


def format_value(row: pd.Series | dict, metric: str) -> str:
    """Compact: '0.6174', '0.6174 ± 0.0021', '0.6174 (n=1)' when fewer seeds logged it than finished; dash if none."""
    c = _cell(row, metric)
    if c["n"] == 0:
        return DASH
    sd = f" ± {c['sd']:.4f}" if c["n"] > 1 else ""
    return f"{c['mean']:.4f}{sd}" + (f" (n={c['n']})" if c["n"] != row["n_finished"] else "")


def _seeds_text(row: pd.Series | dict) -> str:
    other = sorted({s for s in row["statuses"] if s not in ("FINISHED", "FAILED")})
    return ", ".join([str(row["n_finished"])] + ([f"{row['n_failed']} FAILED"] if row["n_failed"] else []) + other)


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
    done = picked[(picked["status"] == "FINISHED") & picked["metrics.test_auc"].notna()]
    key = ["recipe", "dataset", "model", "seed"]
    a = done[done["protocol"] == "optimism"][key + ["metrics.test_auc"]].rename(columns={"metrics.test_auc": "optimism"})
    b = done[done["protocol"] == "loo_val"][key + ["metrics.test_auc"]].rename(columns={"metrics.test_auc": "loo_val"})
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
    return f"**{title}**" + (f", recipe `{recipe}`" if n_recipes > 1 or recipe != "default" else "")


def _step(x) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0f}"


def optimism_markdown(picked: pd.DataFrame, curves: pd.DataFrame | None = None) -> str:
    """The diagnostic section's body: per (recipe, dataset) a table of the optimism runs, then a cross-check."""
    opt_runs = picked[picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS)]
    cells = optimism_cells(picked)
    if cells.empty:
        return "No optimism runs match these filters."
    steps = selected_steps(opt_runs[opt_runs["status"] == "FINISHED"], curves)
    label = opt_runs["protocol_label"].iloc[0] or "diagnostic"
    every = sorted(set(opt_runs["params.trainer.eval_every"].dropna().astype(str)) - {"", "None"})
    lines = [f"> **DIAGNOSTIC, not a headline number.** Protocol `optimism` ({label}): the `loo_val` split and "
             "selection on validation, but the test set is also evaluated at every evaluation"
             + (f" (every {', '.join(every)} steps)" if every else "") + ". *Test-selected* = the best test AUC seen "
             "along training (`test_auc_at_test_best`) = what the paper's test-set selection would report on this "
             "split; *validation-selected* = the test AUC of the weights validation picks (`test_auc`, the honest "
             "number); optimism = their difference (logged as `optimism`, ≥ 0 by construction). These runs appear "
             "in no Table 3 above.", "",
             "Cells: mean ± sd over finished seeds (n); " + DASH + " = not logged. Steps: the evaluation each "
             "selection picked, per seed (validation / test; from `best_step` and the `curve/test_auc` history)."]
    n_recipes = len(set(cells["recipe"]))
    all_same, all_final = True, True
    for recipe, d, rows in _dataset_blocks(cells):
        lines += ["", _block_title(recipe, d, rows["paper_column"].iloc[0], n_recipes), "",
                  "| Model | " + " | ".join(f"{t} (`{m}`)" for m, t in OPTIMISM_COLUMNS)
                  + " | selected step, validation / test |", "|---|---:|---:|---:|---|"]
        for _, r in rows.iterrows():
            per_seed = []
            for seed, rid, st in zip(r["seeds"], r["run_ids"], r["statuses"]):
                if rid in steps:
                    v, t = steps[rid]
                    per_seed.append(f"seed {seed}: {_step(v)} / {_step(t)}")
                    all_same &= t is not None and v == t
                    run = opt_runs[opt_runs["run_id"] == rid].iloc[0]
                    all_final &= v == run.get("metrics.steps", math.nan)
            lines.append(f"| {MODEL_LABELS.get(r['model'], r['model'])} | "
                         + " | ".join(format_cell(r, m) for m, _ in OPTIMISM_COLUMNS)
                         + f" | {'; '.join(per_seed) or DASH} |")
    have = cells[cells["optimism:n"] > 0]
    if len(have):
        lo, hi = have["optimism:mean"].min(), have["optimism:mean"].max()
        lines += ["", (f"Across {len(have)} model/dataset cell(s) with a value: optimism from {lo:+.4f} to {hi:+.4f} "
                  f"(mean {have['optimism:mean'].mean():+.4f}).")]
        if all_same and hi == 0:
            lines[-1] += (" Every run's two selections picked the same evaluation"
                          + (", the last one (both curves were at their best at the end of training)" if all_final else "")
                          + ", so the optimism is exactly 0 here: this budget cannot measure it, which is no evidence "
                          "that test-set selection is harmless at the paper's budget.")
    check = optimism_vs_loo_val(picked)
    if len(check):
        worst = check.loc[check["diff"].abs().idxmax()]
        same = int((check["diff"].abs() < 5e-5).sum())
        lines += ["", (f"Cross-check: the validation-selected test AUC of an optimism run should equal the `loo_val` "
                  f"run's test_auc for the same model and seed (same split, same selection): equal to 4 decimals for "
                  f"{same} of {len(check)} pair(s); largest |difference| {abs(worst['diff']):.6f} "
                  f"({MODEL_LABELS.get(worst['model'], worst['model'])}, seed {worst['seed']}).")]
    return "\n".join(lines)


def selection_comparison(picked: pd.DataFrame) -> pd.DataFrame:
    """test_auc per (recipe, dataset, model) that has both a `paper` and a `loo_val` cell, side by side: wide cells
    with `paper:*` and `loo_val:*` columns and diff = paper − loo_val (NaN unless both have a value)."""
    cells = wide_cells(picked[picked["protocol"].isin(("paper", "loo_val"))], (PAPER_METRIC,))
    key = ["recipe", "dataset", "model"]
    cols = key + ["paper_column"] + [f"{p}:{c}" for p in ("paper", "loo_val")
                                     for c in ("mean", "sd", "n", "n_failed", "statuses", "n_finished")] + ["diff"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    keep = ["mean", "sd", "n", "n_failed", "statuses", "n_finished"]
    sides = []
    for p in ("paper", "loo_val"):
        s = cells[cells["protocol"] == p].rename(columns={f"{PAPER_METRIC}:{c}": c for c in ("mean", "sd", "n")})
        sides.append(s[key + ["paper_column"] * (p == "paper") + keep].rename(columns={c: f"{p}:{c}" for c in keep}))
    both = sides[0].merge(sides[1], on=key)
    ok = (both["paper:n"] > 0) & (both["loo_val:n"] > 0)
    both["diff"] = np.where(ok, both["paper:mean"] - both["loo_val:mean"], np.nan)
    return both[cols].reset_index(drop=True)


def selection_comparison_markdown(cmp: pd.DataFrame) -> str:
    def side(r: pd.Series, p: str) -> str:
        cell = {"mean": r[f"{p}:mean"], "sd": r[f"{p}:sd"], "n": r[f"{p}:n"], "n_failed": r[f"{p}:n_failed"],
                "statuses": r[f"{p}:statuses"]}
        return DASH if cell["n"] == 0 and not cell["n_failed"] and set(cell["statuses"]) <= {"FINISHED"} \
            else format_measured(cell)
    lines = [("`test_auc` per model under both protocols (mean ± sd over finished seeds, n). Both test each user's "
             "last item, but `paper` selects the checkpoint with the best TEST AUC and trains on one more item per "
             "user (no validation item held out), while `loo_val` selects on validation and reads test once; so "
             "paper − loo_val mixes selection optimism with that extra training item (the optimism diagnostic, "
             "when present, isolates the selection part on one split).")]
    n_recipes = len(set(cmp["recipe"]))
    for recipe, d, rows in _dataset_blocks(cmp):
        lines += ["", _block_title(recipe, d, rows["paper_column"].iloc[0], n_recipes), "",
                  "| Model | paper (test-set selection) | loo_val (validation selection) | paper − loo_val |",
                  "|---|---:|---:|---:|"]
        for _, r in rows.iterrows():
            lines.append(f"| {MODEL_LABELS.get(r['model'], r['model'])} | {side(r, 'paper')} | {side(r, 'loo_val')} "
                         f"| {_num(r['diff'], '{:+.4f}')} |")
    return "\n".join(lines)


def _ranking(values: dict[str, float], order: list[str]) -> list[list[str]]:
    """Models best first, exact ties grouped."""
    ranked: list[list[str]] = []
    for m in sorted(values, key=lambda m: (-values[m], order.index(m))):
        if ranked and values[ranked[-1][0]] == values[m]:
            ranked[-1].append(m)
        else:
            ranked.append([m])
    return ranked


def metric_agreement(cells: pd.DataFrame, metrics: tuple[str, ...] = RANK_METRICS) -> list[dict]:
    """Per dataset of one group's wide cells (see wide_cells): each metric's model ranking (models that logged it,
    best first, ties grouped; rank = 1 + models strictly better), Kendall's tau-b between every pair of metrics
    over the models that logged both (nan for fewer than 2 models) and, per metric, the models with a finished run
    that did not log it."""
    out = []
    for d in dataset_order(cells):
        sub = cells[cells["dataset"] == d]
        order = model_order(set(sub["model"]))
        values = {m: {r["model"]: float(r[f"{m}:mean"]) for _, r in sub.iterrows() if r[f"{m}:n"] > 0}
                  for m in metrics}
        rankings = {m: _ranking(values[m], order) for m in metrics}
        ranks = {m: {x: 1 + sum(v > values[m][x] for v in values[m].values()) for x in values[m]} for m in metrics}
        taus = []
        for i, a in enumerate(metrics):
            for b in metrics[i + 1:]:
                common = [x for x in order if x in values[a] and x in values[b]]
                tau, p = stats.kendall_tau(np.array([values[a][x] for x in common]),
                                           np.array([values[b][x] for x in common]))
                taus.append({"a": a, "b": b, "n": len(common), "tau": tau, "p": p})
        finished = set(sub[sub["n_finished"] > 0]["model"]) if "n_finished" in sub else set(sub["model"])
        missing = {m: [x for x in order if x in finished and x not in values[m]] for m in metrics}
        out.append({"dataset": d, "paper_column": sub["paper_column"].iloc[0], "models": [x for x in order if x in
                    set(sub["model"])], "values": values, "rankings": rankings, "ranks": ranks, "taus": taus,
                    "missing": missing})
    return out


def _param_values(runs: pd.DataFrame, param: str) -> str | None:
    col = f"params.{param}"
    if col not in runs:
        return None
    vals = sorted(set(runs[col].dropna().astype(str)) - {"", "None"})
    return "/".join(vals) if vals else None


def metric_agreement_markdown(wide: pd.DataFrame, runs: pd.DataFrame, title: str) -> str:
    """One (protocol, recipe) group: per dataset the metric table, the rankings and the pairwise Kendall taus."""
    done = runs[runs["status"] == "FINISHED"]
    k, kind, users = (_param_values(done, p) for p in ("protocol.eval_negatives", "protocol.eval_negatives_kind",
                                                        "protocol.full_ranking_users"))
    config = (f"`protocol.eval_negatives` = {k or '?'}" + (f" ({kind})" if kind and k != "0" else "")
              + f" sampled negatives per test user, `protocol.full_ranking_users` = {users or '?'} (users ranked "
              "against the whole catalogue; -1 = all, 0 = none)")
    lines = [f"### {title}", ""]
    for e in metric_agreement(wide):
        sub = wide[wide["dataset"] == e["dataset"]].set_index("model")
        head = f"{column_title(e['dataset'], paper_column_of(e['dataset'], e['paper_column']))}"
        logged = [m for m in RANK_METRICS if e["values"][m]]
        if len(logged) < 2:
            absent = [m for m in RANK_METRICS if not e["values"][m]]
            lines += [(f"{head}: only {', '.join(f'`{m}`' for m in logged) or 'none of the ranking metrics'} logged; "
                      f"{', '.join(f'`{m}`' for m in absent)} not logged by these runs ({config}), so there "
                      "are no rankings to compare."), ""]
            continue
        extra = [m for m in EXTRA_AGREEMENT_METRICS if f"{m}:n" in sub and (sub[f"{m}:n"] > 0).any()]
        shown = list(RANK_METRICS) + extra
        lines += [f"{head}. Logged with {config}.", "",
                  "| Model | seeds | " + " | ".join(f"`{m}`" + (" (rank)" if m in RANK_METRICS else "")
                                                   for m in shown) + " |",
                  "|---|---:|" + "---:|" * len(shown)]
        for model in e["models"]:
            r = sub.loc[model]
            vals = []
            for m in shown:
                v = format_value(r, m)
                vals.append(v + (f" ({e['ranks'][m][model]})" if m in RANK_METRICS and v != DASH else ""))
            lines.append(f"| {MODEL_LABELS.get(model, model)} | {_seeds_text(r)} | " + " | ".join(vals) + " |")
        lines += ["", "Rankings (best first; = ties):", ""]
        for m in RANK_METRICS:
            rk = " > ".join(" = ".join(MODEL_LABELS.get(x, x) for x in tie) for tie in e["rankings"][m])
            lines.append(f"- `{m}` ({METRIC_HELP[m]}): {rk or 'not logged'}")
        lines += ["", "| Rankings compared | models | Kendall's tau-b | p |", "|---|---:|---:|---:|"]
        for t in e["taus"]:
            lines.append(f"| `{t['a']}` vs `{t['b']}` | {t['n']} | {_num(t['tau'], '{:+.2f}')} | {_p(t['p'])} |")
        notes = [f"`{m}` missing for {', '.join(MODEL_LABELS.get(x, x) for x in xs)} (left out of that ranking)"
                 for m, xs in e["missing"].items() if xs]
        n_users = pd.to_numeric(pd.Series([users]), errors="coerce").iloc[0] if users and "/" not in users else None
        if "test_full_hr_10" in extra and n_users and n_users > 0:
            hits = ", ".join(f"{MODEL_LABELS.get(x, x)} {sub.loc[x, 'test_full_hr_10:mean'] * n_users:.0f}"
                             for x in e["models"] if sub.loc[x, "test_full_hr_10:n"] > 0)
            notes.append(f"the full-catalogue metrics rest on few hits: test items in the top 10 out of "
                         f"{n_users:.0f} users: {hits} (mean over seeds), so their ranking is noisy")
        if notes:
            lines += ["", "Notes: " + "; ".join(notes) + "."]
        lines.append("")
    return "\n".join(lines).rstrip()


# ------------------------------------------------------------------------------------------ provenance (pure)
def _budget(r: pd.Series, with_model_cap: bool = False) -> str:
    """The trainer's budget; a model's own epoch cap (model.epochs) only on request, as it is a recipe choice."""
    epochs = r.get("params.trainer.epochs")
    cap = (f", epochs≤{epochs}" if epochs not in (None, "None") else
           f", epochs≤{r.get('params.model.epochs')} (model)" if with_model_cap else "")
    return f"max_steps={r.get('params.trainer.max_steps')}{cap}, eval_every={r.get('params.trainer.eval_every')}"


def _num(x, fmt: str = "{:.0f}") -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def provenance_markdown(picked: pd.DataFrame, runs: pd.DataFrame | None = None) -> str:
    """One row per cell: its runs, commit, data hash, protocol, seeds, budget, steps/epochs done and wall time;
    then the runs that did not finish, used (shown as failed) or superseded by a finished run of the same seed."""
    lines = [("| Model | Dataset | Protocol | Recipe | Seeds (status) | Budget | Steps done | Epochs done | "
              "Wall time s (sum) | Git commit | Data hash | Run ids |"),
             "|---|---|---|---|---|---|---:|---:|---:|---|---|---|"]
    order = {m: i for i, m in enumerate(model_order(set(picked["model"])))}
    keyed = picked.assign(_o=picked["model"].map(order)).sort_values(["protocol", "recipe", "dataset", "_o"])
    for key, g in keyed.groupby(GROUP, sort=False):
        g = g.sort_values("seed", key=lambda s: s.map(_seed_key))
        seeds = ", ".join(f"{s} ({st.lower()})" for s, st in zip(g["seed"], g["status"]))
        commits = sorted({f"{c[:10]}{'+dirty' if d == 'true' else ''}" for c, d in
                          zip(g["tags.git_commit"], g["tags.git_dirty"]) if c})
        budgets = sorted({_budget(r, with_model_cap=True) for _, r in g.iterrows()})
        steps = "/".join(_num(v) for v in g["metrics.steps"])
        epochs = "/".join(_num(v, "{:.2f}") for v in g["metrics.epochs_done"])
        wall = g["metrics.wall_time_s"].sum(min_count=1)
        lines.append(f"| {MODEL_LABELS.get(key[3], key[3])} | {key[2]} | {key[0]} | {key[1]} | {seeds} | "
                     f"{'; '.join(budgets)} | {steps} | {epochs} | {_num(wall)} | {', '.join(commits) or DASH} | "
                     f"{', '.join(sorted(set(g['tags.data_hash']) - {''})) or DASH} | "
                     f"{'<br>'.join(f'`{r}`' for r in g['run_id'])} |")
    def item(r: pd.Series) -> str:
        return f"- `{r.run_id}` {r.run_name}: {r.status}" + (f" ({r['tags.error'][:200]})" if r["tags.error"] else "")
    failed = picked[picked["status"] != "FINISHED"]
    if len(failed):
        lines += ["", "Runs that did not finish (shown as such in the table, never as numbers):", ""]
        lines += [item(r) for _, r in failed.iterrows()]
    if runs is not None and len(runs):
        superseded = runs[~runs["run_id"].isin(picked["run_id"]) & (runs["status"] != "FINISHED")]
        if len(superseded):
            lines += ["", "Runs that did not finish, not used because a FINISHED run of the same seed exists:", ""]
            lines += [item(r) for _, r in superseded.iterrows()]
    return "\n".join(lines)


def ui_check_markdown(picked: pd.DataFrame) -> str:
    """Are the runs comparable in the MLflow UI: standard names, the key metrics on every finished run?"""
    done = picked[picked["status"] == "FINISHED"]
    expected = done["model"] + "/" + done["dataset"] + "/seed" + done["seed"]
    misnamed = done[done["run_name"] != expected]
    missing = {m: int(done[f"metrics.{m}"].isna().sum()) for m in KEY_METRICS if done[f"metrics.{m}"].isna().any()}
    exps = ", ".join(f"`{e}`" for e in sorted(set(picked["experiment"])))
    lines = [f"Experiments: {exps}. In the UI, select these runs and use Compare: every finished run is named "
             "`<model>/<dataset>/seed<k>` and carries the same params (the flattened config) and key metrics ("
             + ", ".join(f"`{m}`" for m in KEY_METRICS) + ")."]
    if len(misnamed):
        lines.append("Runs with a non-standard name: " + ", ".join(f"`{r}`" for r in misnamed["run_name"]))
    if missing:
        lines.append("Finished runs missing a key metric: " + ", ".join(f"`{k}` ({v})" for k, v in missing.items()))
    else:
        lines.append(f"Check: all {len(done)} finished run(s) have every key metric.")
    return " ".join(lines)


# ------------------------------------------------------------------------------------------------- the report
@dataclass
class Report:
    path: Path
    figures: list[Path]
    cells: pd.DataFrame
    stats: dict[tuple[str, str, str], ColumnStats]
    optimism: pd.DataFrame | None = None        # optimism_cells: the diagnostic runs' numbers
    selection: pd.DataFrame | None = None       # selection_comparison: paper vs loo_val test_auc


def _budget_line(picked: pd.DataFrame) -> str:
    done = picked[picked["status"] == "FINISHED"]
    budgets = sorted({_budget(r) for _, r in done.iterrows()})
    if not budgets:
        return "Budget: no finished runs."
    if len(budgets) == 1:
        return f"Budget (every finished run): {budgets[0]}; steps actually run are in the provenance block."
    return "Budgets differ between runs (see the provenance block): " + " | ".join(budgets) + "."


def render_report(picked: pd.DataFrame, *, runs: pd.DataFrame | None = None, title: str, metric: str,
                  tracking_uri: str, flt: RunFilter, column_stats_by_key: dict,
                  figures: dict[tuple[str, str], list[Path]], command: str, n_boot: int, note: str = "",
                  missing_outcomes: tuple[str, ...] = (), curves: pd.DataFrame | None = None,
                  diagnostic_figures: list[Path] = ()) -> str:
    """The markdown document from already-loaded inputs (pure apart from the clock). Diagnostic protocols
    (DIAGNOSTIC_PROTOCOLS) get their own section only, never a Table 3; `curves` (optional) gives the optimism
    section the test-selected steps."""
    cells = summarize_cells(picked, metric)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {title}", "",
           f"Generated {now} from MLflow only (`{tracking_uri}`), runs filtered by: {flt.describe()}. "
           f"Metric: `{metric}`" + (" (the paper's per-user AUC, mean of 1[score(pos) > score(neg)])"
                                    if metric == PAPER_METRIC else " (the paper column applies to test_auc only)")
           + f". Regenerate any time with `{command}`.", "",
           *([note, ""] if note else []), _budget_line(picked), ""]
    if picked.empty:
        return "\n".join(out + ["No runs match these filters."]) + "\n"
    groups = headline_groups(cells)
    protocols = list(dict.fromkeys(p for p, _ in table_groups(cells)))     # paper first, then alphabetical
    protocols.sort(key=lambda p: p in DIAGNOSTIC_PROTOCOLS)

    def plabel(p: str) -> str:
        label = cells[cells["protocol"] == p]["protocol_label"].iloc[0]
        return label + (" (diagnostic only: its own section below, never a Table 3)" if p in DIAGNOSTIC_PROTOCOLS
                        else "")
    out.append("Protocols in this report: " + "; ".join(f"`{p}` = {plabel(p)}" for p in protocols) + ".")
    if not groups:
        out += ["", "No Table 3: only diagnostic runs match these filters."]
    for proto, recipe in groups:
        g = cells[(cells["protocol"] == proto) & (cells["recipe"] == recipe)]
        label = g["protocol_label"].iloc[0]
        g_runs = picked[(picked["protocol"] == proto) & (picked["recipe"] == recipe)]
        out += ["", f"## Table 3: {label} (protocol `{proto}`, recipe `{recipe}`)", "",
                (f"These numbers use the `{proto}` protocol: {label}. Cells: mean ± sd over seeds (n = seeds "
                 f"that finished); paper = ATRank Table 3; Δ = ours − paper; best per column in bold; {DASH} = "
                 "no run."), "",
                table3_markdown(g, metric, flt.datasets)]
        out += ["", "### Is it real?", ""]
        if metric not in OUTCOME_COLUMN:
            out.append(f"Per-user outcomes define `{', '.join(OUTCOME_COLUMN)}` only; no intervals for `{metric}`.")
        else:
            out.append(f"Percentile bootstrap over test users ({n_boot:,} resamples, the same draws for every model "
                       "so differences are paired). With several seeds, each user's outcome is first averaged over "
                       "that model's seeds: the intervals measure test-user sampling, the table's sd measures seeds. "
                       "p (Δ = 0): two-sided bootstrap p-value; McNemar: exact test on one common seed's 0/1 "
                       "outcomes.")
            lacking = [r for r in missing_outcomes if r in set(g_runs["run_id"])]
            if lacking:
                out.append("Finished runs without an outcomes artifact, left out of the intervals: "
                           + ", ".join(f"`{r}`" for r in lacking) + ".")
            for d in dataset_order(g):
                col = column_stats_by_key.get((proto, recipe, d))
                if col is not None:
                    out += ["", significance_markdown(col, column_title(d, paper_column_of(
                        d, g[g['dataset'] == d]['paper_column'].iloc[0])))]
        ranks = ranking_agreement(g, metric)
        if ranks:
            out += ["", "Ranking, paper vs ours (models with both numbers; Kendall's tau-b):", ""]
            def names(ms: list[str]) -> str:
                return " > ".join(MODEL_LABELS.get(m, m) for m in ms)
            for r in ranks:
                out.append(f"- {column_title(r['dataset'], r['paper_column'])}: paper {names(r['paper'])}; ours "
                           f"{names(r['ours'])}; tau = {_num(r['tau'], '{:+.2f}')} (p = {_p(r['p'])}, "
                           f"n = {r['n']})")
        figs = figures.get((proto, recipe), [])
        if figs:
            out += ["", "### Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs]
    cmp = selection_comparison(picked)
    if len(cmp):
        out += ["", "## paper protocol (test-set selection) vs loo_val (validation selection)", "",
                selection_comparison_markdown(cmp)]
    if picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS).any():
        out += ["", "## Optimism of test-set selection (diagnostic)", "", optimism_markdown(picked, curves)]
        if diagnostic_figures:
            out += [""] + [f"![{p.stem}]({p.name})" for p in diagnostic_figures]
    if groups:
        out += ["", "## Rank agreement across metrics", "",
                ("Krichene & Rendle (KDD 2020, *On Sampled Metrics for Item Recommendation*): a metric computed "
                "against a few sampled negatives can order models differently from the same metric on the full "
                "catalogue. Per protocol table: the model ranking under `test_auc` (1 sampled negative), "
                "`test_sampled_ndcg_10` (K sampled negatives) and `test_full_ndcg_10` (full catalogue), and Kendall's "
                "tau-b between each pair of rankings (+1 = same order, −1 = reversed; with a handful of models the "
                f"p-values are weak). Values: mean ± sd over finished seeds; {DASH} = the metric was not logged "
                "(never filled in).")]
        for proto, recipe in groups:
            g_runs = picked[(picked["protocol"] == proto) & (picked["recipe"] == recipe)]
            label = g_runs["protocol_label"].iloc[0]
            wide = wide_cells(g_runs, RANK_METRICS + EXTRA_AGREEMENT_METRICS)
            out += ["", metric_agreement_markdown(wide, g_runs, f"Protocol `{proto}` ({label}), recipe `{recipe}`")]
    out += ["", "## Provenance", "",
            "Which protocol the numbers use: " + "; ".join(
                f"`{p}` ({cells[cells['protocol'] == p]['protocol_label'].iloc[0]})" for p in protocols)
            + (". Only `loo_val` numbers are honest held-out estimates; `paper` picks the checkpoint on the test set"
               if "paper" in protocols else "")
            + ("; `optimism` runs are diagnostics (test read at every evaluation), never headline numbers"
               if any(p in DIAGNOSTIC_PROTOCOLS for p in protocols) else "") + ".", "",
            provenance_markdown(picked, runs), "", "## MLflow UI", "", ui_check_markdown(picked)]
    return "\n".join(out) + "\n"


def write_report(tracking_uri: str, flt: RunFilter = RunFilter(), *, out_dir: Path, name: str,
                 metric: str = PAPER_METRIC, n_boot: int = 2000, with_figures: bool = True,
                 title: str | None = None, note: str = "", command: str = "python runners/report.py") -> Report:
    """Query MLflow, compute, and write `<out_dir>/<name>.md` with its PNGs beside it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = query_runs(tracking_uri, flt)
    picked = pick_runs(runs)
    cells = summarize_cells(picked, metric)
    col_stats: dict[tuple[str, str, str], ColumnStats] = {}
    missing: tuple[str, ...] = ()
    headline = picked[~picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS)] if len(picked) else picked
    diagnostic = picked[picked["protocol"].isin(DIAGNOSTIC_PROTOCOLS) & (picked["status"] == "FINISHED")] \
        if len(picked) else picked
    if metric in OUTCOME_COLUMN and len(headline):
        done = headline[headline["status"] == "FINISHED"]
        outcomes = load_outcomes(tracking_uri, list(done["run_id"]))
        missing = tuple(r for r in done["run_id"] if r not in outcomes)
        for (proto, recipe, d), g in done.groupby(["protocol", "recipe", "dataset"]):
            per_model: dict[str, dict[str, pd.DataFrame]] = {}
            for r in g.itertuples():
                if r.run_id in outcomes:
                    per_model.setdefault(r.model, {})[r.seed] = outcomes[r.run_id]
            col = column_stats(d, per_model, model_order(set(g["model"])), OUTCOME_COLUMN[metric], n_boot)
            if col is not None:
                col_stats[(proto, recipe, d)] = col
    figures: dict[tuple[str, str], list[Path]] = {}
    diagnostic_figures: list[Path] = []
    curves = None
    if with_figures and len(picked):
        curves = load_curves(tracking_uri, picked[picked["status"] == "FINISHED"])
    elif len(diagnostic):   # the optimism section's test-selected steps
        curves = load_curves(tracking_uri, diagnostic, keys=("curve/test_auc",))
    if with_figures and len(picked):
        from reports import figures as figs

        groups = headline_groups(cells)
        for proto, recipe in groups:
            sub = picked[(picked["protocol"] == proto) & (picked["recipe"] == recipe)]
            suffix = "" if len(groups) == 1 else f"_{proto}" + ("" if recipe == "default" else f"_{recipe}")
            figures[(proto, recipe)] = figs.make_figures(
                sub, cells[(cells["protocol"] == proto) & (cells["recipe"] == recipe)], curves,
                {k: v for k, v in col_stats.items() if k[:2] == (proto, recipe)},
                metric=metric, out_dir=out_dir, stem=f"{name}{suffix}")
        if len(diagnostic):
            made = figs.optimism_figure(picked, curves, out_dir / f"{name}_optimism.png")
            diagnostic_figures = [made] if made is not None else []
    text = render_report(picked, runs=runs, title=title or f"ATRank Table 3 regenerated: {name}", metric=metric,
                         tracking_uri=tracking_uri, flt=flt, column_stats_by_key=col_stats, figures=figures,
                         command=command, n_boot=n_boot, note=note, missing_outcomes=missing, curves=curves,
                         diagnostic_figures=diagnostic_figures)
    path = out_dir / f"{name}.md"
    path.write_text(text)
    return Report(path, [p for ps in figures.values() for p in ps] + diagnostic_figures, cells, col_stats,
                  optimism_cells(picked) if len(picked) else None, selection_comparison(picked) if len(picked) else None)
