"""Process-wide settings of a training process: torch threads, denormal flushing, glibc allocator tuning, seeding,
and the peak-memory reading. runners/run.py, runners/bench.py and the data-parallel helpers all start this way."""
from __future__ import annotations

import contextlib
import os
import random
import resource
from collections.abc import Iterator

import numpy as np
import torch

# glibc allocator settings for training processes (runners/run.py applies them at start-up, runners/bench.py sets
# them as environment variables of its children; both mean the same to glibc). Each step allocates and frees
# activation buffers of 0.1-30 MB; with the defaults, blocks above the (adaptive) mmap threshold come from fresh
# mmap calls and freed heap tops are trimmed, so the kernel zero-fills the same pages again every step. A 32 MB
# mmap threshold (glibc's maximum), no trimming below 1 GB and 256 MB of heap growth at a time keep those pages.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30, "MALLOC_TOP_PAD_": 256 << 20}
_MALLOPT_PARAM = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3}  # malloc.h


def tune_malloc(settings: dict[str, int] = MALLOC_TUNING) -> dict[str, int]:
    """Apply MALLOC_TUNING to this process with mallopt(3) (a variable already in the environment wins: glibc read it
    at start-up) and export it, so child processes start with it. Returns what was applied; {} off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    applied = {}
    for name, value in settings.items():
        if name not in os.environ and mallopt(_MALLOPT_PARAM[name], int(value)) == 1:
            os.environ[name] = str(value)
            applied[name] = int(value)
    return applied


def configure_runtime(num_threads: int | None, flush_denormal: bool = True) -> None:
    """Process-wide settings of a training process:
    - torch's intra-op thread count (None: torch's default, one per core);
    - flush denormal floats to zero (CPU FTZ/DAZ), as TensorFlow does in its CPU kernels (so the reference ran that
      way). Values below 1.2e-38 become 0; gradients that vanish through long recurrences otherwise fall into
      x86's slow denormal path (GRU4Rec trains 1.8x faster with it; docs/performance.md)."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
    torch.set_flush_denormal(flush_denormal)


@contextlib.contextmanager
def all_threads() -> Iterator[None]:
    """Every core for torch while the block runs (rank 0 evaluating while the other workers wait)."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's generators (initial weights, dropout, sampled negatives)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class NoBar:
    """tqdm's interface, doing nothing (where tqdm is not installed)."""

    def __init__(self, *args, **kwargs):
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
