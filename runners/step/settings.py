"""The settings a training run takes (TrainSettings: plain values, from runners/config.py) and their checks.

Apart from the loop (runners/train/trainer.py) so that validating a config and typing the device path need neither
the loop nor its imports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from runners.step.optim import OPTIMIZERS


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
    bucket_chunk: int = 1024  # batches per chunk sorted by history length (datasets/batching.batch_order)
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
    initial_accumulator: float = 0.0  # Adagrad's starting sum of squares (the model yaml's, reference mode's)
    device: str = "cpu"  # auto | cpu | cuda | cuda:N | mps (runners/step/device.resolve_device)
    precision: str = "fp32"  # fp32 | bf16 (autocast, CUDA only)
    device_batches: str | bool = "auto"  # batches built on the device from resident rows; auto = off on the CPU
    static_widths: str | bool = "auto"  # widths rounded up to a fixed set (datasets/device_batches); auto = CUDA
    cuda_graphs: str | bool = False  # CUDA only: the step replayed as a CUDA graph per shape (step/cuda_graphs.py)
    replicate_width: str | int = "auto"  # data-parallel: batches at most this wide are computed whole by every worker


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
    if not isinstance(s.bucket_chunk, int) or s.bucket_chunk < 1:
        problems.append(f"trainer.bucket_chunk must be an integer >= 1, got {s.bucket_chunk!r}")
    if s.replicate_width != "auto" and not (isinstance(s.replicate_width, int) and s.replicate_width >= 0):
        problems.append(f"trainer.replicate_width must be auto or an integer >= 0, got {s.replicate_width!r}")
    if problems:
        raise ValueError("invalid training settings:\n  " + "\n  ".join(problems))
