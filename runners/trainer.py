"""The training loop: batches -> model -> optimiser, periodic evaluation, model selection, checkpoints.

Plain arguments only (TrainSettings); results go to the caller through `log_metrics`, never written here except
the checkpoint file. Each epoch's batch order comes from np.random.default_rng([seed, epoch]), so a checkpoint
only needs (epoch, batch index) to resume the data stream exactly.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch.profiler import record_function
from tqdm.auto import tqdm

from datasets.batch import Batch
from datasets.batches import BatchMaker, Rows, batch_order, eval_rows, train_rows
from datasets.split import Split
from datasets.table import Table
from models.interface import SeqRecModel
from runners.evaluation import EvalOutcome, TestSetGuard, evaluate

if TYPE_CHECKING:
    from runners.data_parallel import GradientSync

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    optimizer: str = "sgd"  # sgd | adam | adagrad
    lr: float = 1.0
    weight_decay: float = 0.0
    lr_decay_step: int | None = None  # global step at which lr becomes lr_after_decay
    lr_after_decay: float = 0.1
    clip_norm: float | None = 5.0
    batch_size: int = 32
    epochs: int = 10
    max_steps: int | None = None
    reshuffle: bool = True  # False: one shuffle (epoch 0's order) for every epoch, as the reference BPR
    bucket_by_length: bool = True
    max_len: int | None = None
    eval_every: int = 1000  # steps; 0 = at the end of each epoch
    eval_batch_size: int = 1024
    select_on: str = "test"  # "test" (paper protocol) or "valid" (loo_val)
    track_test: bool = False  # with select_on="valid": also evaluate test at every evaluation (diagnostic)
    patience: int | None = None  # evaluations without improvement before stopping
    seed: int = 0
    progress: bool = False
    checkpoint_path: str | None = None
    checkpoint_every: int = 0  # steps; 0 = no periodic checkpoints
    debug_nan_at_step: int | None = None  # testing aid: the loss becomes NaN at this step
    sparse_grad: str | bool = "auto"  # sparse embedding gradients: auto = when the update is the same (sparse_grad_ok)
    pair_rows: bool = True  # pointwise models: a batch of B rows = B/2 prefixes, each with its positive and negative
    debug_worker_raise_at_step: int | None = None  # testing aid: data-parallel worker 1 raises at this step


OPTIMIZERS = ("sgd", "adam", "adagrad")


def check_settings(s: TrainSettings, gradient_free: bool = False) -> None:
    """Reject settings that would train nothing or fail later with an unclear error (ValueError naming the key).
    `gradient_free`: the model learns without gradients (POP counts), so lr 0 is fine."""
    problems = []
    if not isinstance(s.batch_size, int) or s.batch_size < 1:
        problems.append(f"model.batch_size must be an integer >= 1, got {s.batch_size!r}")
    if s.epochs is None or s.epochs < 1:
        problems.append(f"the epochs (model.epochs / trainer.epochs) must be >= 1, got {s.epochs!r}")
    if s.max_steps is not None and s.max_steps < 1:
        problems.append(f"trainer.max_steps must be >= 1 or null, got {s.max_steps!r}")
    if not (isinstance(s.lr, (int, float)) and math.isfinite(s.lr) and (s.lr > 0 or gradient_free and s.lr == 0)):
        problems.append(f"model.lr must be a finite number > 0, got {s.lr!r}")
    if s.optimizer not in OPTIMIZERS:
        problems.append(f"model.optimizer must be one of {', '.join(OPTIMIZERS)}, got {s.optimizer!r}")
    if s.clip_norm is not None and not (math.isfinite(s.clip_norm) and s.clip_norm > 0):
        problems.append(f"model.clip_norm must be > 0 or null, got {s.clip_norm!r}")
    if s.eval_every < 0:
        problems.append(f"trainer.eval_every must be >= 0, got {s.eval_every!r}")
    if problems:
        raise ValueError("invalid training settings:\n  " + "\n  ".join(problems))


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, adam or adagrad")


SPARSE_OPTIMIZERS = ("sgd", "adagrad")  # their sparse update equals the dense one (Adam's would not: SparseAdam)


def sparse_grad_ok(optimizer: str, weight_decay: float) -> bool:
    """Whether sparse embedding gradients leave the optimiser's update unchanged: plain SGD and Adagrad without
    weight decay touch a row only through its gradient, so rows a batch does not use get exactly zero update
    either way (with weight decay, or Adam's moments, every row moves every step: keep those dense)."""
    return optimizer in SPARSE_OPTIMIZERS and not weight_decay


def use_sparse_embeddings(model: torch.nn.Module, sparse: bool) -> int:
    """Switch every nn.Embedding of `model` to sparse (or dense) gradients; returns how many were set. Forward values
    are unchanged; backward yields only the rows the batch looked up instead of a dense [n_rows, dim] zero-filled
    gradient per step (the dominant cost of the big user/item tables at batch 32)."""
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding):
            m.sparse = sparse
            n += 1
    return n


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (global 2-norm, coefficient max_norm / (norm + 1e-6) capped at 1), also for
    sparse gradients: these are coalesced first (duplicate rows summed), so the norm is the dense gradient's norm."""
    grads = [p.grad for p in params if p.grad is not None]
    if not any(g.is_sparse for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    values = []
    for p in params:
        if p.grad is not None:
            if p.grad.is_sparse:
                p.grad = p.grad.coalesce()
            values.append(p.grad._values() if p.grad.is_sparse else p.grad)  # _values(): an alias, scaled in place
    total = torch.nn.utils.get_total_norm(values)
    torch._foreach_mul_(values, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def wants_sparse_grad(s: TrainSettings) -> bool:
    """Whether settings `s` train the embedding tables with sparse gradients (sparse_grad: auto | true | false)."""
    return sparse_grad_ok(s.optimizer, s.weight_decay) if s.sparse_grad == "auto" else bool(s.sparse_grad)


def prepare_optimizer(model: SeqRecModel, s: TrainSettings) -> tuple[torch.optim.Optimizer, list]:
    """The optimiser of settings `s` for `model` (sparse embedding gradients where sparse_grad_ok) and the parameter
    list the step clips. Shared by train() and runners/bench.py."""
    sparse = wants_sparse_grad(s)
    use_sparse_embeddings(model, sparse)
    params = list(model.parameters())
    if not sparse:
        return make_optimizer(s.optimizer, params, s.lr, s.weight_decay), params
    # Two groups: an optimiser updates a group with any sparse gradient one tensor at a time; the dense group
    # keeps the multi-tensor (foreach) update.
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")  # Adagrad's
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    groups = [{"params": [p for p in params if id(p) not in tables]},
              {"params": [p for p in params if id(p) in tables]}]
    return make_optimizer(s.optimizer, [g for g in groups if g["params"]], s.lr, s.weight_decay), params


def train_step(model: SeqRecModel, optimizer: torch.optim.Optimizer, params: list, batch: Batch | None,
               clip_norm: float | None, poison: bool = False, label_phases: bool = False,
               sync: "GradientSync | None" = None) -> float:
    """One optimiser step on `batch`: loss, backward, clip, step, after_step; returns the loss. The body of train()'s
    loop, also timed by runners/bench.py. `poison` (testing aid) makes the loss NaN. `label_phases`: mark forward,
    backward and optimiser for torch.profiler (runners/bench.py --profile; off otherwise: ~13 us per label).
    `sync` (data-parallel workers): `batch` is this worker's share of the global batch (None: an empty share) and
    the gradients and the loss are summed over the workers before clipping; the returned loss is the global one."""
    phase = record_function if label_phases else contextlib.nullcontext  # nullcontext(name): a no-op
    with phase("step/forward"):
        loss = model.loss(batch) if batch is not None else None
    if poison and loss is not None:
        loss = loss * float("nan")
    optimizer.zero_grad(set_to_none=True)
    if sync is None:
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"{model.name}: loss is {value}")
    with phase("step/backward"):
        if loss is not None:
            loss.backward()
    if sync is not None:
        with phase("step/allreduce"):
            value = sync.reduce(loss.item() if loss is not None else 0.0)
        if not math.isfinite(value):  # every worker sees the same global loss, so all stop here together
            raise FloatingPointError(f"{model.name}: loss is {value}")
    with phase("step/optimizer"):
        if clip_norm:
            clip_grad_norm(params, clip_norm)
        optimizer.step()
        model.after_step()
    return value


# glibc allocator settings for training processes (runners/run.py applies them at start-up, runners/bench.py sets
# them as environment variables of its children; both mean the same to glibc). Each step allocates and frees
# activation buffers of 0.1-30 MB; with the defaults, blocks above the (adaptive) mmap threshold come from fresh
# mmap calls and freed heap tops are trimmed, so the kernel zero-fills the same pages again every step. A 32 MB
# mmap threshold (glibc's maximum), no trimming below 1 GB and 256 MB of heap growth at a time keep those pages.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30, "MALLOC_TOP_PAD_": 256 << 20}
_MALLOPT_PARAM = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3}  # malloc.h


