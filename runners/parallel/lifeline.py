"""Worker processes that must not outlive their parent: torchrun's ranks and the data-parallel helpers.

Linux's PR_SET_PDEATHSIG asks the kernel to signal a process when its parent ends, so kill -9 of the parent (which
runs no handler) still ends its workers at once. Standard library only: runners/run.py and runners/data_parallel.py
call it before their heavy imports (torch, MLflow, Hydra take seconds on a busy machine, and a parent killed in
that time would otherwise leave an orphan training on). The race where the parent dies before the call is caught by
comparing the parent pid afterwards with the one expected.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHANED_EXIT = 1  # exit status of a process whose parent was already gone
TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")  # what torchrun's agent sets in a rank's environment

_guarded_parent: int | None = None  # the parent this process already dies with


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """PR_SET_PDEATHSIG for this process; False where the platform has no prctl (the caller's check still runs)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl(PR_SET_PDEATHSIG, {int(sig)}) failed")
    return True


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> bool:
    """This process gets `sig` when process `parent_pid` (its parent) ends; if the parent is gone already (this
    process was re-parented before the call took effect), it exits at once with ORPHANED_EXIT. Returns whether the
    kernel took the request (False off Linux). The signal follows the parent *thread* that started this process:
    start workers from a thread that lives as long as they should."""
    global _guarded_parent
    if _guarded_parent == parent_pid:
        return True
    armed = set_parent_death_signal(sig)
    if os.getppid() != parent_pid:  # checked after the prctl: a parent ending now signals us, one gone already not
        os._exit(ORPHANED_EXIT)
    _guarded_parent = parent_pid
    return armed


def launched_by_torchrun(environ: os._Environ | dict = os.environ) -> bool:
    """Whether torchrun's agent started this process (its rank variables are set)."""
    return all(k in environ for k in TORCHRUN_KEYS)


def torchrun_rank_dies_with_parent(parent_pid: int | None = None, environ: os._Environ | dict = os.environ) -> None:
    """A torchrun rank dies with torchrun's agent, its parent (torchrun starts ranks in sessions of their own, so
    kill -9 of torchrun would orphan them). Call first thing: the parent is read here, and a parent that already
    died left this process to init (pid 1), which is refused as orphaned. Outside torchrun: nothing."""
    if not launched_by_torchrun(environ):
        return
    parent = os.getppid() if parent_pid is None else parent_pid
    if parent == 1:
        os._exit(ORPHANED_EXIT)
    die_with_parent(parent)
