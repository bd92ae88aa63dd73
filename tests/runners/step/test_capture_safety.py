"""Every model's training step is safe to capture as a CUDA graph (runners/step/cuda_graphs.py), checked on the CPU.

One step of each registered model runs on its real GPU path (device-resident batches, static widths, paired rows,
its recipe's optimiser and clip) under a TorchDispatchMode that fails on what capture forbids:
- a tensor made from host data inside the step (torch.tensor / as_tensor / from_numpy dispatch aten.lift_fresh):
  on a GPU that is a copy from unpinned host memory, refused during capture and a host wait in eager steps;
- reads of a value to the host (`.item()`, `if t:`, float(t): aten._local_scalar_dense, aten.is_nonzero);
- data-dependent output shapes (nonzero, masked_select, unique, boolean-mask indexing, repeat_interleave without
  output_size).
The guarded step is the captured one (optim.train_step with read_loss=False) after one unguarded warm-up step, as
capture runs it (the optimiser's state exists by then). Adam's update itself is guarded only through torch's own
capturable mode, which runs on CUDA alone: on the CPU its step runs unguarded and the test checks that
CudaGraphSteps turns it on.
"""
from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from datasets import synthetic
from datasets.split import make_split
from datasets.table import build_table
from models import interface
from models.registry import available_models, get_model
from runners.step.cuda_graphs import CudaGraphSteps, capture_blocker
from runners.step.optim import train_step
from runners.train.runtime import seed_everything
from runners.step.settings import TrainSettings
from runners.train.trainer import StepRunner
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)
from tests.runners.conftest import REPO_ROOT, compose

pytestmark = pytest.mark.usefixtures("one_thread")
HOST_DATA = "a tensor made from host data (a host-to-device copy on a GPU)"
HOST_READ = "a read of a device value on the host (.item(), bool(tensor) and the like)"
DATA_SHAPE = "a data-dependent shape"
FORBIDDEN = {"lift_fresh": HOST_DATA, "lift_fresh_copy": HOST_DATA, "_local_scalar_dense": HOST_READ,
             "is_nonzero": HOST_READ, "nonzero": DATA_SHAPE, "masked_select": DATA_SHAPE, "argwhere": DATA_SHAPE,
             "unique": DATA_SHAPE, "_unique": DATA_SHAPE, "_unique2": DATA_SHAPE, "unique_dim": DATA_SHAPE,
             "unique_consecutive": DATA_SHAPE}


