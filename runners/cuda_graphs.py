"""The whole training step (forward, backward, clip, optimiser, after_step) captured once per batch shape as a CUDA
graph and replayed: at batch 32 an ATRank step is ~1,500 small kernels, bound by launch latency when launched one
by one. PREPARED, NOT YET RUN ON A GPU (docs/performance.md): trainer.cuda_graphs=true turns it on, on CUDA only.

Shapes are (rows, width) of the batch; trainer.static_widths keeps the widths to a small fixed set, so an epoch
captures ~12 graphs (the epoch's short last batch gets one more). Capture follows PyTorch's whole-network recipe:
warm-up iterations on a side stream, `.grad` set to None before capture (the captured backward writes fresh
gradients, no accumulation). The warm-up steps really update the weights, so the parameters, buffers, optimiser
state and the CUDA RNG are saved before and restored after them: the captured step then starts from exactly
the weights eager training would have. Known constraints, each handled here:
- sparse embedding gradients cannot be captured: on CUDA sparse_grad=auto is dense (runners/optim.py);
- Adam needs `capturable=True` (its step counter on the device); set before the first step;
- a graph bakes in the learning rate of a plain-float lr: the lr is part of the shape key, so the lr decay step
  captures anew;
- Adagrad keeps a host-side step counter (not capturable): it stays eager, as does any step whose capture fails
  (a model with a host sync): a warning names the shape and the reason, and that shape runs eagerly from then on.
"""
from __future__ import annotations

import logging

import torch

from datasets.batch import Batch
from models.interface import SeqRecModel
from runners.device import autocast
from runners.optim import clip_grad_norm

log = logging.getLogger(__name__)
TENSOR_FIELDS = ("user", "hist", "hist_time", "hist_rating", "mask", "lengths", "target", "label", "neg")
WARMUP_STEPS = 3


class CudaGraphSteps:
    """One captured graph per batch shape; `step(batch)` replays it (returns the loss tensor) or returns None when
    the shape runs eagerly."""

    def __init__(self, model: SeqRecModel, optimizer: torch.optim.Optimizer, params: list,
                 clip_norm: float | None, precision: str):
        self.model, self.optimizer, self.params = model, optimizer, params
        self.clip_norm, self.precision = clip_norm, precision
        self.graphs: dict[tuple, tuple | None] = {}
        self.supported = self._supported()
        if self.supported:
            for g in optimizer.param_groups:
                if "capturable" in g:
                    g["capturable"] = True

    def _supported(self) -> bool:
        if any(getattr(m, "sparse", False) for m in self.model.modules()):
            log.warning("cuda_graphs: sparse embedding gradients cannot be captured; training eagerly")
            return False
        if not isinstance(self.optimizer, (torch.optim.SGD, torch.optim.Adam)):
            log.warning("cuda_graphs: %s is not capturable here; training eagerly", type(self.optimizer).__name__)
            return False
        return True

    def key(self, batch: Batch) -> tuple:
        return (tuple(batch.hist.shape), batch.label is not None, batch.neg is not None,
                tuple(float(g["lr"]) for g in self.optimizer.param_groups))

    def step(self, batch: Batch) -> torch.Tensor | None:
        if not self.supported:
            return None
        key = self.key(batch)
        if key not in self.graphs:
            self.graphs[key] = self.capture(batch, key)
        entry = self.graphs[key]
        if entry is None:
            return None
        graph, static, loss = entry
        for name in TENSOR_FIELDS:
            src = getattr(batch, name)
            if src is not None:
                getattr(static, name).copy_(src, non_blocking=True)
        graph.replay()
        return loss.clone()

    def body(self, batch: Batch) -> torch.Tensor:
        """The step without zero_grad (the captured backward writes fresh gradients)."""
        with autocast(self.precision, batch.user.device):
            loss = self.model.loss(batch)
        loss.backward()
        if self.clip_norm:
            clip_grad_norm(self.params, self.clip_norm)
        self.optimizer.step()
        self.model.after_step()
        return loss.detach().float()

    def capture(self, batch: Batch, key: tuple) -> tuple | None:
        static = Batch(**{name: None if getattr(batch, name) is None else getattr(batch, name).clone()
                          for name in TENSOR_FIELDS}, mean_rows=batch.mean_rows)
        saved = self.snapshot()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self.optimizer.zero_grad(set_to_none=True)
                    self.body(static)
            torch.cuda.current_stream().wait_stream(side)
            self.restore(saved)
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                loss = self.body(static)
        except Exception as e:  # noqa: BLE001 - any capture failure: this shape trains eagerly
            torch.cuda.synchronize()
            self.restore(saved)
            self.optimizer.zero_grad(set_to_none=True)
            log.warning("cuda_graphs: capture of shape %s failed (%s: %s); that shape trains eagerly", key,
                        type(e).__name__, e)
            return None
        log.info("cuda_graphs: captured shape %s (%d graphs)", key, len(self.graphs) + 1)
        return graph, static, loss

    def snapshot(self) -> dict:
        state = {p: {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
                 for p, s in self.optimizer.state.items()}
        return {"tensors": [t.detach().clone() for t in (*self.model.parameters(), *self.model.buffers())],
                "optim": state, "rng": torch.cuda.get_rng_state()}

    @torch.no_grad()
    def restore(self, saved: dict) -> None:
        for t, v in zip((*self.model.parameters(), *self.model.buffers()), saved["tensors"]):
            t.copy_(v)
        for p, s in self.optimizer.state.items():
            before = saved["optim"].get(p)
            for k, v in s.items():
                if isinstance(v, torch.Tensor):  # no state before the warm-up: a fresh state is all zeros
                    v.copy_(before[k]) if before is not None and k in before else v.zero_()
        torch.cuda.set_rng_state(saved["rng"])
