"""The config tree -> plain settings: the one module besides the Hydra entry (runners/run.py) that reads `cfg`.

`check_config` rejects a bad config before anything runs; `job_settings` turns a config into a Job, the plain
values runners/run.py's steps take; `train_settings` and `model_params` are also what runners/bench.py composes
its models with, so the benchmark trains at exactly the recipe a run would.
"""
from __future__ import annotations

import functools
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from datasets.raw import _LOADERS as LOADERS  # noqa: PLC2701  (the loader kinds; their arguments are the options)
from datasets.table import TABLE_SETTINGS
from models.external import model_class, source_file
from runners.checks import (CHOICES, COUNTS, DATA_ARGS, check_counts, check_known_keys, check_model_sizes,
                            check_selection, check_train_window, declared_keys)
from runners.step.device import check_precision, resolve_device
from runners.paths import check_path_names
from runners.parallel.world import check_processes
from runners.step.settings import TrainSettings, check_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DataSettings:
    """Which dataset and split a run loads, and from where."""
    dataset: str
    kind: str
    data_root: Path
    cache_dir: Path
    options: dict
    split: str
    split_seed: int
    eval_negatives: int
    eval_negatives_kind: str
    short_users: str  # users too short for the protocol: train (training data only) | drop
    eval_negatives_pool: str  # sequence | history (datasets/negatives.py)
    eval_negatives_redraw: bool  # frozen per split seed | redrawn at every evaluation
    eval_negatives_file: Path | None  # a negatives file, resolved against data_root
    temporal_cut: tuple[float, float]  # split temporal's quantiles (datasets/temporal.py)

    def split_options(self) -> dict:
        """datasets/split.load_split's keyword arguments."""
        return {"protocol": self.split, "seed": self.split_seed, "eval_negatives": self.eval_negatives,
                "eval_negatives_kind": self.eval_negatives_kind, "short_users": self.short_users,
                "eval_negatives_pool": self.eval_negatives_pool, "eval_negatives_redraw": self.eval_negatives_redraw,
                "eval_negatives_file": self.eval_negatives_file, "temporal_cut": self.temporal_cut}


@dataclass(frozen=True)
class Job:
    """One run in plain values."""
    run_name: str  # <model>/<dataset>/seed<k>
    model: str
    model_target: str | None  # model=custom: package.module:Class or a seqrec.models entry point (None: registered)
    params: dict  # the model's constructor arguments as built (recipe=reference merges reference_params)
    settings: TrainSettings  # without the checkpoint path (it depends on the config hash)
    data: DataSettings
    seed: int
    label: str  # the protocol's, e.g. "test-set selection (as in the paper)"
    select_on: str  # "test" (paper) or "valid"
    select_metric: str  # what selects and stops on the select_on split (runners/train/selection.SELECT_METRICS)
    test_access_limit: int | None
    full_ranking_users: int  # users ranked against the catalogue (-1 all, 0 none), as resolved by ranked_users
    ties: str  # tie policy of sampled and full ranks: pessimistic | random | optimistic
    full_ranking_history: str  # the user's earlier items in full ranking: exclude | zero (scored 0, S3Rec's)
    processes: int  # data-parallel workers
    backend: str  # how they sum gradients
    threads: int  # torch threads per training process (trainer.num_threads as resolved: recorded, hashed)
    flush_denormal: bool
    tracking_uri: str | None  # as configured (None: runners/tracking/tracking.tracking_uri's default)
    experiment: str
    log_outcomes: bool
    skip_finished: bool
    tags: dict[str, str]  # MLflow tags the config says (model, dataset, protocol, ...)
    user_tags: dict[str, str]  # the config's `tags` (+tags.<k>=<v>), set last so they win
    resolved: dict  # the resolved config as built: logged, and hashed into the run's identity
    debug_raise: str | bool | None  # testing aid: fail the job before training


def ranked_users(requested: int, target_aware: int, one_user_vector: bool) -> int:
    """Users a full ranking covers: protocol.full_ranking_users, except that "all" (-1) becomes
    protocol.full_ranking_target_aware_users for a model that runs a forward pass per item (its one_user_vector is
    False: ranking every user of a large set would take hours); the count ranked is logged either way."""
    return target_aware if requested == -1 and not one_user_vector else requested


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.model.name}/{cfg.dataset.name}/seed{cfg.seed}"


