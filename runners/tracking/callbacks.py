"""Hydra callbacks, registered in conf/config.yaml under hydra.callbacks:

- CreateTrackingStore: create the MLflow store before any job starts (parallel jobs then only write to it);
- SummariseSweep: when a multirun ends, print what each job did (from its status.json, found however deep the job
  folders nest) and exit 1 if any failed or none was found;
- WriteReport: when a multirun ends, write the Table 3 report of the experiments the sweep touched.

Hydra calls end hooks in reverse order of registration, so `report` (registered last) is written before the
summary prints and sets the exit code. The report covers every run of those experiments, not only this sweep's,
so the table accumulates across sweeps; a report failure is printed and never changes the sweep's outcome.
"""
from __future__ import annotations

import re
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
if sys.path[0] != str(REPO_ROOT):  # Hydra imports this module by name: our `datasets`, never Hugging Face's
    sys.path.insert(0, str(REPO_ROOT))
from runners.tracking.sweep_runs import (close_orphaned_parents, close_parents, hold_sweep, job_statuses,  # noqa: E402
                                release_sweep, write_sweep_file)
from runners.tracking.tracking import ensure_store, tracking_uri  # noqa: E402


class CreateTrackingStore(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        ensure_store(tracking_uri(config.mlflow.tracking_uri))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = tracking_uri(config.mlflow.tracking_uri)
        ensure_store(uri)
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        hold_sweep(sweep_dir)
        write_sweep_file(sweep_dir, list(config.hydra.overrides.task), " ".join(sys.argv))
        try:
            import mlflow

            closed = close_orphaned_parents(mlflow.MlflowClient(uri))
            if closed:
                print(f"closed {len(closed)} parent run(s) of sweeps that were killed: {', '.join(closed)}", flush=True)
        except Exception as e:  # noqa: BLE001  (bookkeeping must never fail a sweep)
            print(f"orphaned sweep parents: not checked ({type(e).__name__}: {e})", flush=True)


class SummariseSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print how many jobs finished, failed or were skipped (from each job's status.json); exit 1 when a job
        failed or no job was found."""
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = job_statuses(sweep_dir)
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
        if not statuses:
            print(f"sweep summary: no job folder found under {sweep_dir} (expected .hydra/hydra.yaml or status.json "
                  "in each)", flush=True)
        if counts["FAILED"] or not statuses:
            raise SystemExit(1)


class WriteReport(Callback):
    def __init__(self, out_dir: str | None = None, name: str | None = None, metric: str = "test_auc",
                 n_boot: int = 2000, figures: bool = True, enabled: bool = True) -> None:
        self.out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "out"
        self.name = name
        self.metric = metric
        self.n_boot = n_boot
        self.figures = figures
        self.enabled = enabled

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        files: list[Path] = []
        if self.enabled:
            try:
                report = self._write(config)
                files = [report.path, *report.figures] if report else []
                print(f"report: {report.path}" if report else "report: no MLflow runs from this sweep, nothing written",
                      flush=True)
            except Exception as e:  # noqa: BLE001  (a report must never fail a sweep)
                print(f"report: not written ({type(e).__name__}: {e})\n{traceback.format_exc()}", flush=True)
        self._close_parent_runs(config, files)

    @staticmethod
    def _close_parent_runs(config: DictConfig, files: list[Path]) -> None:
        """The sweep's parent runs (runners/tracking/sweep_runs.py) get the report as artifacts and end."""
        import mlflow

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        failed = sum(1 for s in job_statuses(sweep_dir) if s["status"] == "FAILED")
        try:
            closed = close_parents(mlflow.MlflowClient(tracking_uri(config.mlflow.tracking_uri)), str(sweep_dir),
                                   files, failed)
            if closed:
                print(f"sweep parent run(s): {', '.join(closed)}", flush=True)
        except Exception as e:  # noqa: BLE001  (bookkeeping must never fail a sweep)
            print(f"sweep parent runs: not closed ({type(e).__name__}: {e})", flush=True)
        release_sweep(sweep_dir)

    def _write(self, config: DictConfig):
        import mlflow

        from reports.table3 import RunFilter, write_report  # lazy: only a multirun's end needs the report stage

        uri = tracking_uri(config.mlflow.tracking_uri)
        sweep_dir = Path(config.hydra.sweep.dir).resolve()   # as runners/run.py tags it
        client = mlflow.MlflowClient(uri)
        exp_ids = {e.experiment_id for e in client.search_experiments()}
        touched = {r.info.experiment_id for r in client.search_runs(
            list(exp_ids), filter_string=f"tags.sweep_dir = '{sweep_dir}'")} if exp_ids else set()
        # Jobs skipped as already finished log nothing new: their run ids are in the jobs' status files.
        for status in job_statuses(sweep_dir):
            run_id = status.get("run_id")
            if run_id:
                touched.add(client.get_run(run_id).info.experiment_id)
        if not touched:
            return None
        names = tuple(sorted(client.get_experiment(i).name for i in touched))
        name = self.name or "sweep_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(sweep_dir.parts[-2:]))
        report = write_report(uri, RunFilter(experiments=names), out_dir=self.out_dir, name=name, metric=self.metric,
                              n_boot=self.n_boot, with_figures=self.figures,
                              command="python runners/report.py " + " ".join(f"--experiment '{n}'" for n in names)
                              + f" --tracking-uri '{uri}' --name {name}")
        return report