def tune_malloc(settings: dict[str, int] = MALLOC_TUNING) -> dict[str, int]:
    """Apply MALLOC_TUNING to this process with mallopt(3) (a variable already in the environment wins: glibc read it
    at start-up) and export it, so child processes start with it. Returns what was applied; {} off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    applied = {}
    for name, value in settings.items():
        if name not in os.environ and mallopt(_MALLOPT_PARAM[name], int(value)) == 1:
            os.environ[name] = str(value)
            applied[name] = int(value)
    return applied


def configure_runtime(num_threads: int | None, flush_denormal: bool = True) -> None:
    """Process-wide settings of a training process (runners/run.py and runners/bench.py both call this):
    - torch's intra-op thread count (None: torch's default, one per core);
    - flush denormal floats to zero (CPU FTZ/DAZ), as TensorFlow does in its CPU kernels (so the reference ran that
      way). Values below 1.2e-38 become 0; gradients that vanish through long recurrences otherwise fall into
      x86's slow denormal path (GRU4Rec trains 1.8x faster with it; docs/performance.md)."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
    torch.set_flush_denormal(flush_denormal)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    best_score: float
    best_step: int
    steps: int
    epochs_done: float
    examples: int
    train_seconds: float
    best_eval: EvalOutcome | None  # the selection split's outcomes at the best step
    test_accesses: int
    best_test_auc: float | None = None  # highest test AUC seen during training (paper / track_test)
    test_at_best: float | None = None  # test AUC at the selected step (paper / track_test)
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


