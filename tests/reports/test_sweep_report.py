"""End to end: a real Hydra multirun (3 models x 2 seeds on `sample`, tiny budget) plus one FAILED run; the report
written by the on_multirun_end callback and by runners/report.py must match what MLflow holds."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports import stats

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN = str(REPO_ROOT / "runners" / "run.py")
MODELS = {"bpr": "BPR", "pop": "POP", "atrank": "ATRank"}
PAIR = ["reviewerID", "pos", "neg"]   # a user's test pair, the key the report pairs models on


def row(md: str, label: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def seed_averaged_outcomes(uri: str, tmp: Path) -> pd.DataFrame:
    """Straight from the MLflow artifacts: per test pair (rows) and model (columns), the 0/1 outcome averaged over
    the model's finished seeds."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("sample/paper")
    per_model: dict[str, list[pd.DataFrame]] = {}
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED' and tags.model != ''"):
        path = client.download_artifacts(r.info.run_id, "outcomes/test_outcomes.csv", str(tmp / r.info.run_id))
        df = pd.read_csv(path, dtype={"reviewerID": str, "pos": str, "neg": str})
        per_model.setdefault(r.data.tags["model"], []).append(df[PAIR + ["correct"]])
    return pd.concat({m: pd.concat(dfs).groupby(PAIR)["correct"].mean() for m, dfs in per_model.items()}, axis=1)


def assert_close_to(boot: stats.Interval, normal: stats.Interval) -> None:
    """A percentile bootstrap interval over 3,000 users agrees with the analytic normal one up to resampling noise
    (about a tenth of the half-width with 500 resamples; 30% allowed)."""
    assert boot.estimate == pytest.approx(normal.estimate)
    tol = 0.3 * normal.width / 2
    assert abs(boot.lo - normal.lo) < tol and abs(boot.hi - normal.hi) < tol, (boot, normal)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sweep_report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    common = ["dataset=sample", "trainer.max_steps=30", "trainer.eval_every=10", "trainer.num_threads=1",
              f"mlflow.tracking_uri={uri}", f"paths.cache_dir={root / 'cache'}"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"CI": "true"}
    # cwd=root: MLflow puts artifacts of a new experiment under ./mlruns, which must not be the repo's
    failed = subprocess.run([sys.executable, RUN, "model=sasrec", "trainer.debug_nan_at_step=2",
                             f"hydra.run.dir={root / 'failed'}", *common],
                            check=False, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0, failed.stderr[-2000:]
    multi = subprocess.run([sys.executable, RUN, "-m", f"model={','.join(MODELS)}", "seed=0,1", *common,
                            f"hydra.sweep.dir={root / 'sweep'}", f"+hydra.callbacks.report.out_dir={root / 'out'}",
                            "+hydra.callbacks.report.n_boot=500"],
                           check=False, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stdout[-2000:] + multi.stderr[-3000:]
    return {"root": root, "uri": uri, "stdout": multi.stdout}


def test_multirun_callback_writes_the_report_with_figures(sweep):
    m = re.search(r"^report: (\S+\.md)$", sweep["stdout"], re.MULTILINE)
    assert m, sweep["stdout"][-2000:]
    path = Path(m.group(1))
    assert path.parent == sweep["root"] / "out" and path.exists()
    md = path.read_text()
    assert "## Table 3: test-set selection (as in the paper) (protocol `paper`" in md
    assert row(md, "Model") == ["Model", "sample: test_auc", "paper", "Δ"]        # the paper column is there
    for label in MODELS.values():
        assert re.fullmatch(r"(\*\*)?0\.\d{4}(\*\*)? ± 0\.\d{4} \(n=2\)", row(md, label)[1]), row(md, label)
    assert row(md, "SASRec")[1] == "FAILED ×1"                                     # failed: not a number
    assert row(md, "Bi-LSTM")[1:] == ["—", "—", "—"]                               # absent
    pngs = sorted(path.parent.glob(f"{path.stem}_*.png"))
    assert [p.name.removeprefix(path.stem) for p in pngs] == ["_auc.png", "_curves.png", "_throughput.png"]
    assert all(p.stat().st_size > 10_000 for p in pngs)
    for p in pngs:
        assert f"]({p.name})" in md


def test_cli_report_cells_and_intervals_match_mlflow(sweep, tmp_path):
    import mlflow

    from reports import table3
    from runners import report

    path = report.main(["--tracking-uri", sweep["uri"], "--dataset", "sample", "--out", str(tmp_path),
                        "--name", "cli", "--n-boot", "500"])
    md = path.read_text()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(sweep["uri"])
    try:
        runs = mlflow.search_runs(experiment_names=["sample/paper"],
                                  filter_string="tags.model = 'bpr' and attributes.status = 'FINISHED'")
    finally:
        mlflow.set_tracking_uri(before)   # also restores $MLFLOW_TRACKING_URI for the other tests
    auc = runs["metrics.test_auc"].to_numpy()
    assert len(auc) == 2
    assert row(md, "BPR")[1].replace("*", "") == f"{auc.mean():.4f} ± {auc.std(ddof=1):.4f} (n=2)"

    rep = table3.write_report(sweep["uri"], table3.RunFilter(datasets=("sample",)), out_dir=tmp_path, name="again",
                              n_boot=500, with_figures=False)
    col = rep.stats[("paper", "default", "sample")]
    assert col.models == ["bpr", "atrank", "pop"] and col.n_users == 3000
    cells = rep.cells.set_index("model")
    users = seed_averaged_outcomes(sweep["uri"], tmp_path / "outcomes")
    for m in col.models:
        ci = col.ci[m]
        assert ci.estimate == pytest.approx(cells.loc[m, "mean"])   # seed-averaged outcomes = mean over seeds
        assert_close_to(ci, stats.normal_ci(users[m].to_numpy()))
        if m != col.best:   # paired: the interval of the per-user difference, not of two independent means
            assert_close_to(col.diff_to_best[m], stats.normal_ci((users[m] - users[col.best]).to_numpy()))
    best = col.diff_to_best[col.best]
    assert (best.lo, best.hi) == (0.0, 0.0)     # the same user draws for every model: no spread against itself
    assert np.isnan(cells.loc["sasrec", "mean"]) and cells.loc["sasrec", "n_failed"] == 1
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
