"""Optimisation: the optimiser of a recipe, sparse embedding gradients, clipping, the learning rate, and the one
training step every path runs (train_step: the CPU loop, the device path and its CUDA-graph capture, and the
data-parallel workers, which hand it their gradient sum as a hook)."""
from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable

import torch
from torch.profiler import record_function

from datasets.batch import Batch
from models.interface import SeqRecModel
from runners.step.device import autocast

OPTIMIZERS = ("sgd", "adam", "adagrad")
SPARSE_OPTIMIZERS = ("sgd", "adagrad")  # their sparse update equals the dense one (Adam's would not: SparseAdam)


def make_optimizer(name: str, params, lr: float, weight_decay: float,
                   initial_accumulator: float = 0.0) -> torch.optim.Optimizer:
    """`initial_accumulator`: Adagrad's starting sum of squares (torch: 0; TF's AdagradOptimizer: 0.1 by default)."""
    if name == "sgd":
        return PlainSGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay,
                                   initial_accumulator_value=initial_accumulator)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, adam or adagrad")


class PlainSGD(torch.optim.SGD):
    """torch.optim.SGD whose step, without momentum, weight decay or maximize (the reference recipe), is the same
    update `p -= lr * grad` in one multi-tensor call for the dense gradients (sparse ones row by row, as SGD does).
    Same numbers and the same state_dict; at batch 32 torch's generic step cost ~0.1-0.2 ms of Python a step more
    (docs/performance.md, "Per-step overhead of narrow batches")."""

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None or any(g["momentum"] or g["weight_decay"] or g["maximize"] or g.get("differentiable")
                                      for g in self.param_groups):
            return super().step(closure)
        for group in self.param_groups:
            params, grads = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    p.add_(p.grad, alpha=-group["lr"])
                else:
                    params.append(p)
                    grads.append(p.grad)
            if params:
                torch._foreach_add_(params, grads, alpha=-group["lr"])
        return None


def zero_grad(params: list[torch.nn.Parameter]) -> None:
    """optimizer.zero_grad(set_to_none=True) for the clipped parameter list, without its per-call profiling hooks."""
    for p in params:
        p.grad = None


def sparse_grad_ok(optimizer: str, weight_decay: float) -> bool:
    """Whether sparse embedding gradients leave the optimiser's update unchanged: plain SGD and Adagrad without
    weight decay touch a row only through its gradient, so rows a batch does not use get exactly zero update
    either way (with weight decay, or Adam's moments, every row moves every step: keep those dense)."""
    return optimizer in SPARSE_OPTIMIZERS and not weight_decay


def wants_sparse_grad(sparse_grad: str | bool, optimizer: str, weight_decay: float) -> bool:
    """Whether the embedding tables train with sparse gradients (sparse_grad: auto | true | false)."""
    return sparse_grad_ok(optimizer, weight_decay) if sparse_grad == "auto" else bool(sparse_grad)


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


def prepare_optimizer(model: SeqRecModel, optimizer: str, lr: float, weight_decay: float,
                      sparse_grad: str | bool = "auto", initial_accumulator: float = 0.0
                      ) -> tuple[torch.optim.Optimizer, list]:
    """The optimiser for `model` (sparse embedding gradients where wants_sparse_grad) and the parameter list the
    step clips: the trainable parameters (a frozen one, e.g. a TF-style constant LSTM bias, is neither updated nor
    counted in the clip norm)."""
    sparse = wants_sparse_grad(sparse_grad, optimizer, weight_decay)
    use_sparse_embeddings(model, sparse)
    params = [p for p in model.parameters() if p.requires_grad]
    if not sparse:
        return make_optimizer(optimizer, params, lr, weight_decay, initial_accumulator), params
    # Two groups: an optimiser updates a group with any sparse gradient one tensor at a time; the dense group
    # keeps the multi-tensor (foreach) update.
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")  # Adagrad's
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    groups = [{"params": [p for p in params if id(p) not in tables]},
              {"params": [p for p in params if id(p) in tables]}]
    return make_optimizer(optimizer, [g for g in groups if g["params"]], lr, weight_decay, initial_accumulator), params


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


@torch.no_grad()
def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (global 2-norm of the per-tensor norms, coefficient max_norm / (norm + 1e-6)
    capped at 1, the same calls for tensors on one device), also for sparse gradients: these are coalesced first
    (duplicate rows summed), so the norm is the dense gradient's norm."""
    grads = []
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            if not g.is_coalesced():
                g = p.grad = g.coalesce()
            g = g._values()  # an alias, scaled in place
        grads.append(g)
    if not grads:
        return torch.zeros(())
    if len({g.device for g in grads}) > 1:  # torch groups by device itself
        total = torch.nn.utils.get_total_norm(grads)
    else:
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0).to(grads[0].device))
    return total


def train_step(model: SeqRecModel, optimizer: torch.optim.Optimizer, params: list, batch: Batch | None,
               clip_norm: float | None, poison: bool = False, label_phases: bool = False,
               reduce: Callable[[float], float] | None = None, precision: str = "fp32",
               read_loss: bool = True) -> float | torch.Tensor:
    """The one training step of every path: zero_grad, forward (under autocast), loss, backward, the gradient sum
    (`reduce`), clip, optimiser step, after_step. `poison` (trainer.debug_nan_at_step) makes the loss NaN;
    `label_phases` marks forward, backward and optimiser for torch.profiler (runners/bench.py --profile; off
    otherwise: ~13 us per label).
    read_loss=True: returns the loss as a float and raises FloatingPointError when it is not finite. read_loss=False
    (the device path and its CUDA-graph capture, runners/step/cuda_graphs.py): never reads a value to the host and
    returns the detached loss tensor, still on the device (the training loop reads it at its logging points).
    `reduce` (data-parallel workers, GradientSync.reduce): `batch` is this worker's share of the global batch (None:
    an empty share); the hook sums the gradients and the loss over the workers before clipping and returns the
    global loss, which is the one checked and returned."""
    if reduce is not None and not read_loss:
        raise ValueError("a data-parallel step (reduce) reads the loss: it needs read_loss=True")
    phase = record_function if label_phases else contextlib.nullcontext  # nullcontext(name): a no-op
    zero_grad(params)  # before the forward: the forward reads no gradient, and a captured step sets them fresh
    loss = None
    with phase("step/forward"):
        if batch is not None:
            with autocast(precision, batch.user.device):
                loss = model.loss(batch)
    if poison and loss is not None:
        loss = loss * float("nan")
    value = loss.item() if read_loss and loss is not None else 0.0
    with phase("step/backward"):
        if loss is not None:
            loss.backward()
    if reduce is not None:
        with phase("step/allreduce"):
            value = reduce(value)  # every worker sees the same global loss, so all stop below together
    if read_loss and not math.isfinite(value):
        raise FloatingPointError(f"{model.name}: loss is {value}")
    with phase("step/optimizer"):
        if clip_norm:
            clip_grad_norm(params, clip_norm)
        optimizer.step()
        model.after_step()
    return value if read_loss else loss.detach().float()
