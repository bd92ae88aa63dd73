"""How torch's idle OpenMP threads wait: the part of the thread policy that must be set before torch loads.

libgomp (torch's OpenMP runtime on Linux) reads OMP_WAIT_POLICY once, when it is loaded by `import torch`. Its
default spins a thread that waits at a barrier for up to ~300k iterations; with every core given a thread and one
other busy process on the machine, the spinning threads take the CPU from the one they wait for, and ATRank on
`sample` ran 3.6x slower (docs/performance.md). PASSIVE puts waiting threads to sleep instead. It changes where
the CPU goes, never what is computed (the thread count, which changes float summation order, is
trainer.num_threads, recorded and hashed). Standard library only: runners/run.py and runners/bench.py call it
before their heavy imports; a variable already in the environment wins.
"""
from __future__ import annotations

import os
import sys

DEFAULT = "PASSIVE"  # the training processes' OMP_WAIT_POLICY unless the environment sets one
NOT_APPLIED = "not applied: torch was loaded first"

_in_effect: str | None = None  # what libgomp was loaded with in this process, as far as set_wait_policy knows


def set_wait_policy(environ: os._Environ | dict = os.environ, modules: dict | None = None) -> str:
    """OMP_WAIT_POLICY=DEFAULT for this process and its children unless already set; returns the policy this
    process's torch runs with (NOT_APPLIED when torch was imported before the call, so libgomp read no value)."""
    global _in_effect
    loaded = "torch" in (sys.modules if modules is None else modules)
    environ.setdefault("OMP_WAIT_POLICY", DEFAULT)
    if _in_effect is None:
        _in_effect = NOT_APPLIED if loaded else environ["OMP_WAIT_POLICY"]
    return _in_effect


def wait_policy_in_effect() -> str:
    """The value recorded with each run (its `omp_wait_policy` tag): libgomp's default where nobody set one."""
    return _in_effect or os.environ.get("OMP_WAIT_POLICY") or "unset (libgomp's default: spin, then sleep)"
