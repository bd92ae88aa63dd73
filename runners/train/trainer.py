"""The training loop: batches -> model -> optimiser, periodic evaluation, model selection, checkpoints.

Plain arguments only (TrainSettings, runners/step/settings.py); results go to the caller through `log_metrics`,
never written here except the checkpoint file (runners/train/checkpoint.py). Each epoch's batch order comes from
np.random.default_rng([seed, epoch]), so a checkpoint only needs (epoch, batch index) to resume the data stream
exactly. The optimiser and the step itself are runners/step/optim.py's; process-wide settings and seeding are
runners/train/runtime.py's.
"""
from __future__ import annotations

import copy
import logging
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from torch import Tensor
try:
    from tqdm.auto import tqdm
except ImportError:  # a bare GPU machine (runners/gpu_check.py): no progress bar
    from runners.train.runtime import NoBar as tqdm

from datasets.batch import Batch
from datasets.batching import BatchMaker, Rows, batch_order, train_rows
from datasets.split import Split
from datasets.table import Table
from models.interface import SeqRecModel
from runners.train.checkpoint import load_checkpoint, save_checkpoint
from runners.train.interrupts import deferred, stop_if_interrupted
from runners.step.device import resolve_device, synchronize, use_device
from runners.step.device_step import DeviceSteps, batch_maker
from runners.train.evaluation import EvalOutcome, TestSetGuard, evaluate
from runners.step.gradient_sync import GradientSync, replicate_limit, shard
from runners.step.optim import prepare_optimizer, set_lr, train_step
from runners.step.settings import TrainSettings
from runners.train.runtime import all_threads, seed_everything
from runners.train.selection import EvalData, eval_data, selection_score

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where training stands. A checkpoint saves it (as a dict of these fields) and a resume restores it."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    best_score: float = -1.0  # the selection split's best value of the selection metric so far
    best_step: int = -1
    bad_evals: int = 0  # evaluations since the last improvement (patience)
    examples: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # one row per evaluation, as logged
    best_test_auc: float | None = None  # highest test AUC seen (paper / track_test)
    test_at_best: float | None = None  # test AUC at best_step (paper / track_test)
    best_weights: dict | None = None  # the model's state_dict at best_step
    best_eval: EvalOutcome | None = None  # the selection split's outcomes at best_step


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


def training_rows(model: SeqRecModel, table: Table, split: Split, pair_rows: bool) -> tuple[Rows, int]:
    """The rows a model of this training format trains on, and how many training rows each index of them stands
    for: with pair_rows, a pointwise model trains on prefixes, each with its positive and its negative (2)."""
    paired = pair_rows and model.train_format == "pointwise"
    return train_rows(table, split, model.train_format, paired=paired), 2 if paired else 1


def worker_batch(maker: BatchMaker, rows: Rows, idx: np.ndarray, rows_per_index: int, sync: GradientSync | None,
                 replicate_width: int = 0) -> tuple[Batch | None, GradientSync | None]:
    """(batch, sync for its step): the batch of global indices `idx` when training alone, or when it is at most
    `replicate_width` wide (every data-parallel worker computes it whole: no sum); else this worker's share of it
    (None when empty), whose means divide by the global batch's row count, with `sync`."""
    if sync is None:
        return maker.make(rows.take(idx)), None
    if replicate_width:
        whole = maker.make(rows.take(idx))
        if whole.hist.shape[1] <= replicate_width:
            return whole, None
    local = shard(idx, sync.world, sync.rank)
    if not len(local):
        return None, sync
    return replace(maker.make(rows.take(local)), mean_rows=len(idx) * rows_per_index), sync


