"""Checkpoints of a training run: weights, optimiser, the loop's state and every random generator's state, so that
a run killed mid-training resumes bit-identically (runners/trainer.py decides when; this module only saves and
restores). The file is replaced atomically: a kill while saving leaves the previous checkpoint readable."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch

from datasets.atomic import atomic_path
from datasets.corrupt import READ_ERRORS, move_aside


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Write `state` (the training loop's, picklable) with the weights, the optimiser and the RNG states."""
    saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
             "rng_python": random.getstate(), "rng_numpy": np.random.get_state(), "rng_torch": torch.get_rng_state()}
    saved["sha256"] = digest(saved)
    with atomic_path(path) as tmp:
        torch.save(saved, tmp)


def digest(saved: dict) -> str:
    """sha256 over everything saved but the digest itself (tensor and array bytes, other values' repr): torch's
    zip reader does not check CRCs, so a flipped bit in the weights would otherwise load silently."""
    h = hashlib.sha256()

    def walk(x) -> None:
        if isinstance(x, torch.Tensor):
            h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        elif isinstance(x, np.ndarray):
            h.update(f"A{x.dtype}{x.shape}".encode() + np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                if k != "sha256":
                    h.update(f"K{k!r}".encode())
                    walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for v in x:
                walk(v)
        else:
            h.update(repr(x).encode())

    walk(saved)
    return h.hexdigest()


KEYS = ("model", "optimizer", "state", "rng_python", "rng_numpy", "rng_torch", "sha256")


class CorruptCheckpoint(RuntimeError):
    """A checkpoint that cannot be read; it has been moved aside (the message names the file and where it went)."""


def read_checkpoint(path: Path) -> dict:
    """The saved dict at `path`, checked for every key; a damaged file (truncated, flipped bits: torch's zip
    reader checks CRC-32, missing keys) is named in a warning, moved aside to `<name>.corrupt-<time>` and raised
    as CorruptCheckpoint, so that no rerun reads it again."""
    try:
        saved = torch.load(path, weights_only=False)
        missing = [k for k in KEYS if k not in saved] if isinstance(saved, dict) else list(KEYS)
        if missing:
            raise KeyError(f"missing {missing}")
        if saved["sha256"] != (got := digest(saved)):
            raise ValueError(f"sha256 of the contents is {got[:16]}..., expected {saved['sha256'][:16]}...")
        return saved
    except READ_ERRORS as e:
        moved = move_aside(path, e, "checkpoint")
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:300]}); moved "
                                f"aside to {moved}") from e


def usable_checkpoint(path: Path) -> bool:
    """Whether `path` exists and reads back whole; a damaged one is moved aside (warning) and counts as absent."""
    if not path.exists():
        return False
    try:
        read_checkpoint(path)
        return True
    except CorruptCheckpoint:
        return False


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the weights, the optimiser and the RNG states saved at `path`; returns the saved loop state."""
    saved = read_checkpoint(path)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    random.setstate(saved["rng_python"])
    np.random.set_state(saved["rng_numpy"])
    torch.set_rng_state(saved["rng_torch"])
    return saved["state"]
