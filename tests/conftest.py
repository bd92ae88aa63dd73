"""Shared fixtures. The repo root goes first on sys.path so `datasets` is ours, never Hugging Face's."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = Path(os.environ.get("SEQREC_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set SEQREC_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def restore_mlflow_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri (called by tests and by runners.run.run in-process) changes a process-wide setting
    and exports $MLFLOW_TRACKING_URI, which every later subprocess inherits: each test gets both back as they were."""
    from mlflow.tracking._tracking_service import utils  # where mlflow keeps the URI set in this process

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)
    if "MLFLOW_TRACKING_URI" in os.environ:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ["MLFLOW_TRACKING_URI"])
    else:  # recorded as unset (setenv, then delenv), so teardown removes a value the test leaves behind
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
