"""The whole training step (runners/step/optim.train_step: forward, backward, clip, optimiser, after_step) captured
once per batch shape as a CUDA graph and replayed: at batch 32 an ATRank step is ~1,500 small kernels, bound by
launch latency when launched one by one. PREPARED, NOT YET RUN ON A GPU (docs/performance.md):
trainer.cuda_graphs=true turns it on, on CUDA only.

Shapes are (rows, width) of the batch; trainer.static_widths keeps the widths to a small fixed set, so an epoch
captures ~12 graphs (the epoch's short last batch gets one more). `prepare(batches)` captures every shape of an
epoch before its first timed step (distinct_shapes), so no capture falls inside a timed step. Capture follows
PyTorch's whole-network recipe: warm-up iterations on a side stream, `.grad` set to None before capture (the
captured backward writes fresh gradients, no accumulation). The warm-up steps really update the weights, so the
parameters, buffers, optimiser state and the RNG are saved before and restored after them: the captured step then
starts from exactly the weights eager training would have. Known constraints, each handled here:
- sparse embedding gradients cannot be captured: on CUDA sparse_grad=auto is dense (runners/step/optim.py);
- Adam needs `capturable=True` (its step counter on the device); set before the first step, and only when the
  step will be captured (capture_blocker finds nothing against it);
- a graph bakes in the learning rate of a plain-float lr: the lr is part of the shape key, so the lr decay step
  captures anew;
- Adagrad keeps a host-side step counter (not capturable): it stays eager, as does any step whose capture fails
  (a model with a host sync; tests/runners/step/test_capture_safety.py keeps every model free of them). A failure
  restores the stream that was current, the weights and the RNG, is counted (`outcomes()`) and logged as a
  WARNING naming the shape and the reason; that shape runs eagerly from then on.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import torch

from datasets.batch import Batch
from models.interface import SeqRecModel
from runners.step.optim import train_step

log = logging.getLogger(__name__)
TENSOR_FIELDS = ("user", "hist", "hist_time", "hist_rating", "mask", "lengths", "target", "label", "neg")
WARMUP_STEPS = 3
CAPTURABLE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam)


def capture_blocker(model: SeqRecModel, optimizer: torch.optim.Optimizer) -> str | None:
    """Why this model's step can never be captured (None: it can)."""
    if not model.cuda_graphs:
        return f"{model.name} cannot be captured: {model.cuda_graphs_note}"
    if any(getattr(m, "sparse", False) for m in model.modules()):
        return "sparse embedding gradients cannot be captured"
    if not isinstance(optimizer, CAPTURABLE_OPTIMIZERS):
        return f"{type(optimizer).__name__} keeps host-side state and is not capturable here"
    return None


def distinct_shapes(batches: Iterable[np.ndarray], width: Callable[[np.ndarray], int]) -> list[np.ndarray]:
    """One batch of each distinct (rows, width) shape among `batches`, in order of first appearance: the batches to
    capture before timing. `width(idx)` is the padded width the batch maker gives the batch of indices `idx`."""
    seen: dict[tuple[int, int], np.ndarray] = {}
    for idx in batches:
        seen.setdefault((len(idx), int(width(idx))), idx)
    return list(seen.values())


