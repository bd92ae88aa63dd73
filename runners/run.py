"""The main command: python runners/run.py [-m] model=<name>[,<name>...] dataset=<name> [protocol=...] [seed=...]

`run(cfg) -> dict` does one job in named steps: data -> MLflow run (or skip / resume) -> model -> train -> the one
final test read -> metrics. runners/config.py turns the config into plain settings (a Job); the steps take those.
`main` is the thin Hydra wrapper: in a multirun a failed job is recorded (MLflow run FAILED + status.json) and the
sweep goes on; the sweep's summary and exit code come from runners/tracking/callbacks.py.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):  # our `datasets` package, never Hugging Face's
    sys.path.insert(0, str(REPO_ROOT))
# Job processes of launchers (submitit local / Slurm) unpickle the task in a fresh interpreter: same path there.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), *(q for q in os.environ.get("PYTHONPATH", "").split(os.pathsep) if q and q != str(REPO_ROOT))])

from runners.parallel.lifeline import torchrun_rank_dies_with_parent  # noqa: E402  (standard library only)
from runners.train.wait_policy import record_wait_policy, wait_policy_in_effect  # noqa: E402  (standard library only)

torchrun_rank_dies_with_parent()  # before the heavy imports below: kill -9 of torchrun then ends its ranks too
record_wait_policy()  # before torch loads libgomp: the OMP_WAIT_POLICY its runs record (runners/train/wait_policy.py)

import hydra  # noqa: E402
import mlflow  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from datasets.batching import eval_rows  # noqa: E402
from datasets.load import load_dataset  # noqa: E402
from datasets.split import Split, data_options, load_split, split_fingerprint  # noqa: E402
from datasets.table import Table  # noqa: E402
from models.interface import SeqRecModel  # noqa: E402
from models.external import model_class  # noqa: E402
from datasets.names import under  # noqa: E402
from runners.checks import check_outcome, check_parameters  # noqa: E402
from runners.config import DataSettings, Job, check_config, job_settings, run_name  # noqa: E402
from runners.parallel.data_parallel import train_processes  # noqa: E402
from runners.parallel.torchrun import helpers_class, run_rank  # noqa: E402
from runners.paths import register_path_resolver  # noqa: E402
from runners.step.device import device_info, resolve_device  # noqa: E402
from runners.step.settings import TrainSettings  # noqa: E402
from runners.tracking.lease import config_lease  # noqa: E402
from runners.tracking.sweep_runs import parent_run_id  # noqa: E402
from runners.tracking.tracking import (code_hash, config_hash, ensure_store, environment_tags, flatten,  # noqa: E402
                                       get_or_create_experiment, tracking_uri)
from runners.train.checkpoint import usable_checkpoint  # noqa: E402
from runners.train.evaluation import EvalOutcome, TestSetGuard, final_evaluation  # noqa: E402
from runners.train.interrupts import Terminated, closing_on_signals, pending_signal  # noqa: E402
from runners.train.runtime import configure_runtime, peak_rss_mb, seed_everything, tune_malloc  # noqa: E402
from runners.train.selection import EvalData, eval_data  # noqa: E402
from runners.train.trainer import TrainResult  # noqa: E402

log = logging.getLogger("seqrec")
register_path_resolver()  # before @hydra.main composes: conf/config.yaml's folder names use ${path_part:...}


@dataclass
class Store:
    """The MLflow store and experiment a job logs to."""
    uri: str
    client: mlflow.MlflowClient
    experiment_id: str


def load_data(d: DataSettings) -> tuple[Table, Split]:
    table = load_dataset(d.dataset, d.kind, d.data_root, d.cache_dir, data_options(d.options, d.split, d.short_users))
    return table, load_split(table, d.cache_dir, **d.split_options())


def open_store(configured_uri: str | None, experiment: str) -> Store:
    """The store (created if new) becomes this process's MLflow store; the experiment is created if new."""
    uri = tracking_uri(configured_uri)
    ensure_store(uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    return Store(uri, client, get_or_create_experiment(client, experiment, uri))


def find_runs(store: Store, chash: str, statuses: tuple[str, ...]) -> list[mlflow.entities.Run]:
    """The experiment's runs of config hash `chash` in one of `statuses`, newest first."""
    runs = store.client.search_runs([store.experiment_id], filter_string=f"tags.config_hash = '{chash}'",
                                    order_by=["attributes.start_time DESC"])
    return [r for r in runs if r.info.status in statuses]


def skipped(finished: mlflow.entities.Run, job: Job, chash: str) -> dict:
    """The result of a job whose config already has a FINISHED run: that run's figures, nothing trained."""
    best = f"best_{job.select_on}_{job.select_metric}"
    log.info("skip %s: config %s already FINISHED as run %s (%s=%s, test_auc=%s)", job.run_name, chash,
             finished.info.run_id, best, finished.data.metrics.get(best), finished.data.metrics.get("test_auc"))
    return {"status": "SKIPPED", "run_id": finished.info.run_id, "run_name": job.run_name,
            "selection_score": finished.data.metrics.get(best, math.nan),
            "test_auc": finished.data.metrics.get("test_auc", math.nan)}


def resumable_run(store: Store, chash: str, checkpoint: Path) -> str | None:
    """The MLflow run to continue from `checkpoint`: the latest unfinished run of this config, if its checkpoint
    is there and reads back whole (a checkpoint without its MLflow run cannot be continued faithfully, so it is
    removed; a damaged one is moved aside: the run starts over). Called under the config's lease
    (runners/tracking/lease.py), so a RUNNING run of this config is an orphan whose process is gone: one not continued
    is closed as KILLED."""
    unfinished = find_runs(store, chash, ("RUNNING", "FAILED", "KILLED"))
    resume_id = unfinished[0].info.run_id if unfinished and usable_checkpoint(checkpoint) else None
    for orphan in (r for r in unfinished if r.info.status == "RUNNING" and r.info.run_id != resume_id):
        store.client.set_tag(orphan.info.run_id, "error", "orphaned: its process ended without closing the run "
                             f"(lease of config {chash} taken over by pid {os.getpid()})")
        store.client.set_terminated(orphan.info.run_id, status="KILLED")
    if resume_id is None:
        checkpoint.unlink(missing_ok=True)
    return resume_id


def run_tags(job: Job, table: Table, split: Split, chash: str, sweep_dir: str | None, resumed: bool,
             parent_id: str | None = None) -> dict:
    """Provenance (environment, config, hashes of config, data and split, output folder), then the user's tags;
    in a multirun, the sweep folder and the sweep's parent run (runners/tracking/sweep_runs.py)."""
    tags = {**environment_tags(), **device_info(resolve_device(job.settings.device)), **job.tags,
            "config_hash": chash, "data_hash": table.content_hash, "omp_wait_policy": wait_policy_in_effect(),
            "split_hash": split_fingerprint(split), "output_dir": str(_output_dir() or ""),
            **split.provenance(), **job.user_tags}
    if sweep_dir:
        tags["sweep_dir"] = sweep_dir
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    if resumed:
        tags["resumed"] = "true"
    return tags


def log_run_start(job: Job, store: Store, table: Table, split: Split, tags: dict, resume_id: str | None
                  ) -> set[tuple[str, int]]:
    """Params (a new run), tags and the config; returns the (curve, step) points a resumed run logged already."""
    if not resume_id:
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(job.resolved).items()})
    mlflow.set_tags(tags)
    mlflow.log_dict(job.resolved, "config.yaml")
    if not resume_id:
        policy = {**table.cleaning, **split.short_user_counts(table)}  # data policy and protocol counts
        mlflow.log_metrics({"n_users": table.n_users, "n_items": table.n_items,
                            "n_categories": table.n_categories, "n_interactions": table.n_interactions,
                            **{f"data_{k}": v for k, v in policy.items()}})
        log_dataset_input(job, table)
        return set()
    prev = store.client.get_run(resume_id)
    for k in ("error", "error_traceback"):  # a FAILED run being continued: its old error is stale
        if k in prev.data.tags:
            store.client.delete_tag(resume_id, k)
    return {(k, m.step) for k in prev.data.metrics if k.startswith("curve/")
            for m in store.client.get_metric_history(resume_id, k)}


