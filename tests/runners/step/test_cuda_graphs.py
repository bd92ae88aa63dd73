"""runners/step/cuda_graphs.py's logic that runs without CUDA: the shapes captured before timing, and the bookkeeping
of captures, failures and replays (the CUDA calls themselves, CudaGraphSteps.record, replaced by fakes)."""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.device_batches import static_width
from datasets.split import make_split
from datasets.table import build_table
from runners.step.cuda_graphs import CudaGraphSteps, distinct_shapes
from runners.step.optim import prepare_optimizer
from runners.train.trainer import StepRunner
from tests.models.helpers import build_from_yaml, one_thread, random_batch  # noqa: F401  (one_thread: a fixture)
from tests.runners.conftest import compose

pytestmark = pytest.mark.usefixtures("one_thread")


def test_distinct_shapes_keeps_the_first_batch_of_each_rows_and_width():
    hist_len = np.array([1, 3, 9, 17, 70, 8, 2, 16])
    batches = [np.array([0, 1]), np.array([6, 5]), np.array([2, 3]), np.array([7, 2]), np.array([4]),
               np.array([0, 6])]
    picked = distinct_shapes(batches, lambda idx: static_width(hist_len[idx].max()))
    # widths: 8, 8, 24, 16, 128, 8 -> (2, 8), (2, 24), (2, 16), (1, 128)
    assert [b.tolist() for b in picked] == [[0, 1], [2, 3], [7, 2], [4]]


class FakeGraph:
    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1


def graph_steps(monkeypatch, fail: bool) -> tuple[CudaGraphSteps, list]:
    """CudaGraphSteps over a small ATRank on the CPU, whose record() runs the warm-up steps (changing the weights)
    and then fails, or returns a fake graph; the list collects the recorded static batches."""
    torch.manual_seed(0)
    model = build_from_yaml("atrank")
    optimizer, params = prepare_optimizer(model, "sgd", 1.0, 0.0, False)
    recorded = []

    def record(self, static, saved):
        recorded.append(static)
        for _ in range(2):
            self.optimizer.zero_grad(set_to_none=True)
            self.body(static)
        if fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.restore(saved)
        return FakeGraph(), torch.tensor(0.5)

    monkeypatch.setattr(CudaGraphSteps, "record", record)
    return CudaGraphSteps(model, optimizer, params, 5.0, "fp32"), recorded


def test_failed_capture_is_counted_undone_and_its_shape_trains_eagerly(monkeypatch, caplog):
    steps, recorded = graph_steps(monkeypatch, fail=True)
    before = [p.detach().clone() for p in steps.model.parameters()]
    batch = random_batch([3, 1, 6, 4])
    with caplog.at_level(logging.WARNING, logger="runners.step.cuda_graphs"):
        assert steps.step(batch) is None
    assert all(torch.equal(a, b) for a, b in zip(before, steps.model.parameters()))  # warm-up updates undone
    assert all(p.grad is None for p in steps.model.parameters())
    assert "capture of shape" in caplog.text and "operation not permitted" in caplog.text
    assert steps.step(random_batch([2, 2, 6, 1], seed=1)) is None  # same shape: no second attempt
    assert len(recorded) == 1
    out = steps.outcomes()
    assert (out["captured"], out["failed"], out["replays"], out["eager_steps"]) == (0, 1, 0, 2)
    assert len(out["failures"]) == 1 and "RuntimeError" in out["failures"][0]


def test_captured_shapes_replay_with_the_new_batch_and_a_new_lr_captures_anew(monkeypatch):
    steps, recorded = graph_steps(monkeypatch, fail=False)
    before = [p.detach().clone() for p in steps.model.parameters()]
    first, second = random_batch([3, 1, 6, 4]), random_batch([2, 2, 6, 1], seed=1)
    steps.prepare(first)  # captures, trains nothing
    assert all(torch.equal(a, b) for a, b in zip(before, steps.model.parameters()))
    assert steps.step(second) is not None and torch.equal(recorded[0].hist, second.hist)  # static batch refilled
    assert steps.step(random_batch([1, 1, 1, 1])) is not None  # another width: a second graph
    for g in steps.optimizer.param_groups:
        g["lr"] = 0.1
    steps.step(second)
    out = steps.outcomes()
    assert (out["captured"], out["failed"], out["replays"], out["eager_steps"]) == (3, 0, 3, 0)


def test_device_steps_prepare_captures_each_padded_width_of_the_epoch_once(monkeypatch):
    """The trainer's and the bench's warm-up list: one capture per (rows, static width) of the epoch's batches."""
    table = build_table(synthetic.generate(n_users=60, n_items=80, n_categories=6, seed=3), "tiny")
    split = make_split(table, "paper", 1234)
    cfg = compose(["model=atrank", "trainer.device=cpu", "trainer.device_batches=true",
                   "trainer.static_widths=true", "trainer.num_threads=1"])
    from models.registry import get_model
    from runners.config import model_params, train_settings

    model = get_model("atrank")(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                                item_category=table.item_category, **model_params(cfg))
    runner = StepRunner.for_training(model, table, split, replace(train_settings(cfg, None), sparse_grad=False))
    steps = runner.device_steps
    captured = []
    monkeypatch.setattr(CudaGraphSteps, "capture", lambda self, batch, key: captured.append(key) or None)
    steps.graphs = CudaGraphSteps(model, runner.optimizer, runner.params, None, "fp32")
    rng = np.random.default_rng(0)
    batches = np.array_split(rng.permutation(len(runner.rows)), len(runner.rows) // 16)
    steps.prepare(batches)
    expected = {(len(b), static_width(steps.resident.hist_len[b].max())) for b in batches}
    assert sorted(k[0] for k in captured) == sorted(expected) and len(expected) > 1
    assert steps.outcomes()["failed"] == len(expected)  # the fake capture "failed" each: counted per shape
