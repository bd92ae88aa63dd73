"""runners/step/optim.py's lean step (PlainSGD, zero_grad, clip_grad_norm) is torch's, bit for bit.

PlainSGD replaces torch.optim.SGD's generic step by one multi-tensor update when there is no momentum, weight decay
or maximize; clip_grad_norm computes torch's global norm with the same calls. On the same model, batches and
sparse/dense gradient mix, every weight after 30 clipped steps must be equal (torch.equal, not a tolerance), and a
recipe with momentum must still take torch's own path. train_step is the one step of every path: without reading
its loss (the device path and its CUDA-graph capture) it trains exactly as with, and a data-parallel worker's
gradient sum, handed to it as a hook, runs after backward and before the clip.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.batching import BatchMaker, batch_order, train_rows
from datasets.split import make_split
from datasets.table import build_table
from models.registry import get_model
from runners.step.optim import PlainSGD, clip_grad_norm, prepare_optimizer, train_step
from runners.train.runtime import seed_everything
from tests.models.helpers import build_from_yaml, one_thread, random_batch  # noqa: F401  (one_thread: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def torch_step(model, optimizer, params, batch, clip: float) -> None:
    """The step as torch spells it: zero_grad, backward, clip_grad_norm_ (dense) or the coalesced norm, step."""
    loss = model.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()
    values = [p.grad._values() if p.grad.is_sparse else p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(values)
    torch._foreach_mul_(values, torch.clamp(clip / (total + 1e-6), max=1.0))
    optimizer.step()


@pytest.mark.parametrize("model_name", ["atrank", "gru4rec"])
@pytest.mark.parametrize("sparse", [True, False])
def test_lean_step_equals_torch_sgd_bit_for_bit(model_name, sparse):
    table = build_table(synthetic.generate(n_users=200, n_items=150, n_categories=9, seed=5), "tiny")
    split = make_split(table, "paper", 1234)
    seed_everything(0)
    model = get_model(model_name)(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                                  item_category=table.item_category)
    twin, initial = copy.deepcopy(model), copy.deepcopy(model.state_dict())
    ours, ours_params = prepare_optimizer(model, "sgd", 1.0, 0.0, sparse)
    theirs, theirs_params = prepare_optimizer(twin, "sgd", 1.0, 0.0, sparse)
    assert isinstance(ours, PlainSGD)
    theirs.__class__ = torch.optim.SGD  # the same groups, torch's generic step
    rows = train_rows(table, split, "pointwise", paired=True)
    maker = BatchMaker(table)
    order = batch_order(rows, 32, np.random.default_rng(0), bucket_by_length=True, indptr=table.indptr)[:30]
    for idx in order:
        batch = maker.make(rows.take(idx))
        train_step(model, ours, ours_params, batch, clip_norm=0.5)  # small clip: the coefficient is < 1
        torch_step(twin, theirs, theirs_params, batch, clip=0.5)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, initial[name]) for name, a in model.state_dict().items())  # it trained


def test_momentum_takes_torchs_step():
    w = torch.nn.Parameter(torch.ones(3))
    w2 = torch.nn.Parameter(torch.ones(3))
    ours, theirs = PlainSGD([w], lr=0.1, momentum=0.9), torch.optim.SGD([w2], lr=0.1, momentum=0.9)
    for _ in range(3):
        for p, opt in ((w, ours), (w2, theirs)):
            p.grad = torch.tensor([1.0, -2.0, 0.5])
            opt.step()
    assert torch.equal(w, w2) and ours.state[w]["momentum_buffer"] is not None


def test_clip_of_no_gradients_is_zero():
    assert clip_grad_norm([torch.nn.Parameter(torch.ones(2))], 1.0).item() == 0.0


def twin_atrank() -> tuple:
    """Two identical ATRanks (SGD, dense gradients), each with its optimiser and clipped parameter list."""
    model = build_from_yaml("atrank")
    twin = copy.deepcopy(model)
    return tuple((m, *prepare_optimizer(m, "sgd", 1.0, 0.0, False)) for m in (model, twin))


def test_the_device_paths_step_is_the_cpu_step_without_the_read():
    """read_loss=False (the device path, the captured step) returns the loss as a tensor, never raises, and
    trains exactly as the step that reads its loss."""
    (model, opt, params), (twin, twin_opt, twin_params) = twin_atrank()
    for seed in range(3):
        batch = random_batch(seed=seed)
        value = train_step(model, opt, params, batch, clip_norm=0.5)
        loss = train_step(twin, twin_opt, twin_params, batch, clip_norm=0.5, read_loss=False)
        assert isinstance(value, float) and isinstance(loss, torch.Tensor) and not loss.requires_grad
        assert loss.item() == value
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name
    poisoned = train_step(twin, twin_opt, twin_params, random_batch(), 0.5, poison=True, read_loss=False)
    assert torch.isnan(poisoned)  # read at the loop's next logging point
    with pytest.raises(FloatingPointError, match="atrank: loss is nan"):
        train_step(model, opt, params, random_batch(), 0.5, poison=True)


def test_reduce_hook_sums_after_backward_and_before_clip_and_its_loss_is_the_steps():
    """A data-parallel worker hands the step its gradient sum: called with the local loss once the gradients
    exist and the weights are untouched; the step clips the summed gradients and returns (and checks) its loss."""
    (model, opt, params), _ = twin_atrank()
    before = [p.detach().clone() for p in params]
    seen = []

    def reduce(loss: float) -> float:
        seen.append((loss, all(p.grad is not None for p in params),
                     all(torch.equal(a, p) for a, p in zip(before, params))))
        for p in params:
            p.grad = torch.full_like(p, 100.0)  # another worker's large gradients summed in
        return loss + 1.0

    value = train_step(model, opt, params, random_batch(), clip_norm=0.5, reduce=reduce)
    (local, had_grads, untouched), = seen
    assert value == local + 1.0 and had_grads and untouched
    moved = torch.linalg.vector_norm(torch.cat([(a - p.detach()).reshape(-1) for a, p in zip(before, params)]))
    assert moved.item() == pytest.approx(0.5, rel=1e-4)  # lr 1 times the clipped norm of the summed gradients

    seen.clear()
    train_step(model, opt, params, None, clip_norm=0.5, reduce=reduce)  # an empty share: nothing to forward
    assert seen[0][:2] == (0.0, False)
    after = [p.detach().clone() for p in params]
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_step(model, opt, params, random_batch(), 0.5, reduce=lambda loss: float("nan"))
    assert all(torch.equal(a, p) for a, p in zip(after, params))  # every worker stops before its update
    with pytest.raises(ValueError, match="read_loss=True"):
        train_step(model, opt, params, random_batch(), 0.5, reduce=reduce, read_loss=False)