def log_dataset_input(job: Job, table: Table) -> None:
    """The run's dataset as an MLflow input (the UI's Dataset column): its name, the table's content hash as the
    digest, where the data was read from, and its size."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    generated = job.data.kind == "sample"  # written under the cache dir from its settings
    source = str(job.data.options.get("path") or (job.data.cache_dir if generated else job.data.data_root))
    dataset = MetaDataset(LocalArtifactDatasetSource(source), name=table.name, digest=table.content_hash)
    mlflow.log_input(dataset, context="training", tags={k: str(v) for k, v in table.stats().items()})


def curve_logger(logged: set[tuple[str, int]]) -> Callable[[dict[str, float], int], None]:
    """train()'s log_metrics: curve/<name> at each step; after a resume, each point once."""
    def log_curve(m: dict[str, float], step: int) -> None:
        new = {f"curve/{k}": v for k, v in m.items() if (f"curve/{k}", step) not in logged}
        if new:
            mlflow.log_metrics(new, step=step)

    return log_curve


def build_model(job: Job, table: Table) -> SeqRecModel:
    """The model on `table`; one that takes `behaviours` (ATRank) gets the dataset's behaviour groups."""
    seed_everything(job.seed)  # before construction: the initial weights depend on it
    cls = model_class(job.model, job.model_target, job.params)
    extra = {"behaviours": table.behaviours} if "behaviours" in inspect.signature(cls).parameters else {}
    return cls(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
               item_category=table.item_category, **job.params, **extra)