class StepRunner:
    """One worker's optimisation steps on global batches of indices into its training rows: the batch (or this
    worker's share of it, with the gradient sum handed to the step as its `reduce` hook), then optim.train_step,
    the one step (the device path calls it too, or replays its CUDA graph). train() steps through it, and so do
    runners/bench.py's timed passes and the data-parallel helpers' fixed programs, so all three run the same code
    path."""

    def __init__(self, model: SeqRecModel, rows: Rows, rows_per_index: int, maker: BatchMaker, s: TrainSettings):
        self.model, self.rows, self.rows_per_index, self.maker = model, rows, rows_per_index, maker
        self.clip_norm = s.clip_norm
        self.replicate_setting, self.replicate_width = s.replicate_width, None  # resolved at the first shared step
        self.device = device = use_device(resolve_device(s.device))
        self.cuda = device.type == "cuda"
        model.to(device)  # a no-op on the CPU; on a GPU sparse_grad=auto is dense (sparse cannot be captured)
        sparse = False if device.type != "cpu" and s.sparse_grad == "auto" else s.sparse_grad
        self.optimizer, self.params = prepare_optimizer(model, s.optimizer, s.lr, s.weight_decay, sparse,
                                                        s.initial_accumulator)
        self.device_steps = (DeviceSteps(model, self.optimizer, self.params, rows, maker, s)
                             if hasattr(maker, "make_indexed") else None)

    @classmethod
    def for_training(cls, model: SeqRecModel, table: Table, split: Split, s: TrainSettings) -> StepRunner:
        """As train() steps: the model's training rows and the batch maker of its device (runners/step/device_step)."""
        rows, rows_per_index = training_rows(model, table, split, s.pair_rows)
        return cls(model, rows, rows_per_index, batch_maker(table, s), s)

    def step(self, idx: np.ndarray, sync: GradientSync | None = None, poison: bool = False) -> float | Tensor:
        """One step; the loss as a float, or on the device path a tensor left on the device (read it later)."""
        if self.device_steps is not None:
            if sync is not None:
                raise ValueError("trainer.device_batches cannot run with trainer.processes > 1")
            return self.device_steps.step(idx, poison)
        if sync is not None and self.replicate_width is None:
            self.replicate_width = replicate_limit(self.replicate_setting, self.model, sync.same_host)
        batch, step_sync = worker_batch(self.maker, self.rows, idx, self.rows_per_index, sync,
                                        self.replicate_width or 0)
        reduce = step_sync.reduce if step_sync is not None else None  # the gradient sum, handed to the step
        return train_step(self.model, self.optimizer, self.params, batch, self.clip_norm, poison, reduce=reduce)


def train(model: SeqRecModel, table: Table, split: Split, s: TrainSettings, evals: EvalData | TestSetGuard | None,
          log_metrics: Callable[[dict[str, float], int], None] = lambda m, step: None,
          sync: GradientSync | None = None) -> TrainResult | None:
    """Train `model`, evaluating the selection split every `eval_every` steps; leave the selected weights loaded.

    `evals` (runners/train/selection.py): the job's evaluation rows, batch maker and selection metric, built once
    and shared with the caller's final test; a bare TestSetGuard (a caller that trains alone) selects on the AUC
    with rows built here.
    select_on="test": the paper protocol (test read through the guard at every evaluation, best score kept).
    select_on="valid": selection on validation; test is not read here (unless `track_test`, a diagnostic), so the
    caller reads it once, with the selected weights.
    `sync` (runners/parallel/data_parallel.py): this process is one worker of a data-parallel run and trains its
    share of every global batch; rank 0 also evaluates, selects, logs and checkpoints, the other ranks only train and
    return None.
    """
    seed_everything(s.seed)
    if s.select_on not in ("test", "valid"):
        raise ValueError(f"select_on must be 'test' or 'valid', got {s.select_on!r}")
    if s.pair_rows and model.train_format == "pointwise" and s.batch_size % 2:
        raise ValueError(f"trainer.pair_rows=true needs an even batch size (B rows = B/2 prefixes), got "
                         f"{s.batch_size}")
    if isinstance(evals, TestSetGuard):
        evals = eval_data(table, split, s.max_len, evals)
    return TrainingLoop(model, table, split, s, evals, log_metrics, sync).run()