def resolve_paths(cfg: DictConfig) -> tuple[Path, Path]:
    """(data root, cache dir): as configured, else $SEQREC_DATA / $SEQREC_CACHE, else beside the repo."""
    data_root = cfg.paths.data_root or os.environ.get("SEQREC_DATA") or REPO_ROOT.parent / "shared" / "data"
    cache_dir = cfg.paths.cache_dir or os.environ.get("SEQREC_CACHE") or REPO_ROOT / ".cache"
    return Path(data_root).resolve(), Path(cache_dir).resolve()


def model_of(cfg: DictConfig) -> type:
    """The model's class: the registered model.name, or model.target's class checked against the interface."""
    return model_class(str(cfg.model.name), cfg.model.get("target"), list(model_params(cfg)))


def model_params(cfg: DictConfig) -> dict:
    """The model's constructor arguments: model.params, with reference_params on top for recipe=reference."""
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
        bucket_by_length=t.bucket_by_length, bucket_chunk=t.bucket_chunk, max_len=m.max_len,
        eval_every=t.eval_every, eval_batch_size=t.eval_batch_size, select_on=p.select_on, track_test=p.track_test, patience=t.patience,
        seed=cfg.seed,
        progress=show_progress(t.progress), checkpoint_path=str(checkpoint_path) if checkpoint_path else None,
        checkpoint_every=t.checkpoint_every, debug_nan_at_step=t.debug_nan_at_step, pair_rows=t.pair_rows,
        debug_worker_raise_at_step=t.debug_worker_raise_at_step, initial_accumulator=initial_accumulator(cfg),
        device=str(t.device), precision=str(t.precision), device_batches=t.device_batches,
        static_widths=t.static_widths, cuda_graphs=t.cuda_graphs,
        replicate_width=t.replicate_width)


def initial_accumulator(cfg: DictConfig) -> float:
    """Adagrad's starting accumulator: the model yaml's `reference_initial_accumulator` under recipe=reference
    (AttRec's authors: 0.05), else `initial_accumulator`; a model that declares neither uses torch's 0."""
    m = cfg.model
    if cfg.recipe == "reference" and m.get("reference_initial_accumulator") is not None:
        return float(m.reference_initial_accumulator)
    return float(m.get("initial_accumulator") or 0.0)


def worker_threads(num_threads: int | None, processes: int) -> int:
    """torch threads of each training process: as set, else the cores this process may run on shared out between
    the processes. Never read from the load: the count changes results (float summation order), so it is part of
    the run's recorded config and of its hash."""
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"trainer.num_threads={num_threads!r}: expected null (the cores shared out between the "
                             "processes) or a positive integer")
        return num_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // processes)


def check_config(cfg: DictConfig) -> None:
    """Before anything runs (runners/checks.py): every key is one its config group declares (a `+group.<typo>=`
    would be ignored), the training settings are valid (runners/step/settings.check_settings), every count counts
    something, every model size is >= 1 and names that become paths are safe slugs."""
    check_path_names(cfg)
    check_known_keys(*config_keys(cfg))
    model_cls = model_of(cfg)
    check_settings(train_settings(cfg, None), model_cls.gradient_free)
    missing = object()
    values = {key: value for key in (*COUNTS, *CHOICES) if (value := OmegaConf.select(cfg, key, default=missing))
              is not missing}
    check_counts(values)
    p = cfg.protocol
    check_selection(str(p.select_metric), p.eval_negatives, p.full_ranking_users)
    params = model_params(cfg)
    check_model_sizes(params)
    check_train_window(params, cfg.model.get("max_len"))
    device = resolve_device(cfg.trainer.device)  # cuda asked for without a GPU: what torch sees, before anything
    check_precision(str(cfg.trainer.precision), device)
    check_processes(int(cfg.trainer.processes))  # under torchrun: the processes it started
    if device.type != "cpu" and int(cfg.trainer.processes) > 1:
        raise ValueError(f"trainer.processes={cfg.trainer.processes} is the CPU's data-parallel path; on "
                         f"{device} train one process (trainer.processes=1)")


