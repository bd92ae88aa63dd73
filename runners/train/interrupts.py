"""SIGTERM and SIGINT during a run: the MLflow run ends KILLED, with a log line and a checkpoint where one is due.

`closing_on_signals()` (runners/run.py, around the MLflow run) installs the handlers in the process and thread that
run the job, for the run's duration only. Inside the training loop (`deferred()`, runners/train/trainer.py) a signal
only marks the run as interrupted: the loop finishes the step it is in, writes a checkpoint if the run has periodic
checkpoints (`stop_if_interrupted`) and raises; a second signal, or one outside the loop, raises at once. SIGINT
raises KeyboardInterrupt (the interpreter then exits as killed by SIGINT); SIGTERM raises `Terminated`, which
runners/run.py turns into exit status 128 + 15.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(BaseException):
    """A run ended by a terminating signal (not an Exception: sweeps do not go on after it)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


_state: dict = {"owner": None, "deferring": 0, "pending": None}


def interruption(signum: int, where: str) -> BaseException:
    """The exception that ends a run interrupted by `signum`; `where` says where the run stood."""
    message = f"{signal.Signals(signum).name} {where}"
    return KeyboardInterrupt(message) if signum == signal.SIGINT else Terminated(signum, message)


def _handle(signum: int, frame) -> None:
    if os.getpid() != _state["owner"]:  # a process forked from the run's: the signal's default behaviour
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _state["deferring"] and _state["pending"] is None:
        _state["pending"] = signum
        log.warning("%s received: stopping after the current training step", signal.Signals(signum).name)
        return
    raise interruption(signum, "outside the training loop" if _state["pending"] is None else "received twice")


@contextmanager
def closing_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise (or, inside `deferred()`, stop the loop) while the block runs; the previous
    handlers come back after it. Outside the main thread nothing is installed (Python allows it only there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _state.update(owner=os.getpid(), deferring=0, pending=None)
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.update(owner=None, deferring=0, pending=None)


@contextmanager
def deferred() -> Iterator[None]:
    """Inside the training loop: a signal waits for `stop_if_interrupted` at the end of the current step. One still
    pending when the block ends (the loop finished first) is raised then."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    if _state["deferring"] == 0 and _state["pending"] is not None and os.getpid() == _state["owner"]:
        raise interruption(_state["pending"], "after the training loop")


def pending_signal() -> int | None:
    """The signal this process received and has not acted on yet (the training loop stops at its next step)."""
    return _state["pending"] if os.getpid() == _state["owner"] else None


def stop_if_interrupted(step: int, total: int, checkpoint: Callable[[], Path | None]) -> None:
    """Called between training steps: after a signal, `checkpoint()` (the path it wrote, or None when no checkpoint
    is due) and the interruption, raised with the step and the checkpoint in its message."""
    signum = _state["pending"]
    if signum is None or os.getpid() != _state["owner"]:
        return
    path = checkpoint()
    saved = f"checkpoint {path} written" if path else "no checkpoint (trainer.checkpoint_every=0)"
    raise interruption(signum, f"at step {step} of {total}; {saved}")
