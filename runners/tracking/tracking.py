"""MLflow plumbing: tracking URI, the sqlite store, experiments, provenance. Only runners write results."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


def tracking_uri(configured: str | None = None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else a sqlite DB at an absolute path in <repo>/mlruns/."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{REPO_ROOT / 'mlruns' / 'mlflow.db'}"


PROBE_TIMEOUT_S = 10.0  # a tracking server that does not answer within this is refused (MLflow retries ~8 min)


def probe_server(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """For an http(s) tracking URI: one request to the server's /health, raising a RuntimeError that names the
    URI when no HTTP answer comes within `timeout_s` (refused, unreachable, silent). Any HTTP status counts as an
    answer (a proxy or a login page is the client's business); other URIs are not probed."""
    import ssl
    import urllib.error
    import urllib.request

    if not uri.lower().startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections; a malformed URI
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLError):  # it answered; certificates are MLflow's settings' business
            return
        raise RuntimeError(f"MLflow tracking server {uri} does not answer ({type(reason).__name__}: {reason}; "
                           f"waited at most {timeout_s:g} s): start it, or point mlflow.tracking_uri / "
                           "MLFLOW_TRACKING_URI at a reachable store") from None


def ensure_store(uri: str, probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Create the sqlite database (schema included) once, before parallel jobs start writing to it. For sqlite,
    creation and migration run under a file lock beside the database (`<db>.lock`), so two commands started at
    once never race alembic (`table _alembic_tmp_... already exists`): one creates, the other waits, then opens.
    A tracking server is probed first (`probe_server`), so one that does not answer fails in seconds."""
    import mlflow
    from filelock import FileLock

    if not uri.startswith("sqlite:///"):
        probe_server(uri, probe_timeout_s)
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", thread_local=False):
        mlflow.MlflowClient(uri).search_experiments(max_results=1)


def artifact_root(uri: str) -> str | None:
    """For a sqlite store, artifacts live beside the database file (MLflow's default, ./mlruns under the current
    directory, would scatter them and let two stores collide); other stores keep their server's default."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return None


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's model-training views, not GenAI's


def get_or_create_experiment(client, name: str, uri: str = "") -> str:
    """Experiment id by name; tolerant of two jobs creating it at the same moment. Tagged as a model-training
    experiment (MLflow 3's UI otherwise opens on its GenAI overview)."""
    for attempt in range(5):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get("mlflow.experimentKind") is None:
                client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_root(uri), tags=EXPERIMENT_KIND)
        except Exception:  # created concurrently by another job, or the sqlite store was busy
            time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"could not create or find MLflow experiment {name!r}")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def git_state() -> tuple[str, bool]:
    """(commit, dirty) of the repo, or ("unknown", True) outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def environment_tags() -> dict[str, str]:
    import torch

    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": str(dirty).lower(), "torch_version": torch.__version__,
            "python_version": platform.python_version(), "host": socket.gethostname(),
            "torch_threads": str(torch.get_num_threads()), "command": " ".join(sys.argv)}


# The packages whose code a run executes (data stages, models, training and evaluation); any edit to one of their
# files makes a new config hash, so skip_finished never counts a run of older code as done.
CODE_PACKAGES = ("datasets", "models", "runners")


def code_hash(root: Path = REPO_ROOT, packages: tuple[str, ...] = CODE_PACKAGES) -> str:
    """sha256 over the path and bytes of every .py file of `packages` under `root`."""
    h = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def config_hash(resolved: dict, data_hash: str, code: str) -> str:
    """Identity of a run: the resolved config minus where/how it runs, the dataset's cache hash and the code
    (`code_hash()`)."""
    ignored = {"paths", "mlflow", "skip_finished", "tags"}
    trainer_ignored = {"progress", "checkpoint_every", "eval_batch_size"}  # num_threads counts: results depend on it
    core = {k: v for k, v in resolved.items() if k not in ignored and k != "hydra"}
    core["trainer"] = {k: v for k, v in core.get("trainer", {}).items() if k not in trainer_ignored}
    payload = json.dumps({"config": core, "data": data_hash, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