def config_keys(cfg: DictConfig) -> tuple[dict[str, list[str]], dict[str, tuple[set[str], str]]]:
    """(where -> the keys `cfg` has there, where -> (the keys declared there, by which files or code)) for
    runners/checks.check_known_keys: top level, paths, mlflow, each config group, the model's constructor
    arguments and the dataset loader's options."""
    top = top_config()
    groups = ("model", "dataset", "protocol", "trainer")
    keys = {"": list(cfg), **{g: list(cfg[g]) for g in ("paths", "mlflow", *groups) if g in cfg}}
    valid = {"": (set(top) - {"defaults", "hydra"} | set(groups), "conf/config.yaml"),
             **{g: (set(top[g]), "conf/config.yaml") for g in ("paths", "mlflow")},
             **{g: (declared_keys(g), f"conf/{g}/*.yaml (and conf/experiment/*.yaml)") for g in groups}}
    if "model" in cfg and "name" in cfg.model:
        cls = model_of(cfg)
        signature = inspect.signature(cls).parameters
        arguments = set(signature) - DATA_ARGS
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.values())  # an outside class's **params
        for part in ("params", "reference_params"):
            if cfg.model.get(part) and not takes_any:
                keys[f"model.{part}"] = list(cfg.model[part])
                valid[f"model.{part}"] = (arguments, f"{cls.__module__.replace('.', '/')}.py ({cls.__name__})")
    if "dataset" in cfg and cfg.dataset.get("options"):
        keys["dataset.options"] = list(cfg.dataset.options)
        valid["dataset.options"] = dataset_options(str(cfg.dataset.kind))
    return keys, valid


@functools.lru_cache(maxsize=None)
def top_config() -> DictConfig:
    return OmegaConf.load(REPO_ROOT / "conf" / "config.yaml")


def dataset_options(kind: str) -> tuple[set[str], str]:
    """The options a dataset of loader `kind` takes (its loader's arguments, the data policy's, `behaviours`)."""
    loader = LOADERS.get(kind)
    if loader is None:
        raise ValueError(f"dataset.kind must be one of {', '.join(sorted(LOADERS))}, got {kind!r}")
    options = set(inspect.signature(loader).parameters) - {"data_root", "cache_dir"}
    return options | set(TABLE_SETTINGS) | {"behaviours"}, f"the {kind!r} loader ({loader.__module__})"


def data_settings(cfg: DictConfig) -> DataSettings:
    data_root, cache_dir = resolve_paths(cfg)
    d, p = cfg.dataset, cfg.protocol
    return DataSettings(dataset=d.name, kind=d.kind, data_root=data_root, cache_dir=cache_dir,
                        options=OmegaConf.to_container(d.options, resolve=True), split=p.split,
                        split_seed=p.split_seed, eval_negatives=p.eval_negatives,
                        eval_negatives_kind=p.eval_negatives_kind, short_users=p.short_users,
                        eval_negatives_pool=p.eval_negatives_pool, eval_negatives_redraw=p.eval_negatives_redraw,
                        eval_negatives_file=data_root / p.eval_negatives_file if p.eval_negatives_file else None,
                        temporal_cut=tuple(p.temporal_cut))


def job_settings(cfg: DictConfig) -> Job:
    """The Job of a checked config (check_config first)."""
    params = model_params(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["model"]["params"] = params  # log and hash what is built: experiment=reference merges reference_params
    p, t = cfg.protocol, cfg.trainer
    threads = worker_threads(t.num_threads, int(t.processes))
    resolved["trainer"]["num_threads"] = threads  # the count used, not null: results depend on it (logged, hashed)
    tags = {"model": cfg.model.name, "dataset": cfg.dataset.name, "protocol": p.name, "protocol_label": p.label,
            "seed": str(cfg.seed), "recipe": cfg.recipe, "paper_column": str(cfg.dataset.paper_column)}
    target = cfg.model.get("target")
    if target is not None:  # an outside class: its source file's hash is part of the run's identity
        path, sha = source_file(model_of(cfg))
        resolved["model"]["source_sha256"] = sha
        tags.update({"model_target": str(target), "model_source": path, "model_source_sha256": sha})
    return Job(run_name=run_name(cfg), model=cfg.model.name, model_target=target, params=params,
               settings=train_settings(cfg, None),
               data=data_settings(cfg), seed=cfg.seed, label=p.label, select_on=p.select_on,
               select_metric=p.select_metric,
               test_access_limit=p.test_access_limit,
               full_ranking_users=ranked_users(p.full_ranking_users, p.full_ranking_target_aware_users,
                                               model_of(cfg).one_user_vector),
               ties=p.ties, full_ranking_history=p.full_ranking_history, processes=int(t.processes), backend=t.dist_backend,
               threads=threads, flush_denormal=t.flush_denormal,
               tracking_uri=cfg.mlflow.tracking_uri,
               experiment=cfg.mlflow.experiment or f"{cfg.dataset.name}/{p.name}",
               log_outcomes=cfg.mlflow.log_outcomes, skip_finished=cfg.skip_finished, tags=tags,
               user_tags={str(k): str(v) for k, v in (cfg.tags or {}).items()}, resolved=resolved,
               debug_raise=t.debug_raise)
