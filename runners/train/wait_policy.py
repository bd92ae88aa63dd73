"""How torch's idle OpenMP threads wait, as recorded with each run: the part of the thread policy that is fixed
before torch loads.

libgomp (torch's OpenMP runtime on Linux) reads OMP_WAIT_POLICY once, when `import torch` loads it. Its default
spins a waiting thread for up to ~300k iterations, then sleeps. With two threads on two cores that is the fastest
setting on a quiet machine and the slowest beside one other busy process (ATRank on `sample`, Intel Xeon: 7,873
ex/s quiet, 662 busy; OMP_WAIT_POLICY=PASSIVE: 4,254 quiet, 5,168 busy; one thread: 5,900 and 5,867:
docs/performance.md, "Busy machines"). The suite therefore trains on one thread per process by default
(trainer.num_threads, recorded and hashed) and leaves the wait policy to the environment; each run records the
policy its torch was loaded with (the `omp_wait_policy` tag). The policy changes where CPU time goes, never what is
computed. Standard library only: runners/run.py and runners/bench.py call it before their heavy imports.
"""
from __future__ import annotations

import os
import sys

LIBGOMP_DEFAULT = "unset (libgomp's default: spin, then sleep)"
NOT_APPLIED = "unknown: torch was loaded first"

_in_effect: str | None = None  # what libgomp was loaded with in this process, as far as record_wait_policy knows


def record_wait_policy(environ: os._Environ | dict = os.environ, modules: dict | None = None) -> str:
    """Remember the OMP_WAIT_POLICY this process's torch is loaded with (call it before `import torch`; the first
    call counts); returns it (NOT_APPLIED when torch was imported before the first call)."""
    global _in_effect
    if _in_effect is None:
        loaded = "torch" in (sys.modules if modules is None else modules)
        _in_effect = NOT_APPLIED if loaded else (environ.get("OMP_WAIT_POLICY") or LIBGOMP_DEFAULT)
    return _in_effect


def wait_policy_in_effect() -> str:
    """The value recorded with each run (its `omp_wait_policy` tag)."""
    return _in_effect or os.environ.get("OMP_WAIT_POLICY") or LIBGOMP_DEFAULT
