"""Reading runs from MLflow: which runs a report covers, their table, outcomes and curves, and which run stands
for each seed.

MLflow is the only source (docs/design.md, "What a run logs to MLflow"): runs are found by tags, numbers are
final metrics, curves are metric histories and per-user outcomes are the `outcomes/test_outcomes.csv` artifact.
Every other module of reports/ works on the DataFrames returned here and never queries MLflow.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

OUTCOMES_ARTIFACT = "outcomes/test_outcomes.csv"
TAGS = ("model", "variant", "dataset", "protocol", "protocol_label", "seed", "recipe", "paper_column", "git_commit",
        "git_dirty", "data_hash", "split_hash", "config_hash", "sweep_dir", "error", "mlflow.runName")
PARAMS = ("trainer.max_steps", "trainer.eval_every", "trainer.epochs", "trainer.patience", "model.epochs", "model.name",
          "dataset.name", "protocol.name", "seed", *(f"protocol.{k}" for k in (
              "eval_negatives", "eval_negatives_kind", "eval_negatives_pool", "eval_negatives_redraw",
              "eval_negatives_file", "select_on", "select_metric", "ties", "full_ranking_history",
              "full_ranking_users", "split", "split_seed")))
EVAL_KNOBS = tuple(p for p in PARAMS if p.startswith("protocol.") and p != "protocol.name")  # named in reports
KEY_METRICS = ("test_auc", "test_roc_auc", "best_step", "steps", "epochs_done", "train_seconds", "examples_per_s",
               "wall_time_s", "n_test_users")
GROUP = ["protocol", "recipe", "dataset", "model"]    # one table cell; its seeds are the cell's runs
CURVE_KEYS = ("curve/test_auc", "curve/valid_auc", "curve/examples_per_s")
LOO_VAL_FROM_OPTIMISM = ("validation selection (test read once), from `optimism` runs: their validation-selected "
                         "test AUC, the same split and selection as `loo_val`")


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
    if "tags.sweep_parent" in df.columns:  # a sweep's parent run holds its report, not a model's result
        df = df[df["tags.sweep_parent"] != "true"]
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
    variant = df["tags.variant"].astype(str)  # +tags.variant=...: a model's named variant is its own row
    df.loc[variant != "", "model"] = df["model"] + " [" + variant + "]"
    df["run_name"] = df["tags.mlflow.runName"]
    df["experiment"] = df["experiment_id"].map(lambda i: experiment_names.get(i, str(i)))
    df.loc[df["recipe"] == "", "recipe"] = "default"
    df["from_optimism"] = False
    return df[df["model"] != ""].reset_index(drop=True)


def optimism_as_loo_val(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` plus each optimism run again as a `loo_val` run (marked `from_optimism`), for the seeds that have
    no loo_val run of their own. An optimism run trains on the loo_val split and selects on validation, so its
    `test_auc` and outcomes are exactly what a loo_val run reports; only the test curve beside it is extra."""
    key = ["recipe", "dataset", "model", "seed"]
    opt = runs[runs["protocol"] == "optimism"]
    have = set(map(tuple, runs.loc[runs["protocol"] == "loo_val", key].to_numpy()))
    copies = opt[[tuple(k) not in have for k in opt[key].to_numpy()]].assign(
        protocol="loo_val", from_optimism=True,
        protocol_label=LOO_VAL_FROM_OPTIMISM)
    return pd.concat([runs, copies], ignore_index=True) if len(copies) else runs


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


def load_curves(tracking_uri: str, runs: pd.DataFrame, keys: tuple[str, ...] = CURVE_KEYS) -> pd.DataFrame:
    """Metric histories of `runs` as long rows: run_id, key, step, value (once per run, also when `runs` lists a
    run twice, as optimism_as_loo_val does)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    rows = [(rid, k, m.step, m.value) for rid in runs["run_id"].unique() for k in keys   # a run may be listed twice
            for m in client.get_metric_history(rid, k)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def pick_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per (protocol, recipe, dataset, model, seed): the latest FINISHED, else the latest of any status
    (so a seed whose only run failed shows as failed, and a later re-run that finished replaces it)."""
    if runs.empty:
        return runs
    ordered = runs.assign(_unfinished=runs["status"] != "FINISHED").sort_values(
        ["_unfinished", "start_time"], ascending=[True, False], kind="stable")
    picked = ordered.groupby(GROUP + ["seed"], sort=False).head(1).drop(columns="_unfinished")
    return picked.reset_index(drop=True)


def seed_key(s: str) -> tuple:
    """Sort key of a seed tag: numeric seeds in numeric order, then any other tag."""
    return (0, int(s), "") if str(s).lstrip("-").isdigit() else (1, 0, str(s))


def finished(picked: pd.DataFrame) -> pd.DataFrame:
    """The runs that finished (the only ones whose numbers are used)."""
    return picked[picked["status"] == "FINISHED"]