def fail_for_testing(debug_raise: str | bool | None) -> None:
    """trainer.debug_raise=true|MemoryError: the job fails before training."""
    if debug_raise:
        raise (MemoryError if str(debug_raise) == "MemoryError" else RuntimeError)(
            f"trainer.debug_raise={debug_raise}: failure forced for testing")


def final_metrics(job: Job, split: Split, settings: TrainSettings, model: SeqRecModel, evals: EvalData,
                  result: TrainResult, t_start: float) -> tuple[dict, EvalOutcome]:
    """The selected weights are loaded: the one final read of the test set computes every test metric; with a
    validation split, the same metrics on it; with track_test, the optimism of test-set selection."""
    guard = evals.test_guard
    test, test_extra = final_evaluation(model, evals.maker, guard.rows(), split, settings.eval_batch_size,
                                        evals.full_ranking_users, evals.seed, evals.ties, evals.history)
    final = {"test_auc": test.auc, **{f"test_{k}": v for k, v in test_extra.items()},
             f"best_{job.select_on}_{job.select_metric}": result.best_score, "best_step": result.best_step,
             "steps": result.steps, "epochs_done": result.epochs_done, "train_seconds": result.train_seconds,
             "examples_per_s": result.examples / max(result.train_seconds, 1e-9),
             "wall_time_s": time.time() - t_start, "peak_rss_mb": peak_rss_mb(),
             "test_accesses": guard.accesses, "n_test_users": len(test.user)}
    if evals.valid_rows is not None:
        valid, valid_extra = final_evaluation(model, evals.maker, evals.valid_rows, split,
                                              settings.eval_batch_size, evals.full_ranking_users, evals.seed,
                                              evals.ties, evals.history)
        final.update({"valid_auc": valid.auc, **{f"valid_{k}": v for k, v in valid_extra.items()}})
    if result.best_test_auc is not None and job.select_on == "valid":  # protocol=optimism (diagnostic)
        final.update({"test_auc_at_test_best": result.best_test_auc, "optimism": result.best_test_auc - test.auc})
    return final, test


def outcomes_table(table: Table, outcome: EvalOutcome) -> str:
    """Per-user outcomes keyed by raw ids, as CSV text (pairs users with any other run on the same split)."""
    import pandas as pd

    return pd.DataFrame({
        "reviewerID": table.user_keys[outcome.user], "pos": table.item_keys[outcome.pos],
        "neg": table.item_keys[outcome.neg], "score_pos": outcome.score_pos, "score_neg": outcome.score_neg,
        "correct": (outcome.score_pos > outcome.score_neg).astype(int)}).to_csv(index=False)


