"""The device-resident training path (trainer.device_batches): batches built on the device from resident rows
(datasets/device_batches.py), the one step (runners/step/optim.train_step) with read_loss=False, so that it never
reads the loss back (the training loop sums loss tensors and reads them at its logging points), bf16 autocast on
CUDA (trainer.precision) and, on CUDA only and when trainer.cuda_graphs allows it, that step replayed as a CUDA
graph per batch shape (runners/step/cuda_graphs.py).

On the CPU the default stays the numpy BatchMaker and the same train_step, reading its loss; the device path
runs there too when trainer.device_batches=true, which is how the tests exercise it without a GPU.
"""
from __future__ import annotations

import numpy as np
import torch

from datasets.batch import Batch
from datasets.batching import BatchMaker
from datasets.device_batches import DeviceBatchMaker
from datasets.table import Table
from models.interface import SeqRecModel
from runners.step.device import check_precision, resolve_device
from runners.step.optim import train_step
from runners.step.settings import TrainSettings


def _switch(value: str | bool, auto: bool, key: str) -> bool:
    if value == "auto":
        return auto
    if isinstance(value, bool):
        return value
    raise ValueError(f"trainer.{key} must be auto, true or false, got {value!r}")


def uses_device_batches(s: TrainSettings, device: torch.device) -> bool:
    """trainer.device_batches: auto = on for any device but the CPU."""
    return _switch(s.device_batches, device.type != "cpu", "device_batches")


def uses_static_widths(s: TrainSettings, device: torch.device) -> bool:
    """trainer.static_widths: auto = on for CUDA (fixed shapes for graph capture), off elsewhere."""
    return _switch(s.static_widths, device.type == "cuda", "static_widths")


def uses_cuda_graphs(s: TrainSettings, device: torch.device) -> bool:
    """trainer.cuda_graphs: only ever on a CUDA device; auto = off until measured on a GPU (docs/performance.md)."""
    return device.type == "cuda" and _switch(s.cuda_graphs, False, "cuda_graphs")


def batch_maker(table: Table, s: TrainSettings) -> BatchMaker | DeviceBatchMaker:
    """The batch maker a run with settings `s` trains and evaluates with."""
    device = resolve_device(s.device)
    check_precision(s.precision, device)
    if not uses_device_batches(s, device):
        if s.precision != "fp32":
            raise ValueError(f"trainer.precision={s.precision} runs on the device path only (its autocast is in "
                             "runners/step/device_step.py); this run has trainer.device_batches=false. Set "
                             "trainer.device_batches=true (or auto on a GPU), or trainer.precision=fp32")
        return BatchMaker(table, max_len=s.max_len)
    return DeviceBatchMaker(table, s.max_len, device, uses_static_widths(s, device))


def model_device(model: torch.nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


class DeviceSteps:
    """StepRunner's device path: resident rows, batches from index arrays, eager train_step calls or CUDA graph
    replays of it."""

    def __init__(self, model: SeqRecModel, optimizer: torch.optim.Optimizer, params: list, rows,
                 maker: DeviceBatchMaker, s: TrainSettings):
        self.model, self.optimizer, self.params, self.maker = model, optimizer, params, maker
        self.clip_norm, self.precision = s.clip_norm, s.precision
        self.resident = maker.put(rows)
        self.graphs = None
        if uses_cuda_graphs(s, maker.device):
            from runners.step.cuda_graphs import CudaGraphSteps

            self.graphs = CudaGraphSteps(model, optimizer, params, s.clip_norm, s.precision)

    def batch(self, idx) -> Batch:
        return self.maker.make_indexed(self.resident, idx)

    def prepare(self, batches: list[np.ndarray]) -> None:
        """With CUDA graphs: capture every (rows, padded width) shape of `batches` now, before any timed step."""
        if self.graphs is None:
            return
        from runners.step.cuda_graphs import distinct_shapes

        for idx in distinct_shapes(batches, lambda i: self.maker.width(self.resident.hist_len[np.asarray(i)])):
            self.graphs.prepare(self.batch(idx))

    def outcomes(self) -> dict | None:
        """CudaGraphSteps.outcomes() when graphs are on, else None."""
        return None if self.graphs is None else self.graphs.outcomes()

    def step(self, idx, poison: bool = False) -> torch.Tensor:
        batch = self.batch(idx)
        if self.graphs is not None and not poison:
            loss = self.graphs.step(batch)
            if loss is not None:
                return loss
        return train_step(self.model, self.optimizer, self.params, batch, self.clip_norm, poison,
                          precision=self.precision, read_loss=False)