class CudaGraphSteps:
    """One captured graph per batch shape; `step(batch)` replays it (returns the loss tensor) or returns None when
    the shape runs eagerly. `outcomes()` counts what happened."""

    def __init__(self, model: SeqRecModel, optimizer: torch.optim.Optimizer, params: list,
                 clip_norm: float | None, precision: str):
        self.model, self.optimizer, self.params = model, optimizer, params
        self.clip_norm, self.precision = clip_norm, precision
        self.graphs: dict[tuple, tuple | None] = {}
        self.failures: list[str] = []
        self.replays = self.eager_steps = 0
        self.blocker = capture_blocker(model, optimizer)
        if self.blocker is not None:
            log.warning("cuda_graphs: %s; training eagerly", self.blocker)
        else:
            for g in optimizer.param_groups:
                if "capturable" in g:
                    g["capturable"] = True

    def key(self, batch: Batch) -> tuple:
        return (tuple(batch.hist.shape), batch.label is not None, batch.neg is not None,
                tuple(float(g["lr"]) for g in self.optimizer.param_groups))

    def outcomes(self) -> dict:
        """Captured / failed graphs, steps replayed and steps run eagerly, the failure reasons."""
        captured = sum(entry is not None for entry in self.graphs.values())
        return {"captured": captured, "failed": len(self.graphs) - captured, "replays": self.replays,
                "eager_steps": self.eager_steps, "blocker": self.blocker, "failures": list(self.failures)}

    def prepare(self, batch: Batch) -> None:
        """Capture `batch`'s shape now (outside any timed step) if it is not known yet; trains nothing."""
        if self.blocker is None and self.key(batch) not in self.graphs:
            self.graphs[self.key(batch)] = self.capture(batch, self.key(batch))

    def step(self, batch: Batch) -> torch.Tensor | None:
        if self.blocker is not None:
            self.eager_steps += 1
            return None
        self.prepare(batch)
        entry = self.graphs[self.key(batch)]
        if entry is None:
            self.eager_steps += 1
            return None
        graph, static, loss = entry
        for name in TENSOR_FIELDS:
            src = getattr(batch, name)
            if src is not None:
                getattr(static, name).copy_(src, non_blocking=True)
        graph.replay()
        self.replays += 1
        return loss.clone()

    def body(self, batch: Batch) -> torch.Tensor:
        """optim.train_step as captured: its zero_grad sets every .grad to None (the captured backward writes fresh
        gradients, no accumulation), and it reads nothing back to the host."""
        return train_step(self.model, self.optimizer, self.params, batch, self.clip_norm,
                          precision=self.precision, read_loss=False)

    def capture(self, batch: Batch, key: tuple) -> tuple | None:
        static = Batch(**{name: None if getattr(batch, name) is None else getattr(batch, name).clone()
                          for name in TENSOR_FIELDS}, mean_rows=batch.mean_rows)
        saved = self.snapshot()
        stream = torch.cuda.current_stream() if self.on_cuda() else None
        try:
            graph, loss = self.record(static, saved)
        except Exception as e:  # noqa: BLE001 - any capture failure: counted, logged, that shape trains eagerly
            self.recover(stream)
            self.restore(saved)
            self.optimizer.zero_grad(set_to_none=True)
            self.failures.append(f"shape {key}: {type(e).__name__}: {e}")
            log.warning("cuda_graphs: capture of shape %s failed (%s: %s); that shape trains eagerly", key,
                        type(e).__name__, e)
            return None
        log.info("cuda_graphs: captured shape %s (%d graphs)", key, len(self.graphs) + 1)
        return graph, static, loss

    def record(self, static: Batch, saved: dict) -> tuple:
        """Warm-up on a side stream, restore the weights, capture one step: (graph, its loss tensor)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.body(static)
        torch.cuda.current_stream().wait_stream(side)
        self.restore(saved)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # the warm-up's gradients freed before capture, not inside it
        with torch.cuda.graph(graph):
            loss = self.body(static)
        return graph, loss

    def on_cuda(self) -> bool:
        return any(p.is_cuda for p in self.model.parameters())

    @staticmethod
    def recover(stream) -> None:
        """After a failed capture: the stream current before it is current again (torch.cuda.graph's exit does not
        run when capture_end raises, which would leave the capture stream current for the rest of the process),
        and the device has finished whatever the attempt queued."""
        if stream is None:
            return
        if torch.cuda.current_stream() != stream:
            torch.cuda.set_stream(stream)
        try:
            torch.cuda.synchronize()
        except RuntimeError as e:  # an invalidated capture can poison the sync once; the failure is already counted
            log.warning("cuda_graphs: synchronize after the failed capture raised %s: %s", type(e).__name__, e)

    def snapshot(self) -> dict:
        state = {p: {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
                 for p, s in self.optimizer.state.items()}
        rng = torch.cuda.get_rng_state() if self.on_cuda() else torch.get_rng_state()
        return {"tensors": [t.detach().clone() for t in (*self.model.parameters(), *self.model.buffers())],
                "optim": state, "rng": rng}

    @torch.no_grad()
    def restore(self, saved: dict) -> None:
        for t, v in zip((*self.model.parameters(), *self.model.buffers()), saved["tensors"]):
            t.copy_(v)
        for p, s in self.optimizer.state.items():
            before = saved["optim"].get(p)
            for k, v in s.items():
                if isinstance(v, torch.Tensor):  # no state before the warm-up: a fresh state is all zeros
                    v.copy_(before[k]) if before is not None and k in before else v.zero_()
        if self.on_cuda():
            torch.cuda.set_rng_state(saved["rng"])
        else:
            torch.set_rng_state(saved["rng"])