class TrainingLoop:
    """One call of train(): the state it advances and the steps of the loop, each a method."""

    def __init__(self, model: SeqRecModel, table: Table, split: Split, s: TrainSettings, evals: EvalData | None,
                 log_metrics: Callable[[dict[str, float], int], None], sync: GradientSync | None):
        self.model, self.table, self.s, self.evals, self.log_metrics, self.sync = (
            model, table, s, evals, log_metrics, sync)
        self.main = sync is None or sync.rank == 0
        if self.main and evals is None:
            raise ValueError("the evaluating process (rank 0) needs the job's EvalData")
        if self.main and s.select_on == "valid" and evals.valid_rows is None:
            raise ValueError(f"protocol {split.protocol!r} has no valid set to select on")
        self.guard = evals.test_guard if evals is not None else None
        self.runner = StepRunner.for_training(model, table, split, s)
        self.indices_per_batch = s.batch_size // self.runner.rows_per_index
        self.batches_per_epoch = math.ceil(len(self.runner.rows) / self.indices_per_batch)
        self.total_steps = s.epochs * self.batches_per_epoch
        if s.max_steps is not None:
            self.total_steps = min(s.max_steps, self.total_steps)
        if self.total_steps < 1:
            raise ValueError(f"{model.name}: nothing to train ({len(self.runner.rows)} training rows, "
                             f"{self.total_steps} steps); a run that trained 0 steps is never reported")
        self.checkpoint = Path(s.checkpoint_path) if s.checkpoint_path else None
        self.state = TrainState()
        self.loss_sum, self.loss_n = 0.0, 0  # training loss since the last evaluation (not checkpointed)
        self.bar: tqdm | None = None

    def run(self) -> TrainResult | None:
        self.resume()
        s, state = self.s, self.state
        if s.lr_decay_step is not None and state.step >= s.lr_decay_step:
            set_lr(self.runner.optimizer, s.lr_after_decay)
        self.model.train()
        self.bar = tqdm(total=self.total_steps, initial=state.step, disable=not (s.progress and self.main),
                        desc=self.model.name, unit="step", dynamic_ncols=True, file=sys.stderr)
        with deferred():  # SIGTERM / SIGINT stop the loop between steps (runners/train/interrupts.py)
            stopped = self.patience_ran_out()  # resumed after an early stop
            while state.step < self.total_steps and not stopped:
                stopped = self.run_epoch()
        if self.sync is not None:
            self.sync.check_replicas(self.model, state.step)  # the weights rank 0 reports are every worker's
        if self.main and (not state.history or state.history[-1]["step"] != state.step):
            self.eval_point()  # the last step is always evaluated
        self.bar.close()
        if not self.main:
            return None
        self.save_checkpoint()
        self.model.load_state_dict(self.state.best_weights)
        return self.result(stopped)

    def resume(self) -> None:
        """Continue from the checkpoint, if there is one (every rank reads it: the workers stay identical)."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return
        self.state = TrainState(**load_checkpoint(self.checkpoint, self.model, self.runner.optimizer))
        log.info("resumed from %s at step %d (epoch %d, batch %d)", self.checkpoint, self.state.step,
                 self.state.epoch, self.state.batch_in_epoch)

    def run_epoch(self) -> bool:
        """The rest of the current epoch, or up to the step budget; returns whether training stopped early."""
        s, state = self.s, self.state
        rng = np.random.default_rng([s.seed, state.epoch if s.reshuffle else 0])
        batches = batch_order(self.runner.rows, self.indices_per_batch, rng, bucket_by_length=s.bucket_by_length,
                              indptr=self.table.indptr, chunk_batches=s.bucket_chunk)
        if self.runner.device_steps is not None:
            self.runner.device_steps.prepare(batches[state.batch_in_epoch:])  # CUDA graphs: captures, untimed
        for idx in batches[state.batch_in_epoch:]:
            self.train_one(idx)
            stopped = bool(s.eval_every) and state.step % s.eval_every == 0 and self.eval_and_agree()
            if s.checkpoint_every and state.step % s.checkpoint_every == 0:
                self.save_checkpoint()
            stop_if_interrupted(state.step, self.total_steps, self.checkpoint_at_interruption)
            if state.step >= self.total_steps or stopped:
                return stopped
        state.epoch += 1
        state.batch_in_epoch = 0
        return not s.eval_every and self.eval_and_agree()

    def train_one(self, idx: np.ndarray) -> None:
        """One step on the global batch `idx`, the counters, and the lr schedule."""
        s, state = self.s, self.state
        step = state.step + 1
        t0 = time.perf_counter()
        try:
            if (self.sync is not None and self.sync.rank == 1 and s.debug_worker_raise_at_step is not None
                    and step >= s.debug_worker_raise_at_step):
                raise RuntimeError(f"trainer.debug_worker_raise_at_step={s.debug_worker_raise_at_step}: "
                                   "worker 1 fails for testing")
            poison = s.debug_nan_at_step is not None and step >= s.debug_nan_at_step
            loss = self.runner.step(idx, self.sync, poison)
            if self.runner.cuda:
                synchronize(self.runner.device)  # the step's time is its kernels' time, not their launch
        except FloatingPointError as e:
            raise FloatingPointError(f"{e} at step {step} (epoch {state.epoch}); lower the lr or check the "
                                     "inputs") from None
        state.train_seconds += time.perf_counter() - t0
        state.examples += len(idx) * self.runner.rows_per_index
        state.step = step
        state.batch_in_epoch += 1
        self.loss_sum, self.loss_n = self.loss_sum + loss, self.loss_n + 1
        self.bar.update(1)
        if s.lr_decay_step is not None and step == s.lr_decay_step:
            set_lr(self.runner.optimizer, s.lr_after_decay)

    def eval_and_agree(self) -> bool:
        """An evaluation point inside the loop: rank 0 evaluates and decides on early stopping, every worker
        learns the decision; returns it."""
        if self.sync is not None:
            self.sync.check_replicas(self.model, self.state.step)
        stop = self.eval_point() if self.main else False
        if self.sync is not None:
            stop = self.sync.agree(stop)
        self.loss_sum, self.loss_n = 0.0, 0
        return stop

    def eval_point(self) -> bool:
        """Log the training loss, evaluate and select (on every core while the other workers wait); returns whether
        the patience ran out."""
        if self.loss_n:  # the device path's loss is read here only, so a NaN surfaces at this point
            loss = float(self.loss_sum) / self.loss_n
            if not math.isfinite(loss):
                raise FloatingPointError(f"{self.model.name}: training loss is {loss} (read at step "
                                         f"{self.state.step}); lower the lr or check the inputs")
            self.log_metrics({"train_loss": loss}, self.state.step)
        if self.sync is not None:
            with all_threads():
                score = self.evaluate_and_select()
        else:
            score = self.evaluate_and_select()
        self.bar.set_postfix({self.metric_name: f"{score:.4f}", "best": f"{self.state.best_score:.4f}"})
        return self.patience_ran_out()

    @property
    def metric_name(self) -> str:
        """The selection metric as logged: <select_on>_<select_metric>, e.g. valid_auc, valid_sampled_mrr."""
        return f"{self.s.select_on}_{self.evals.metric}"

    def evaluate_and_select(self) -> float:
        """Evaluate the selection split (paper: test, through the guard), keep the weights if they are the best
        so far on the selection metric, log the evaluation's row (the AUC too); returns the selection score."""
        s, state, evals = self.s, self.state, self.evals
        rows = evals.valid_rows if s.select_on == "valid" else self.guard.rows()
        outcome, score = selection_score(self.model, evals, rows, s.eval_batch_size, len(state.history))
        row = {f"{s.select_on}_auc": outcome.auc, self.metric_name: score,
               "lr": self.runner.optimizer.param_groups[0]["lr"], "epoch": state.step / self.batches_per_epoch}
        test_auc = outcome.auc if s.select_on == "test" else None
        if s.track_test and s.select_on == "valid":
            test_auc = row["test_auc"] = evaluate(self.model, evals.maker, self.guard.rows(), s.eval_batch_size).auc
        if test_auc is not None:
            state.best_test_auc = max(state.best_test_auc or -1.0, test_auc)
        if state.train_seconds > 0:
            row["examples_per_s"] = state.examples / state.train_seconds
        if score > state.best_score:
            state.best_score, state.best_step, state.bad_evals = score, state.step, 0
            state.test_at_best, state.best_eval = test_auc, outcome
            state.best_weights = copy.deepcopy(self.model.state_dict())
        else:
            state.bad_evals += 1
        row[f"best_{self.metric_name}"] = state.best_score
        state.history.append({"step": state.step, **row})
        self.log_metrics(row, state.step)
        return score

    def patience_ran_out(self) -> bool:
        return self.s.patience is not None and self.state.bad_evals >= self.s.patience

    def save_checkpoint(self) -> None:
        if self.checkpoint is not None and self.main:
            save_checkpoint(self.checkpoint, self.model, self.runner.optimizer, vars(self.state))

    def checkpoint_at_interruption(self) -> Path | None:
        """The checkpoint a signal leaves (runs with periodic checkpoints only); returns its path, or None."""
        if not (self.s.checkpoint_every and self.checkpoint is not None and self.main):
            return None
        if self.state.step % self.s.checkpoint_every:  # else written at this step already
            self.save_checkpoint()
        return self.checkpoint

    def result(self, stopped_early: bool) -> TrainResult:
        state = self.state
        return TrainResult(best_score=state.best_score, best_step=state.best_step, steps=state.step,
                           epochs_done=state.step / self.batches_per_epoch, examples=state.examples,
                           train_seconds=state.train_seconds, best_eval=state.best_eval,
                           test_accesses=self.guard.accesses, best_test_auc=state.best_test_auc,
                           test_at_best=state.test_at_best, stopped_early=stopped_early, history=state.history)