def worker_batch(maker: BatchMaker, rows: Rows, idx: np.ndarray, rows_per_index: int,
                  sync: "GradientSync | None") -> Batch | None:
    """The batch of global indices `idx`, or this data-parallel worker's share of it (None when empty), whose
    means divide by the global batch's row count."""
    if sync is None:
        return maker.make(rows.take(idx))
    from runners.data_parallel import shard

    local = shard(idx, sync.world, sync.rank)
    if not len(local):
        return None
    return replace(maker.make(rows.take(local)), mean_rows=len(idx) * rows_per_index)


@contextlib.contextmanager
def all_threads():
    """Every core for torch while the block runs (rank 0 evaluating while the other workers wait)."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(model: SeqRecModel, table: Table, split: Split, s: TrainSettings, test_guard: TestSetGuard | None,
          log_metrics: Callable[[dict[str, float], int], None] = lambda m, step: None,
          sync: "GradientSync | None" = None) -> TrainResult | None:
    """Train `model`, evaluating the selection split every `eval_every` steps; leave the selected weights loaded.

    select_on="test": the paper protocol (test read through `test_guard` at every evaluation, best test AUC kept).
    select_on="valid": selection on validation; test is not read here (unless `track_test`, a diagnostic), so the
    caller reads it once, with the selected weights.
    `sync` (runners/data_parallel.py): this process is one worker of a data-parallel run and trains its share of
    every global batch; rank 0 also evaluates, selects, logs and checkpoints, the other ranks only train and
    return None.
    """
    seed_everything(s.seed)
    if s.select_on not in ("test", "valid"):
        raise ValueError(f"select_on must be 'test' or 'valid', got {s.select_on!r}")
    main = sync is None or sync.rank == 0
    fmt = model.train_format
    paired = s.pair_rows and fmt == "pointwise"
    if paired and s.batch_size % 2:
        raise ValueError(f"trainer.pair_rows=true needs an even batch size (B rows = B/2 prefixes), got "
                         f"{s.batch_size}")
    rows = train_rows(table, split, fmt, paired=paired)
    rows_per_index = 2 if paired else 1  # training rows each index of `rows` stands for
    indices_per_batch = s.batch_size // rows_per_index
    maker = BatchMaker(table, max_len=s.max_len)
    select_rows = eval_rows(table, split, "valid") if s.select_on == "valid" and main else None
    batches_per_epoch = math.ceil(len(rows) / indices_per_batch)
    total_steps = s.epochs * batches_per_epoch if s.max_steps is None else min(s.max_steps,
                                                                               s.epochs * batches_per_epoch)
    if total_steps < 1:
        raise ValueError(f"{model.name}: nothing to train ({len(rows)} training rows, {total_steps} steps); a run "
                         "that trained 0 steps is never reported")
    optimizer, params = prepare_optimizer(model, s)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_score": -1.0, "best_step": -1,
             "bad_evals": 0, "examples": 0, "train_seconds": 0.0, "history": [], "best_test_auc": None,
             "test_at_best": None}
    best_state, best_eval = None, None
    ckpt = Path(s.checkpoint_path) if s.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state, best_state, best_eval = saved["state"], saved["best_state"], saved["best_eval"]
        random.setstate(saved["rng_python"]), np.random.set_state(saved["rng_numpy"])
        torch.set_rng_state(saved["rng_torch"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, state["step"], state["epoch"],
                 state["batch_in_epoch"])

    def set_lr(lr: float) -> None:
        for g in optimizer.param_groups:
            g["lr"] = lr

    if s.lr_decay_step is not None and state["step"] >= s.lr_decay_step:
        set_lr(s.lr_after_decay)

    def run_eval() -> float:
        nonlocal best_state, best_eval
        if sync is not None:  # the other workers wait at the next barrier: rank 0 evaluates on every core
            with all_threads():
                return evaluate_and_select()
        return evaluate_and_select()

    def evaluate_and_select() -> float:
        nonlocal best_state, best_eval
        eval_set = select_rows if select_rows is not None else test_guard.rows()  # paper: selects on test
        outcome = evaluate(model, maker, eval_set, s.eval_batch_size)
        score = outcome.auc
        row = {f"{s.select_on}_auc": score, "lr": optimizer.param_groups[0]["lr"],
               "epoch": state["step"] / batches_per_epoch}
        test_auc = score if s.select_on == "test" else None
        if s.track_test and s.select_on == "valid":
            test_auc = row["test_auc"] = evaluate(model, maker, test_guard.rows(), s.eval_batch_size).auc
        if test_auc is not None:
            state["best_test_auc"] = max(state["best_test_auc"] or -1.0, test_auc)
        if state["train_seconds"] > 0:
            row["examples_per_s"] = state["examples"] / state["train_seconds"]
        if score > state["best_score"]:
            state["best_score"], state["best_step"], state["bad_evals"] = score, state["step"], 0
            state["test_at_best"] = test_auc
            best_state = copy.deepcopy(model.state_dict())
            best_eval = outcome
        else:
            state["bad_evals"] += 1
        row[f"best_{s.select_on}_auc"] = state["best_score"]
        state["history"].append({"step": state["step"], **row})
        log_metrics(row, state["step"])
        return score

    def save_checkpoint() -> None:
        if ckpt is None or not main:
            return
        _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                            "best_state": best_state, "best_eval": best_eval, "rng_python": random.getstate(),
                            "rng_numpy": np.random.get_state(), "rng_torch": torch.get_rng_state()}, ckpt)

    model.train()
    bar = tqdm(total=total_steps, initial=state["step"], disable=not (s.progress and main), desc=model.name, unit="step",
               dynamic_ncols=True, file=sys.stderr)
    loss_sum, loss_n = 0.0, 0
    stopped_early = s.patience is not None and state["bad_evals"] >= s.patience  # resumed after an early stop
    while state["step"] < total_steps and not stopped_early:
        order_epoch = state["epoch"] if s.reshuffle else 0
        batches = batch_order(rows, indices_per_batch, np.random.default_rng([s.seed, order_epoch]),
                              bucket_by_length=s.bucket_by_length, indptr=table.indptr)
        for idx in batches[state["batch_in_epoch"]:]:
            t0 = time.perf_counter()
            poison = s.debug_nan_at_step is not None and state["step"] + 1 >= s.debug_nan_at_step
            try:
                batch = worker_batch(maker, rows, idx, rows_per_index, sync)
                if (sync is not None and sync.rank == 1 and s.debug_worker_raise_at_step is not None
                        and state["step"] + 1 >= s.debug_worker_raise_at_step):
                    raise RuntimeError(f"trainer.debug_worker_raise_at_step={s.debug_worker_raise_at_step}: "
                                       "worker 1 fails for testing")
                loss = train_step(model, optimizer, params, batch, s.clip_norm, poison, sync=sync)
            except FloatingPointError as e:
                raise FloatingPointError(f"{e} at step {state['step'] + 1} (epoch {state['epoch']}); lower the lr "
                                         f"or check the inputs") from None
            state["train_seconds"] += time.perf_counter() - t0
            state["examples"] += len(idx) * rows_per_index
            state["step"] += 1
            state["batch_in_epoch"] += 1
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            bar.update(1)
            if s.lr_decay_step is not None and state["step"] == s.lr_decay_step:
                set_lr(s.lr_after_decay)
            if s.eval_every and state["step"] % s.eval_every == 0:
                if main:
                    log_metrics({"train_loss": loss_sum / loss_n}, state["step"])
                    auc = run_eval()
                    bar.set_postfix({f"{s.select_on}_auc": f"{auc:.4f}", "best": f"{state['best_score']:.4f}"})
                    stopped_early = s.patience is not None and state["bad_evals"] >= s.patience
                if sync is not None:
                    stopped_early = sync.agree(stopped_early)
                loss_sum, loss_n = 0.0, 0
            if s.checkpoint_every and state["step"] % s.checkpoint_every == 0:
                save_checkpoint()
            if state["step"] >= total_steps or stopped_early:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            if not s.eval_every:
                if main:
                    if loss_n:
                        log_metrics({"train_loss": loss_sum / loss_n}, state["step"])
                    run_eval()
                    stopped_early = s.patience is not None and state["bad_evals"] >= s.patience
                if sync is not None:
                    stopped_early = sync.agree(stopped_early)
                loss_sum, loss_n = 0.0, 0
    bar.close()
    if not main:
        return None
    if not state["history"] or state["history"][-1]["step"] != state["step"]:
        if loss_n:
            log_metrics({"train_loss": loss_sum / loss_n}, state["step"])
        run_eval()
    save_checkpoint()

    model.load_state_dict(best_state)
    return TrainResult(best_score=state["best_score"], best_step=state["best_step"], steps=state["step"],
                       epochs_done=state["step"] / batches_per_epoch, examples=state["examples"],
                       train_seconds=state["train_seconds"], best_eval=best_eval, test_accesses=test_guard.accesses,
                       best_test_auc=state["best_test_auc"], test_at_best=state["test_at_best"],
                       stopped_early=stopped_early, history=state["history"])