def where() -> str:
    """The innermost frame of this repository's code (not torch's, not this test's) on the stack."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if REPO_ROOT in path.parents and path.name != Path(__file__).name:
            return f"{path.relative_to(REPO_ROOT)}:{frame.lineno} {frame.line}"
    return "(outside this repository)"


class CaptureGuard(TorchDispatchMode):
    """Records every dispatched op that CUDA-graph capture forbids, with the reason; `paused` lets ops through."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            self.check(func, args, kwargs)
        return func(*args, **kwargs)

    def check(self, func, args, kwargs) -> None:
        name = func._schema.name.split("::")[-1]
        reason = FORBIDDEN.get(name)
        if name in ("index", "index_put", "index_put_", "_index_put_impl_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            reason = "boolean-mask indexing (a data-dependent shape)"
        if name == "repeat_interleave" and kwargs.get("output_size") is None:
            reason = "repeat_interleave without output_size (a data-dependent shape)"
        if reason:
            self.found.append(f"{func}: {reason}, at {where()}")


class GuardedOptimizer:
    """The optimiser with its step run outside the guard (Adam on the CPU: see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, guard: CaptureGuard):
        self.optimizer, self.guard = optimizer, guard

    def step(self):
        self.guard.paused = True
        try:
            return self.optimizer.step()
        finally:
            self.guard.paused = False


@pytest.fixture(scope="module")
def data():
    table = build_table(synthetic.generate(n_users=60, n_items=80, n_categories=6, seed=3), "tiny")
    return table, make_split(table, "paper", 1234)


def gpu_path_runner(name: str, table, split, *overrides: str) -> StepRunner:
    """The model on the GPU path's settings (device batches, static widths, paired rows) with its recipe's
    optimiser and clip, on the CPU."""
    from runners.config import model_params, train_settings

    cfg = compose([f"model={name}", "trainer.device=cpu", "trainer.device_batches=true",
                   "trainer.static_widths=true", "trainer.pair_rows=true", "trainer.num_threads=1", *overrides])
    seed_everything(0)
    model = get_model(name)(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                            item_category=table.item_category, **model_params(cfg))
    s: TrainSettings = train_settings(cfg, None)
    return StepRunner.for_training(model, table, split, s)


def guarded_step(runner: StepRunner) -> list[str]:
    """One warm-up step, then the captured step under the guard; what the guard found."""
    rng = np.random.default_rng(0)
    idx = rng.choice(len(runner.rows), min(16, len(runner.rows)), replace=False)
    runner.step(idx)  # warm-up: optimiser state made, as capture's warm-up makes it
    batch = runner.device_steps.batch(idx)
    guard = CaptureGuard()
    optimizer = runner.optimizer if isinstance(runner.optimizer, torch.optim.SGD) else GuardedOptimizer(
        runner.optimizer, guard)
    runner.optimizer.zero_grad(set_to_none=True)
    with guard:
        loss = train_step(runner.model, optimizer, runner.params, batch, runner.clip_norm, read_loss=False)
    assert torch.isfinite(loss)
    return guard.found


@pytest.fixture
def accelerator_code_path(monkeypatch):
    """The models' code as on a GPU: no CPU-only shortcut that reads a value back (models/interface.py)."""
    monkeypatch.setattr(interface, "CPU_HOST_SHORTCUTS", False)


@pytest.mark.parametrize("name", available_models())
def test_training_step_is_capture_safe(data, accelerator_code_path, name):
    """A model that says it can be captured does nothing capture forbids; one that says it cannot does something
    (so the declaration stays true) and CudaGraphSteps leaves it eager with the model's reason."""
    runner = gpu_path_runner(name, *data)
    found = guarded_step(runner)
    if runner.model.cuda_graphs:
        assert not found, f"{name}: its training step does what CUDA-graph capture forbids:\n" + "\n".join(found)
    else:
        assert found, f"{name} says it cannot be captured ({runner.model.cuda_graphs_note}), but nothing was found"
        assert runner.model.cuda_graphs_note in capture_blocker(runner.model, runner.optimizer)


def test_guard_catches_what_capture_forbids():
    """The guard is not blind: each forbidden pattern is found."""
    x = torch.arange(6.0)
    cases = {"torch.tensor": lambda: torch.tensor([1.0, 0.0]) * x[:2], "item": lambda: (x.sum()).item(),
             "nonzero": lambda: torch.nonzero(x), "bool mask": lambda: x[x > 2], "unique": lambda: torch.unique(x),
             "bool()": lambda: bool(x[0] > 1)}
    for what, fn in cases.items():
        guard = CaptureGuard()
        with guard:
            fn()
        assert guard.found, f"{what} was not caught"
    guard = CaptureGuard()
    with guard:
        torch.zeros(4, 2)[:, 0].fill_(1.0)
    assert not guard.found, guard.found


def test_adam_is_made_capturable_only_where_the_step_is_captured(data):
    """CudaGraphSteps turns Adam's capturable mode on for a capturable model (ATRank trained with Adam) and never
    for a step that is not captured (SASRec's Adam: its model cannot be; AttRec's Adagrad cannot be)."""
    for name, extra, blocked in (("atrank", ["model.optimizer=adam"], False), ("sasrec", [], True),
                                 ("attrec", [], True)):
        runner = gpu_path_runner(name, *data, *extra)
        assert (capture_blocker(runner.model, runner.optimizer) is not None) == blocked
        groups = runner.optimizer.param_groups
        before = [g.get("capturable") for g in groups]
        CudaGraphSteps(runner.model, runner.optimizer, runner.params, runner.clip_norm, "fp32")
        after = [g.get("capturable") for g in groups]
        assert after == (before if blocked else [True] * len(groups))


@pytest.mark.parametrize("real_rows", [5, 0])
def test_dice_masked_statistics_equal_the_selected_rows(monkeypatch, real_rows):
    """DIN's Dice on the accelerators' path (masked sums) gives the CPU path's (x[mask]) output and running
    statistics, also for a batch without a real row (running statistics used, not updated)."""
    from models.din import Dice

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, generator=g)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask.view(-1)[torch.randperm(12, generator=g)[:real_rows]] = True
    outs = []
    for shortcuts in (True, False):
        monkeypatch.setattr(interface, "CPU_HOST_SHORTCUTS", shortcuts)
        torch.manual_seed(1)
        dice = Dice(6).train()
        dice.running_mean.normal_()
        outs.append((dice(x, mask), dice.running_mean.clone(), dice.running_var.clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
