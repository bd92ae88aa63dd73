"""The device setting and the device-resident training path, on the CPU (CI has no GPU).

- trainer.device: auto picks what is there; cuda asked for without a GPU stops before anything runs, saying what
  torch sees; bf16 is refused off CUDA.
- the same rows through the device batch maker with and without static widths give the same loss and the same
  updated weights through StepRunner (padding is masked);
- train() on the device path (trainer.device_batches=true) gives the numpy path's results.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.batching import batch_order, eval_rows
from datasets.device_batches import DeviceBatchMaker
from datasets.split import make_split
from datasets.table import build_table
from models.registry import get_model
from runners.config import check_config
from runners.step.device import check_precision, device_info, resolve_device
from runners.train.evaluation import TestSetGuard
from runners.train.runtime import seed_everything
from runners.step.settings import TrainSettings
from runners.train.trainer import StepRunner, train, training_rows
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)
from tests.runners.conftest import compose

pytestmark = pytest.mark.usefixtures("one_thread")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")


@pytest.fixture(scope="module")
def data():
    table = build_table(synthetic.generate(n_users=300, n_items=200, n_categories=12, seed=3), "tiny")
    return table, make_split(table, "paper", 1234)


def new_model(name: str, table):
    seed_everything(0)
    return get_model(name)(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                           item_category=table.item_category)


@no_gpu
def test_cuda_without_a_gpu_is_a_clear_error():
    assert resolve_device("cpu") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "mps")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match=r"no CUDA GPU was found: torch .*is_available\(\)=False"):
            resolve_device(spec)
    with pytest.raises(ValueError, match="expected auto | cpu"):
        resolve_device("gpu")
    with pytest.raises(RuntimeError, match="no CUDA GPU was found"):  # from the config, before anything runs
        check_config(compose(["model=atrank", "dataset=sample", "trainer.device=cuda"]))
    with pytest.raises(ValueError, match="bf16 runs under torch.autocast on a CUDA device only"):
        check_precision("bf16", torch.device("cpu"))
    with pytest.raises(ValueError, match="bf16 runs under"):
        check_config(compose(["model=atrank", "dataset=sample", "trainer.precision=bf16"]))
    info = device_info(torch.device("cpu"))
    assert info["device"] == "cpu" and {"device_name", "torch_version", "cuda_version", "cudnn_version"} <= set(info)


def test_cuda_n_becomes_the_current_device_and_bf16_needs_the_device_path(monkeypatch, data):
    """use_device(cuda:N) calls torch.cuda.set_device(N) (CPU: nothing); bf16 with trainer.device_batches=false
    is refused, not silently fp32 (the host path has no autocast). CUDA itself is faked: CI has none."""
    from runners.step import device_step
    from runners.step.device import use_device

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    assert use_device(torch.device("cuda", 1)) == torch.device("cuda", 1) and calls == [torch.device("cuda", 1)]
    assert use_device(torch.device("cpu")) == torch.device("cpu") and len(calls) == 1
    monkeypatch.setattr(device_step, "check_precision", lambda precision, device: None)  # as on a GPU
    s = TrainSettings(precision="bf16", device_batches=False)
    with pytest.raises(ValueError, match="precision=bf16 runs on the device path only.*device_batches=false"):
        device_step.batch_maker(data[0], s)


@pytest.mark.parametrize("name", ["atrank", "bpr", "gru4rec", "cnn", "din"])
def test_static_widths_give_the_same_loss_and_weights_through_the_step(data, name):
    """The epoch's first batches, the same rows, natural vs static widths: same losses, same weights after the
    steps. (The sequence models SASRec and AttRec draw a negative and a dropout mask per slot, padded ones too:
    their function is width-invariant, tests/models/test_interface.py, but their random draws are not.)"""
    table, split = data
    s = TrainSettings(batch_size=32, clip_norm=5.0, lr=0.5, device_batches=True)
    out = {}
    for static in (False, True):
        model = new_model(name, table)
        rows, per = training_rows(model, table, split, s.pair_rows)
        maker = DeviceBatchMaker(table, s.max_len, "cpu", static_widths=static)
        runner = StepRunner(model, rows, per, maker, s)
        batches = batch_order(rows, s.batch_size // per, np.random.default_rng(0), indptr=table.indptr)
        losses = [runner.step(idx) for idx in batches[:6]]
        widths = [maker.make_indexed(runner.device_steps.resident, idx).hist.shape[1] for idx in batches[:6]]
        out[static] = torch.stack(losses), widths, {k: v.detach().clone() for k, v in model.state_dict().items()}
    (loss0, w0, p0), (loss1, w1, p1) = out[False], out[True]
    assert all(b % 8 == 0 for b in w1) and w1 != w0  # the static run really was padded wider
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-6)
    for k in p0:
        torch.testing.assert_close(p1[k], p0[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("name", ["atrank", "bpr"])
def test_training_on_the_device_path_matches_the_numpy_path(data, name):
    table, split = data
    s = TrainSettings(batch_size=32, lr=0.5, max_steps=24, eval_every=8, seed=1)
    results = {}
    for device_batches in (False, True):
        model = new_model(name, table)
        curve = []
        result = train(model, table, split, replace(s, device_batches=device_batches),
                       TestSetGuard(eval_rows(table, split, "test"), None),
                       log_metrics=lambda m, step: curve.append((step, dict(m))))
        results[device_batches] = result, curve, model.state_dict()
    (r0, c0, w0), (r1, c1, w1) = results[False], results[True]
    assert r1.best_score == pytest.approx(r0.best_score, abs=1e-6) and r1.best_step == r0.best_step
    losses = [[m["train_loss"] for _, m in c if "train_loss" in m] for c in (c0, c1)]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], rtol=1e-5, atol=1e-6)


def test_a_nan_on_the_device_path_stops_at_the_next_logging_point(data):
    table, split = data
    s = TrainSettings(batch_size=32, max_steps=20, eval_every=5, debug_nan_at_step=7, device_batches=True)
    with pytest.raises(FloatingPointError, match="training loss is nan .read at step 10"):
        train(new_model("atrank", table), table, split, s, TestSetGuard(eval_rows(table, split, "test"), None))
