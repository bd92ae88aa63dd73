"""The main command: python runners/run.py [-m] model=<name>[,<name>...] dataset=<name> [protocol=...] [seed=...]

`run(cfg) -> dict` does one job: dataset -> split -> model -> train -> MLflow. `main` is the thin Hydra wrapper:
in a multirun a failed job is recorded (MLflow run FAILED + status.json) and the sweep goes on; the sweep's
summary and exit code come from runners/callbacks.py.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):  # our `datasets` package, never Hugging Face's
    sys.path.insert(0, str(REPO_ROOT))
# Job processes of launchers (submitit local / Slurm) unpickle the task in a fresh interpreter: same path there.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), *(q for q in os.environ.get("PYTHONPATH", "").split(os.pathsep) if q and q != str(REPO_ROOT))])

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from datasets.load import load_dataset  # noqa: E402
from datasets.batches import BatchMaker, Rows, eval_rows  # noqa: E402
from datasets.split import Split, load_split, split_fingerprint  # noqa: E402
from models.registry import get_model  # noqa: E402
from runners.tracking import (code_hash, config_hash, ensure_store, environment_tags, flatten,  # noqa: E402
                              get_or_create_experiment, tracking_uri)
from runners.evaluation import TestSetGuard, evaluate, extra_metrics, full_ranks  # noqa: E402
from runners.trainer import (TrainSettings, check_settings, configure_runtime, peak_rss_mb,  # noqa: E402
                             seed_everything, train, tune_malloc)

log = logging.getLogger("seqrec")


def resolve_paths(cfg: DictConfig) -> tuple[Path, Path]:
    data_root = cfg.paths.data_root or os.environ.get("SEQREC_DATA") or REPO_ROOT.parent / "shared" / "data"
    cache_dir = cfg.paths.cache_dir or os.environ.get("SEQREC_CACHE") or REPO_ROOT / ".cache"
    return Path(data_root).resolve(), Path(cache_dir).resolve()


def model_params(cfg: DictConfig) -> dict:
    params = OmegaConf.to_container(cfg.model.params, resolve=True) or {}
    if cfg.recipe == "reference":
        reference = cfg.model.get("reference_params")
        if reference:
            params.update(OmegaConf.to_container(reference, resolve=True))
    return params


def show_progress(setting: str | bool) -> bool:
    if setting == "auto":
        return sys.stderr.isatty() and not os.environ.get("CI")
    return bool(setting)


def train_settings(cfg: DictConfig, checkpoint_path: Path | None) -> TrainSettings:
    m, t, p = cfg.model, cfg.trainer, cfg.protocol
    return TrainSettings(
        optimizer=m.optimizer, lr=m.lr, weight_decay=m.weight_decay, lr_decay_step=m.lr_decay_step,
        lr_after_decay=m.lr_after_decay, clip_norm=m.clip_norm, batch_size=m.batch_size,
        epochs=t.epochs if t.epochs is not None else (m.get("reference_epochs") or m.epochs
                                                       if cfg.recipe == "reference" else m.epochs),
        max_steps=t.max_steps, reshuffle=m.reshuffle,
        bucket_by_length=t.bucket_by_length, max_len=m.max_len, eval_every=t.eval_every,
        eval_batch_size=t.eval_batch_size, select_on=p.select_on, track_test=p.track_test, patience=t.patience,
        seed=cfg.seed,
        progress=show_progress(t.progress), checkpoint_path=str(checkpoint_path) if checkpoint_path else None,
        checkpoint_every=t.checkpoint_every, debug_nan_at_step=t.debug_nan_at_step, pair_rows=t.pair_rows,
        debug_worker_raise_at_step=t.debug_worker_raise_at_step)


def worker_threads(num_threads: int | None, processes: int) -> int | None:
    """torch threads of each training process: as set, else the cores shared out between the processes."""
    if num_threads:
        return int(num_threads)
    return None if processes == 1 else max(1, (os.cpu_count() or 1) // processes)


def train_processes(model, table, split: Split, settings: TrainSettings, guard: TestSetGuard, log_curve,
                    processes: int, backend: str, threads: int | None, flush_denormal: bool):
    """train() in this process, or as rank 0 of `processes` data-parallel workers (runners/data_parallel.py)."""
    if processes < 1:
        raise ValueError(f"trainer.processes must be >= 1, got {processes}")
    if processes == 1:
        return train(model, table, split, settings, guard, log_metrics=log_curve)
    if not model.data_parallel:
        raise ValueError(f"model {model.name!r} cannot train with trainer.processes > 1: {model.data_parallel_note}")
    from runners.data_parallel import Helpers

    with Helpers(model, table, split, settings, processes, backend, threads or 1, flush_denormal) as sync:
        return train(model, table, split, settings, guard, log_metrics=log_curve, sync=sync)


def check_config(cfg: DictConfig) -> None:
    """Before anything runs: trainer keys are the declared ones (a `+trainer.<typo>=` would be ignored) and the
    training settings are valid (runners/trainer.check_settings)."""
    declared = set(OmegaConf.load(REPO_ROOT / "conf" / "trainer" / "default.yaml"))
    unknown = sorted(set(cfg.trainer) - declared)
    if unknown:
        raise ValueError(f"unknown trainer setting(s) {unknown}; conf/trainer/default.yaml declares "
                         f"{', '.join(sorted(declared))}")
    check_settings(train_settings(cfg, None), get_model(cfg.model.name).gradient_free)


def outcomes_table(table, outcome) -> str:
    """Per-user outcomes keyed by raw ids, as CSV text (pairs users with any other run on the same split)."""
    import pandas as pd

    return pd.DataFrame({
        "reviewerID": table.user_keys[outcome.user], "pos": table.item_keys[outcome.pos],
        "neg": table.item_keys[outcome.neg], "score_pos": outcome.score_pos, "score_neg": outcome.score_neg,
        "correct": (outcome.score_pos > outcome.score_neg).astype(int)}).to_csv(index=False)


def final_evaluation(model, maker: BatchMaker, rows: Rows, split: Split, batch_size: int, full_ranking_users: int,
                     seed: int):
    """Outcomes on `rows` (positive, frozen negative, the split's sampled negatives) and the extra metrics; full
    ranking on a seeded subset of `full_ranking_users` users (-1: all, 0: none)."""
    outcome = evaluate(model, maker, rows, batch_size, extra_negs=split.eval_negs)
    ranks = None
    if full_ranking_users:
        n = len(rows) if full_ranking_users < 0 else min(full_ranking_users, len(rows))
        subset = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
        ranks = full_ranks(model, maker, rows.take(subset), batch_size)
    return outcome, extra_metrics(outcome, ranks)


def find_runs(client, experiment_id: str, chash: str, statuses: tuple[str, ...]) -> list:
    runs = client.search_runs([experiment_id], filter_string=f"tags.config_hash = '{chash}'",
                              order_by=["attributes.start_time DESC"])
    return [r for r in runs if r.info.status in statuses]


def run(cfg: DictConfig, sweep_dir: str | None = None) -> dict:
    """One job. Returns {"status", "run_id", "selection_score", "test_auc", ...}."""
    import mlflow

    t_start = time.time()
    check_config(cfg)
    tune_malloc()  # glibc allocator settings (runners/trainer.py MALLOC_TUNING; MALLOC_* variables set by hand win)
    threads = worker_threads(cfg.trainer.num_threads, int(cfg.trainer.processes))
    configure_runtime(threads, cfg.trainer.flush_denormal)
    data_root, cache_dir = resolve_paths(cfg)
    table = load_dataset(cfg.dataset.name, cfg.dataset.kind, data_root, cache_dir,
                         OmegaConf.to_container(cfg.dataset.options, resolve=True))
    p = cfg.protocol
    split = load_split(table, cache_dir, p.split, p.split_seed, p.eval_negatives, p.eval_negatives_kind)
    model_cls = get_model(cfg.model.name)
    params = model_params(cfg)
    with open_dict(cfg):  # log and hash what is built: experiment=reference merges reference_params
        cfg.model.params = params
    resolved = OmegaConf.to_container(cfg, resolve=True)
    chash = config_hash(resolved, table.content_hash, code_hash())

    uri = tracking_uri(cfg.mlflow.tracking_uri)
    ensure_store(uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp_id = get_or_create_experiment(client, cfg.mlflow.experiment or f"{cfg.dataset.name}/{p.name}", uri)
    run_name = f"{cfg.model.name}/{cfg.dataset.name}/seed{cfg.seed}"
    if cfg.skip_finished:
        done = find_runs(client, exp_id, chash, ("FINISHED",))
        if done:
            r = done[0]
            log.info("skip %s: config %s already FINISHED as run %s (test_auc=%s)", run_name, chash,
                     r.info.run_id, r.data.metrics.get("test_auc"))
            return {"status": "SKIPPED", "run_id": r.info.run_id, "run_name": run_name,
                    "selection_score": r.data.metrics.get(f"best_{p.select_on}_auc", math.nan),
                    "test_auc": r.data.metrics.get("test_auc", math.nan)}

    checkpoint = cache_dir / "checkpoints" / f"{chash}.pt"
    resumable = find_runs(client, exp_id, chash, ("RUNNING", "FAILED", "KILLED")) if checkpoint.exists() else []
    resume_id = resumable[0].info.run_id if resumable else None
    if not resume_id:
        checkpoint.unlink(missing_ok=True)  # a checkpoint without its MLflow run cannot be continued faithfully

    with mlflow.start_run(run_id=resume_id, experiment_id=None if resume_id else exp_id,
                          run_name=None if resume_id else run_name) as active:
        run_id = active.info.run_id
        try:
            if not resume_id:
                mlflow.log_params({k: str(v)[:6000] for k, v in flatten(resolved).items()})
            tags = {**environment_tags(), "model": cfg.model.name, "dataset": cfg.dataset.name, "protocol": p.name,
                    "protocol_label": p.label, "seed": str(cfg.seed), "recipe": cfg.recipe, "config_hash": chash,
                    "data_hash": table.content_hash, "split_hash": split_fingerprint(split),
                    "paper_column": str(cfg.dataset.paper_column), "output_dir": str(_output_dir() or ""),
                    **{str(k): str(v) for k, v in (cfg.tags or {}).items()}}
            if sweep_dir:
                tags["sweep_dir"] = sweep_dir
            if resume_id:
                tags["resumed"] = "true"
            mlflow.set_tags(tags)
            mlflow.log_dict(resolved, "config.yaml")
            logged: set[tuple[str, int]] = set()  # (curve, step) points the killed process logged before
            if resume_id:
                prev = client.get_run(resume_id)
                logged = {(k, m.step) for k in prev.data.metrics if k.startswith("curve/")
                          for m in client.get_metric_history(resume_id, k)}
                for k in ("error", "error_traceback"):  # a FAILED run being continued: its old error is stale
                    if k in prev.data.tags:
                        client.delete_tag(resume_id, k)
            else:
                mlflow.log_metrics({"n_users": table.n_users, "n_items": table.n_items,
                                    "n_categories": table.n_categories, "n_interactions": table.n_interactions})

            def log_curve(m: dict[str, float], step: int) -> None:  # after a resume, each point once
                new = {f"curve/{k}": v for k, v in m.items() if (f"curve/{k}", step) not in logged}
                if new:
                    mlflow.log_metrics(new, step=step)

            seed_everything(cfg.seed)  # before construction: the initial weights depend on it
            model = model_cls(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                              item_category=table.item_category, **params)
            settings = train_settings(cfg, checkpoint)
            log.info("%s: %s on %s (%s), %d params, %s", run_name, cfg.model.name, cfg.dataset.name, p.label,
                     sum(x.numel() for x in model.parameters()), settings)
            guard = TestSetGuard(eval_rows(table, split, "test"), p.test_access_limit)
            debug_raise = cfg.trainer.debug_raise  # testing aid: trainer.debug_raise=true|MemoryError
            if debug_raise:
                raise (MemoryError if str(debug_raise) == "MemoryError" else RuntimeError)(
                    f"trainer.debug_raise={debug_raise}: failure forced for testing")
            result = train_processes(model, table, split, settings, guard, log_curve, int(cfg.trainer.processes),
                                     cfg.trainer.dist_backend, threads, cfg.trainer.flush_denormal)
            # the selected weights are loaded; the one final read of the test set computes every metric
            maker = BatchMaker(table, max_len=settings.max_len)
            test, test_extra = final_evaluation(model, maker, guard.rows(), split, settings.eval_batch_size,
                                                p.full_ranking_users, cfg.seed)
            final = {"test_auc": test.auc, **{f"test_{k}": v for k, v in test_extra.items()},
                     f"best_{p.select_on}_auc": result.best_score, "best_step": result.best_step,
                     "steps": result.steps, "epochs_done": result.epochs_done,
                     "train_seconds": result.train_seconds,
                     "examples_per_s": result.examples / max(result.train_seconds, 1e-9),
                     "wall_time_s": time.time() - t_start, "peak_rss_mb": peak_rss_mb(),
                     "test_accesses": guard.accesses, "n_test_users": len(test.user)}
            if split.valid_pos is not None:
                valid, valid_extra = final_evaluation(model, maker, eval_rows(table, split, "valid"), split,
                                                      settings.eval_batch_size, p.full_ranking_users, cfg.seed)
                final.update({"valid_auc": valid.auc, **{f"valid_{k}": v for k, v in valid_extra.items()}})
            if result.best_test_auc is not None and p.select_on == "valid":  # protocol=optimism (diagnostic)
                final.update({"test_auc_at_test_best": result.best_test_auc,
                              "optimism": result.best_test_auc - test.auc})
            mlflow.log_metrics(final, step=result.steps)
            if cfg.mlflow.log_outcomes:
                mlflow.log_text(outcomes_table(table, test), "outcomes/test_outcomes.csv")
            checkpoint.unlink(missing_ok=True)
            log.info("%s: test AUC %.4f (%s), best step %d, %.0f examples/s", run_name, test.auc, p.label,
                     result.best_step, final["examples_per_s"])
            return {"status": "FINISHED", "run_id": run_id, "run_name": run_name,
                    "selection_score": result.best_score, **final}
        except BaseException as e:
            mlflow.set_tags({"error": f"{type(e).__name__}: {e}"[:5000],
                             "error_traceback": traceback.format_exc()[-5000:]})
            mlflow.end_run(status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
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
    status_file = Path(hc.runtime.output_dir) / "status.json"
    run_name = f"{cfg.model.name}/{cfg.dataset.name}/seed{cfg.seed}"
    try:
        result = run(cfg, sweep_dir)
        status_file.write_text(json.dumps({k: v for k, v in result.items() if isinstance(v, (str, int, float))}))
        score = result.get("selection_score")
        return float(score) if score is not None and math.isfinite(score) else None
    except Exception as e:
        status_file.write_text(json.dumps({"status": "FAILED", "run_name": run_name,
                                           "error": f"{type(e).__name__}: {e}"}))
        if not multirun:
            raise
        log.error("%s FAILED: %s\n%s", run_name, e, traceback.format_exc())
        return None  # not NaN: optuna 2.10 rejects NaN and then crashes the sweeper; None marks the trial FAIL


if __name__ == "__main__":
    main()
