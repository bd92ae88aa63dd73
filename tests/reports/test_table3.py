"""Table 3's cells, markdown and column statistics on hand-built run tables (the layout of mlflow.search_runs):
no MLflow, no training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports import stats
from reports.cells import summarize_cells
from reports.provenance import provenance_markdown
from reports.render import render_report, table3_markdown
from reports.runs import RunFilter, normalize_runs, pick_runs
from reports.significance import column_stats, significance_markdown

LABELS = {"paper": "test-set selection (as in the paper)", "loo_val": "validation selection (test read once)"}


def fake_runs(rows: list[tuple]) -> pd.DataFrame:
    """rows: (model, dataset, protocol, seed, status, test_auc, start minute)."""
    recs = []
    for i, (model, dataset, protocol, seed, status, auc, minute) in enumerate(rows):
        recs.append({
            "run_id": f"run{i:02d}", "experiment_id": "1", "status": status,
            "start_time": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=minute),
            "tags.model": model, "tags.dataset": dataset, "tags.protocol": protocol,
            "tags.protocol_label": LABELS[protocol], "tags.seed": str(seed), "tags.recipe": "default",
            "tags.paper_column": {"clothing_seq": "Clothe.", "electro": "Electro."}.get(dataset, "None"),
            "tags.mlflow.runName": f"{model}/{dataset}/seed{seed}", "tags.git_commit": "abc1234def", "tags.git_dirty":
            "false", "tags.data_hash": "d1", "tags.error": "FloatingPointError: nan" if status == "FAILED" else None,
            "metrics.test_auc": auc, "metrics.steps": 100.0 if status == "FINISHED" else np.nan,
            "params.trainer.max_steps": "100"})
    return normalize_runs(pd.DataFrame(recs), {"1": "clothing_seq/paper"})


def row(md: str, label: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


RUNS = [("bpr", "clothing_seq", "paper", 0, "FINISHED", 0.70, 0),
        ("bpr", "clothing_seq", "paper", 1, "FINISHED", 0.72, 1),
        ("atrank", "clothing_seq", "paper", 0, "FAILED", np.nan, 2),
        ("pop", "clothing_seq", "paper", 0, "FINISHED", 0.65, 3),
        ("pop", "clothing_seq", "paper", 0, "FAILED", np.nan, 9)]      # a later failed re-run of a finished seed


def test_cells_layout_failed_absent_and_paper_values():
    picked = pick_runs(fake_runs(RUNS))
    assert set(picked["run_id"]) == {"run00", "run01", "run02", "run03"}   # the finished POP run wins
    md = table3_markdown(summarize_cells(picked))
    header = row(md, "Model")
    assert header == ["Model", "Clothe. (clothing_seq): test_auc", "paper", "Δ"]
    sd = np.std([0.70, 0.72], ddof=1)
    assert row(md, "BPR") == ["BPR", f"**0.7100** ± {sd:.4f} (n=2)", "0.7061", "+0.0039"]   # best: bold
    assert row(md, "ATRank") == ["ATRank", "FAILED ×1", "0.7905", "—"]   # failed: never a number
    assert row(md, "Bi-LSTM") == ["Bi-LSTM", "—", "0.7869", "—"]          # absent
    assert row(md, "POP") == ["POP", "0.6500 (n=1)", "—", "—"]
    order = [line.split("|")[1].strip() for line in md.splitlines()[2:]]
    assert order == ["BPR", "Bi-LSTM", "Bi-LSTM + Attention", "CNN + Max Pooling", "ATRank", "POP"]


def test_best_per_column_is_bold_and_partial_failures_are_counted():
    runs = RUNS[:3] + [("atrank", "clothing_seq", "paper", 1, "FINISHED", 0.80, 4)]
    md = table3_markdown(summarize_cells(pick_runs(fake_runs(runs))))
    assert row(md, "ATRank")[1] == "**0.8000** (n=1; 1 FAILED)"
    assert "**" not in row(md, "BPR")[1]


def test_one_table_per_protocol_with_its_label_and_provenance():
    runs = RUNS[:2] + [("bpr", "clothing_seq", "loo_val", 0, "FINISHED", 0.69, 5)]
    runs_df = fake_runs(runs)
    picked = pick_runs(runs_df)
    md = render_report(picked, runs=runs_df, title="t", metric="test_auc", tracking_uri="sqlite:///x.db",
                              flt=RunFilter(), column_stats_by_key={}, figures={}, command="report", n_boot=10)
    assert "## Table 3: test-set selection (as in the paper) (protocol `paper`" in md
    assert "## Table 3: validation selection (test read once) (protocol `loo_val`" in md
    assert md.index("protocol `paper`") < md.index("protocol `loo_val`")
    assert "Which protocol the numbers use:" in md and "`run00`<br>`run01`" in md
    assert "Budget (every finished run): max_steps=100" in md


def test_other_metric_has_no_paper_value():
    df = fake_runs(RUNS[:2])
    df["metrics.test_roc_auc"] = [0.75, 0.77]
    md = table3_markdown(summarize_cells(pick_runs(df), "test_roc_auc"), "test_roc_auc")
    assert row(md, "BPR")[1:] == [f"**0.7600** ± {np.std([0.75, 0.77], ddof=1):.4f} (n=2)", "—", "—"]


def test_column_stats_pairs_users_and_averages_seeds():
    users = pd.DataFrame({"reviewerID": [f"u{i}" for i in range(400)], "pos": "p", "neg": "n"})
    rng = np.random.default_rng(0)
    a0, a1, b0 = (users.assign(correct=(rng.random(400) < r).astype(int)) for r in (0.8, 0.8, 0.6))
    col = column_stats("x", {"bpr": {"0": a0, "1": a1}, "pop": {"0": b0.iloc[::-1]}}, ["bpr", "pop"],
                              n_boot=400)
    assert col.n_users == 400 and col.n_seeds == {"bpr": 2, "pop": 1}
    assert col.ci["bpr"].estimate == pytest.approx((a0.correct.mean() + a1.correct.mean()) / 2)
    # the intervals are the percentiles of the same user resamples, on outcomes aligned by user (pop came reversed)
    x = np.stack([(a0.correct.to_numpy() + a1.correct.to_numpy()) / 2, b0.correct.to_numpy()], 1)
    boot = stats.bootstrap_means(x, 400, seed=0)
    for i, m in enumerate(["bpr", "pop"]):
        lo, hi = np.percentile(boot[:, i], [2.5, 97.5])
        assert (col.ci[m].lo, col.ci[m].hi) == pytest.approx((lo, hi), abs=1e-12)
    lo, hi = np.percentile(boot[:, 1] - boot[:, 0], [2.5, 97.5])
    assert (col.diff_to_best["pop"].lo, col.diff_to_best["pop"].hi) == pytest.approx((lo, hi), abs=1e-12)
    assert col.best == "bpr" and col.diff_to_best["pop"].hi < 0
    assert col.adjacent[0].mcnemar.only_a == int(((a0.correct == 1) & (b0.correct == 0)).sum())


def test_pop_floor_says_which_model_clears_popularity():
    """Δ to POP is paired; a model clears POP only when Δ exceeds its own 95% CI half-width."""
    users = pd.DataFrame({"reviewerID": [f"u{i}" for i in range(2000)], "pos": "p", "neg": "n"})
    rng = np.random.default_rng(1)
    pop = users.assign(correct=(rng.random(2000) < 0.6).astype(int))
    flip = rng.random(2000) < 0.01      # a tie with POP: 1% of users flipped
    same = pop.assign(correct=np.where(flip, 1 - pop.correct, pop.correct))
    good = users.assign(correct=(rng.random(2000) < 0.8).astype(int))
    col = column_stats("x", {"pop": {"0": pop}, "bpr": {"0": same}, "cnn": {"0": good}}, ["bpr", "cnn", "pop"],
                       n_boot=400)
    assert set(col.diff_to_pop) == {"bpr", "cnn"}
    assert col.diff_to_pop["cnn"].estimate == pytest.approx(good.correct.mean() - pop.correct.mean())
    md = significance_markdown(col, "x")
    floor = md[md.index("Against POP"):]
    assert row(floor, "CNN + Max Pooling")[-1] == "yes"
    assert row(floor, "BPR")[-1] == "**no**"
    assert "Against POP" not in significance_markdown(column_stats("x", {"bpr": {"0": same}, "cnn": {"0": good}},
                                                                   ["bpr", "cnn"], n_boot=50), "x")


def test_provenance_says_whether_a_run_stopped_early_or_ran_its_budget():
    """Stopped by: "budget" when max_steps or the epoch cap was reached, "patience" when early stopping ended it."""
    df = fake_runs(RUNS[:2] + [("pop", "clothing_seq", "paper", 0, "FINISHED", 0.65, 3)])
    df["params.trainer.max_steps"] = ["None", "None", "100"]
    df["params.model.epochs"] = ["10", "10", "1"]
    df["params.trainer.patience"] = ["8", "8", "None"]
    df["metrics.epochs_done"] = [3.5, 10.0, 0.4]
    df["metrics.best_step"] = [40.0, 90.0, 100.0]
    md = provenance_markdown(pick_runs(df))
    bpr, pop = row(md, "BPR"), row(md, "POP")
    assert "patience=8" in bpr[5] and "patience" not in pop[5]
    assert bpr[8:10] == ["40/90", "patience/budget"]   # seed 0 stopped early, seed 1 ran its 10 epochs
    assert pop[8:10] == ["100", "budget"]                # max_steps reached


def test_unfinished_runs_are_listed_once_even_when_a_run_serves_two_protocols():
    df = fake_runs(RUNS)
    twice = pd.concat([df, df[df["status"] == "FAILED"].assign(protocol="loo_val")])
    md = provenance_markdown(pick_runs(twice), twice)
    assert md.count("`run02` atrank/clothing_seq/seed0: FAILED") == 1
    assert md.count("`run04` pop/clothing_seq/seed0: FAILED") == 1


def test_report_names_stores_relative_to_the_repository_never_by_the_machines_absolute_path():
    from reports.provenance import REPO_ROOT, portable

    picked = pick_runs(fake_runs(RUNS[:2]))
    sweep = f"{REPO_ROOT}/multirun/x/y"
    md = render_report(picked, runs=None, title="t", metric="test_auc",
                       tracking_uri=f"sqlite:///{REPO_ROOT}/mlruns/mlflow.db", flt=RunFilter(sweep_dir=sweep),
                       column_stats_by_key={}, figures={}, n_boot=10,
                       command=f"python runners/report.py --tracking-uri 'sqlite:///{REPO_ROOT}/mlruns/mlflow.db'")
    assert str(REPO_ROOT) not in md
    assert "from MLflow only (`sqlite:///mlruns/mlflow.db`)" in md and "sweep_dir=multirun/x/y" in md
    assert "--tracking-uri 'sqlite:///mlruns/mlflow.db'`" in md
    # the home folder is ~; other URIs and paths stay as given
    assert portable("/home/ann/runs/mlflow.db", home=Path("/home/ann")) == "~/runs/mlflow.db"
    assert portable("http://mlflow.lab:5000 or /data/mlflow.db", home=Path("/home/ann")) == \
        "http://mlflow.lab:5000 or /data/mlflow.db"
