"""runners/bench.py --quick on a tiny generated set: the table's columns and that every figure is positive.

No timing assertions (timings depend on the machine); one model per training format plus ATRank.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.runners.conftest import REPO_ROOT

MODELS = ["bpr", "atrank", "sasrec"]  # pairwise, pointwise, sequence
NUMERIC = ["batch", "threads", "rows_per_epoch", "ex_per_s", "ex_per_s_min", "ex_per_s_max", "epoch_s",
           "epoch_cpu_s", "eval_s", "prep_s", "peak_rss_mb", "naive_ex_per_s", "naive_epoch_s", "naive_peak_rss_mb",
           "speedup"]


@pytest.mark.slow  # long CLI run: the slow tier (python -m pytest -m slow)
def test_quick_bench_prints_and_writes_the_table_with_positive_figures(isolated, tmp_path):
    out = tmp_path / "bench"
    res = subprocess.run([sys.executable, str(REPO_ROOT / "runners" / "bench.py"), "--quick", "--scale", "0.005",
                          "--models", ",".join(MODELS), "--steps", "2", "--no-clothing", "--out", str(out),
                          "--profile", "4", "--compare-paths", "trainer.num_threads=1"],
                         env=isolated, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    header = ("| model | batch | ex/s (median) | ex/s spread | epoch (min) | eval (s) | prep (s) | peak RSS (MB) | "
              "naive ex/s | naive epoch (min) | speed-up |")
    assert header in res.stdout and (out / "bench.md").read_text().count(header) == 1
    assert "paper split" in res.stdout
    for model in MODELS:
        assert f"| {model} |" in res.stdout

    df = pd.read_csv(out / "bench.csv")
    assert list(df["model"]) == MODELS
    assert df["error"].isna().all()
    for col in NUMERIC:
        assert (df[col] > 0).all(), (col, df[col].tolist())
    assert (df["ex_per_s_min"] <= df["ex_per_s"]).all() and (df["ex_per_s"] <= df["ex_per_s_max"]).all()
    assert (df["threads"] == 1).all()

    for model in MODELS:  # --profile: where each model's step goes, shares that add up
        assert f"#### {model} (electronics_like): where a training step goes" in res.stdout
    profiles = [m["optimised"]["profile"] for m in
                json.loads((out / "bench.json").read_text())["datasets"]["electronics_like"]["models"].values()]
    for p in profiles:
        assert set(p["phase_share"]) == {"forward", "backward", "optimizer"}
        assert abs(sum(p["phase_share"].values()) - 1.0) < 1e-9 and p["aten_calls_per_step"] > 10
        assert p["top_ops"] and all(0 < o["share"] <= 1 for o in p["top_ops"])

    # --compare-paths: the earlier path (independent rows) where pairing applies (pointwise), 2 processes where the
    # model can train data-parallel; every figure given is positive
    paths = pd.read_csv(out / "paths.csv").set_index("model")
    assert "### electronics_like: training paths (same run)" in res.stdout
    assert paths.loc["atrank", ["today_ex_per_s", "paired_ex_per_s", "dp_ex_per_s"]].gt(0).all()
    assert pd.isna(paths.loc["bpr", "today_ex_per_s"]) and paths.loc["bpr", "dp_ex_per_s"] > 0
    assert pd.isna(paths.loc["sasrec", "today_ex_per_s"]) and pd.isna(paths.loc["sasrec", "dp_ex_per_s"])
    data = json.loads((out / "bench.json").read_text())["datasets"]["electronics_like"]["data"]
    assert df.set_index("model").loc["atrank", "rows_per_epoch"] == data["n_train_pointwise"]  # paired: 2 per prefix