def run_summary(job: Job, settings: TrainSettings, n_params: int) -> str:
    """What a run does, in one readable line: model, data, protocol, budget, device (MLflow keeps every setting)."""
    s = settings
    budget = f"up to {s.epochs} epoch{'s' if s.epochs != 1 else ''}"
    budget += f" or {s.max_steps:,} steps" if s.max_steps is not None else ""
    every = "each epoch" if s.eval_every == 0 else f"every {s.eval_every:,} steps"
    every += f" (selects on {job.select_on} {job.select_metric})"
    workers = f", {job.processes} processes" if job.processes > 1 else ""
    threads = f", {job.threads} thread{'s' if job.threads != 1 else ''}"  # always resolved (config.worker_threads)
    return (f"{job.run_name}: {job.model} ({n_params:,} params) on {job.data.dataset}, protocol "
            f"{job.tags['protocol']}: {job.label}; {budget} of {s.optimizer} lr {s.lr:g}, batch "
            f"{s.batch_size}, evaluated {every}; device {s.device} {s.precision}{workers}{threads}")


def train_and_test(job: Job, table: Table, split: Split, checkpoint: Path,
                   log_curve: Callable[[dict[str, float], int], None], t_start: float) -> dict:
    """Inside the MLflow run: build, train, test once, log the final metrics; returns them."""
    model = build_model(job, table)
    gradient_free = type(model).gradient_free
    trainable = check_parameters(model, gradient_free)  # a zero-sized layer: FAILED before training
    settings = replace(job.settings, checkpoint_path=str(checkpoint))
    log.info(run_summary(job, settings, sum(x.numel() for x in model.parameters())))
    evals = eval_data(table, split, settings.max_len, TestSetGuard(eval_rows(table, split, "test"),
                      job.test_access_limit), job.select_metric, job.full_ranking_users, job.seed, job.ties,
                      job.full_ranking_history)  # once per job
    fail_for_testing(job.debug_raise)
    result = train_processes(model, table, split, settings, evals, log_curve, job.processes, job.backend,
                             job.threads, job.flush_denormal, helpers_class())
    final, test = final_metrics(job, split, settings, model, evals, result, t_start)
    try:  # no step, no parameter or no finite figure: FAILED, never FINISHED (a resume would repeat it)
        check_outcome(result.steps, trainable, gradient_free,
                      {k: final[k] for k in ("test_auc", f"best_{job.select_on}_{job.select_metric}")})
    except RuntimeError:
        checkpoint.unlink(missing_ok=True)
        raise
    mlflow.log_metrics(final, step=result.steps)
    if job.log_outcomes:
        mlflow.log_text(outcomes_table(table, test), "outcomes/test_outcomes.csv")
    checkpoint.unlink(missing_ok=True)
    log.info("%s: test AUC %.4f (%s), best step %d, %.0f examples/s", job.run_name, test.auc, job.label,
             result.best_step, final["examples_per_s"])
    return {"selection_score": result.best_score, **final}


def record_data_failure(job: Job, e: BaseException, sweep_dir: str) -> None:
    """A FAILED MLflow run for a job whose data stage raised: tagged with its config hash (data hash
    `unavailable`: the table was never built, so a rerun on fixed data has another hash and is never skipped),
    `stage=data`, the error and its traceback. Logging problems are only warned about: the data error is raised."""
    try:
        store = open_store(job.tracking_uri, job.experiment)
        tags = {**environment_tags(), **job.tags, "config_hash": config_hash(job.resolved, "unavailable", code_hash()),
                "stage": "data", "sweep_dir": sweep_dir, "output_dir": str(_output_dir() or ""),
                "mlflow.parentRunId": parent_run_id(store.client, store.experiment_id, sweep_dir), **job.user_tags}
        with mlflow.start_run(experiment_id=store.experiment_id, run_name=job.run_name):
            mlflow.log_params({k: str(v)[:6000] for k, v in flatten(job.resolved).items()})
            mlflow.set_tags(tags)
            record_failure(e)
    except Exception as logging_error:  # noqa: BLE001  (never hide the data error behind a tracking one)
        log.warning("%s: the data-stage failure could not be logged to MLflow: %s", job.run_name, logging_error)


