"""Hydra callbacks: create the MLflow store before jobs start; summarise a sweep from MLflow when it ends."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runners.tracking import ensure_store, tracking_uri  # noqa: E402

log = logging.getLogger(__name__)


class PrepareTracking(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        ensure_store(tracking_uri(config.mlflow.tracking_uri))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        ensure_store(tracking_uri(config.mlflow.tracking_uri))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print how many jobs finished, failed or were skipped (from each job's status.json); exit 1 on failures."""
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/status.json"))]
        counts = {k: sum(1 for s in statuses if s["status"] == k) for k in ("FINISHED", "SKIPPED", "FAILED")}
        print(f"sweep summary: {len(statuses)} job(s): {counts['FINISHED']} finished, {counts['SKIPPED']} skipped "
              f"(already finished), {counts['FAILED']} failed [{sweep_dir}]", flush=True)
        for s in statuses:
            if s["status"] == "FAILED":
                print(f"  FAILED {s['run_name']}: {s.get('error', '?')}", flush=True)
            elif s["status"] == "SKIPPED":
                print(f"  SKIPPED {s['run_name']}: already FINISHED as run {s.get('run_id')} "
                      f"(test_auc={s.get('test_auc')})", flush=True)
        sweeper = config.hydra.get("sweeper") or {}
        if "optuna" in str(sweeper.get("_target_", "")):  # experiment=tune_<model>: the same budget for every model
            print(f"tuning budget: {sweeper.n_trials} optuna trial(s) for model {config.model.name}, selected on "
                  f"{config.protocol.select_on} ({config.protocol.name})", flush=True)
        if counts["FAILED"]:
            raise SystemExit(1)
