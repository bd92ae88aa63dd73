"""The MLflow UI, checked in a real browser (headless Chromium) after a 2-model sweep: the experiment opens on its
runs (model-training view), the sweep's parent run holds its jobs nested, the Dataset column names the data, and
the compare page of the two runs shows test_auc. Screenshots go to a temp dir, or to $SEQREC_SCREENSHOT_DIR
(docs/img when refreshing the README's images)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import mlflow
import pytest

from tests.runners.tracking.browser import Browser, chromium, free_port, wait_for_http
from tests.runners.conftest import MODEL_RUNS, run_cli

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian package `chromium`)")]
EXPAND = 'button[data-component-id*="runnamecellrenderer"]'  # the +/- of a parent run's row
CLOSE_ASSISTANT = 'button[data-component-id="mlflow.assistant.chat_panel.close"]'
SCROLL_TO = ("(() => { const e = document.evaluate(\"//*[normalize-space(text())='%s']\", document, null, "
             "XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue; if (e) e.scrollIntoView({block: 'start'}); "
             "return Boolean(e); })()")  # the page, not the virtualised tables (their columns scroll in sync)


@pytest.fixture
def sweep_store(isolated, tmp_path) -> str:
    res = run_cli(["-m", "model=pop,bpr", "dataset=sample", "trainer.max_steps=60", "trainer.eval_every=30",
                   "trainer.num_threads=1"], isolated, tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return isolated["MLFLOW_TRACKING_URI"]


@pytest.fixture
def mlflow_ui(sweep_store, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", sweep_store, "--port",
                             str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", 180)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers, by the PID we started
        proc.wait(30)


def test_the_ui_opens_on_the_sweep_with_nested_runs_datasets_and_the_comparison(sweep_store, mlflow_ui, tmp_path):
    shots = Path(os.environ.get("SEQREC_SCREENSHOT_DIR") or tmp_path)
    client = mlflow.MlflowClient(sweep_store)
    exp = client.get_experiment_by_name("sample/paper")
    runs = client.search_runs([exp.experiment_id], MODEL_RUNS)
    digest = runs[0].inputs.dataset_inputs[0].dataset.digest
    with Browser() as browser:
        browser.open(f"{mlflow_ui}/#/experiments/{exp.experiment_id}?workflowType=machine_learning")
        text = browser.wait_for_text("Runs", "Dataset", "sweep ")
        browser.click(CLOSE_ASSISTANT)  # the side panel would hide the table's right half
        assert "Traces" not in text.split("Runs")[0] or "Model training" in text  # the model-training view
        assert browser.click(EXPAND) >= 1
        text = browser.wait_for_text("pop/sample/seed0", "bpr/sample/seed0", f"sample ({digest}")
        browser.screenshot(shots / "mlflow_runs.png")

        ids = urllib.parse.quote(json.dumps([r.info.run_id for r in runs]))
        browser.open(f"{mlflow_ui}/#/compare-runs?runs={ids}&experiments="
                     f"{urllib.parse.quote(json.dumps([exp.experiment_id]))}&workflowType=machine_learning")
        browser.wait_for_text("best_test_auc", "pop/sample/seed0", "bpr/sample/seed0")
        for section in ("Parameters", "Metrics", "Tags"):  # what differs between the two runs
            browser.click(f'button[aria-label="{section} - Show diff only"]')
        text = browser.wait_for_text("\ntest_auc\n")  # a row of the metrics table, beside the two runs' values
        assert browser.evaluate(SCROLL_TO % "Metrics")
        browser.screenshot(shots / "mlflow_compare.png")
    assert (shots / "mlflow_runs.png").stat().st_size > 10_000 and (shots / "mlflow_compare.png").stat().st_size > 10_000