def record_failure(e: BaseException) -> None:
    """The active MLflow run ends FAILED with the error and its traceback as tags; KILLED, said in the log, when
    SIGINT / SIGTERM ended it, or came first and the error followed (a data-parallel worker that stopped)."""
    signalled, pending = isinstance(e, (KeyboardInterrupt, Terminated)), pending_signal()
    active = mlflow.active_run()
    mlflow.set_tags({"error": f"{type(e).__name__}: {e}"[:5000], "error_traceback": traceback.format_exc()[-5000:]})
    mlflow.end_run(status="KILLED" if signalled or pending is not None else "FAILED")
    if (signalled or pending is not None) and active is not None:
        cause = e if signalled else f"{signal.Signals(pending).name}, then {type(e).__name__}: {e}"
        log.warning("%s KILLED by %s; MLflow run %s closed as KILLED", active.info.run_name, cause, active.info.run_id)


def run(cfg: DictConfig, sweep_dir: str | None = None) -> dict:
    """One job. Returns {"status", "run_id", "selection_score", "test_auc", ...}."""
    t_start = time.time()
    check_config(cfg)
    job = job_settings(cfg)
    tune_malloc()  # glibc allocator settings (train/runtime.py MALLOC_TUNING; MALLOC_* variables set by hand win)
    configure_runtime(job.threads, job.flush_denormal)
    try:
        table, split = load_data(job.data)
    except Exception as e:
        if sweep_dir is not None:  # a sweep's data-stage failure is a FAILED run too: reports and the UI show it
            record_data_failure(job, e, sweep_dir)
        raise
    chash = config_hash(job.resolved, table.content_hash, code_hash())
    store = open_store(job.tracking_uri, job.experiment)
    with config_lease(job.data.cache_dir, chash):  # one live run per config: a second copy waits here
        return run_leased(job, table, split, chash, store, sweep_dir, t_start)


def run_leased(job: Job, table: Table, split: Split, chash: str, store: Store, sweep_dir: str | None,
               t_start: float) -> dict:
    """The job once it holds its config's lease: skip (FINISHED already), resume (an orphan's checkpoint) or
    start a new run."""
    if job.skip_finished and (done := find_runs(store, chash, ("FINISHED",))):
        return skipped(done[0], job, chash)
    checkpoint = under(job.data.cache_dir, job.data.cache_dir / "checkpoints" / f"{chash}.pt", "checkpoint")
    resume_id = resumable_run(store, chash, checkpoint)
    parent_id = parent_run_id(store.client, store.experiment_id, sweep_dir) if sweep_dir else None
    start = {"run_id": resume_id, "experiment_id": None if resume_id else store.experiment_id,
             "run_name": None if resume_id else job.run_name}
    with closing_on_signals(), mlflow.start_run(**start) as active:  # SIGTERM / SIGINT: KILLED (runners/train/interrupts.py)
        try:
            tags = run_tags(job, table, split, chash, sweep_dir, resumed=resume_id is not None, parent_id=parent_id)
            logged = log_run_start(job, store, table, split, tags, resume_id)
            final = train_and_test(job, table, split, checkpoint, curve_logger(logged), t_start)
            return {"status": "FINISHED", "run_id": active.info.run_id, "run_name": job.run_name, **final}
        except BaseException as e:
            record_failure(e)
            raise


def _output_dir() -> Path | None:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_dir = str(Path(hc.sweep.dir).resolve()) if multirun else None
    if multirun:
        under(sweep_dir, hc.runtime.output_dir, "job folder")
    status_file = Path(hc.runtime.output_dir) / "status.json"
    try:
        result = run(cfg, sweep_dir)
        status_file.write_text(json.dumps({k: v for k, v in result.items() if isinstance(v, (str, int, float))}))
        score = result.get("selection_score")
        return float(score) if score is not None and math.isfinite(score) else None
    except Exception as e:
        status_file.write_text(json.dumps({"status": "FAILED", "run_name": run_name(cfg),
                                           "error": f"{type(e).__name__}: {e}"}))
        if not multirun:
            raise
        log.error("%s FAILED: %s\n%s", run_name(cfg), e, traceback.format_exc())
        return None  # not NaN: optuna 2.10 rejects NaN and then crashes the sweeper; None marks the trial FAIL


if __name__ == "__main__":
    try:
        run_rank(main)  # under torchrun, ranks 1..N-1 serve rank 0's data-parallel runs (runners/parallel/torchrun.py)
    except Terminated as e:  # SIGTERM during a run, closed as KILLED: the conventional exit status
        sys.exit(128 + e.signum)
