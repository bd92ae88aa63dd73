from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_RUNS = "tags.model != ''"  # MLflow filter: a multirun's model runs, without its parent (runners/tracking/sweep_runs.py)


def alive(pid: int) -> bool:
    """Whether process `pid` is running (not gone, not a zombie)."""
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return False
    return "Z" not in state


def live_pids(matches: Callable[[list[bytes]], bool]) -> list[int]:
    """Running processes (other than this one) whose command line, split into its arguments, `matches`."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if matches(cmd) and alive(int(p.name)):
                pids.append(int(p.name))
    return pids


def isolated_env(root: Path) -> dict[str, str]:
    """Environment for a runner subprocess: its own MLflow sqlite store and cache under `root`, CI mode (no
    progress bars)."""
    return {**os.environ, "CI": "true", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "SEQREC_CACHE": str(root / "cache"), "HYDRA_FULL_ERROR": "1"}


@pytest.fixture
def isolated(tmp_path) -> dict[str, str]:
    return isolated_env(tmp_path)


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """python runners/run.py <args> from `cwd`, as a user would type it. Hydra's outputs land in `cwd`, and so
    does a multirun's Table 3 report (<cwd>/reports; by default it goes to the repo's reports/out)."""
    report_dir = f"++hydra.callbacks.report.out_dir={cwd / 'reports'}"
    return subprocess.run([sys.executable, str(REPO_ROOT / "runners" / "run.py"), *args, report_dir], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def compose(overrides: list[str]):
    """The real config, composed as the runner would, for calling runners.run.run(cfg) in-process."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)
