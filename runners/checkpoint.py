"""Checkpoints of a training run: weights, optimiser, the loop's state and every random generator's state, so that
a run killed mid-training resumes bit-identically (runners/trainer.py decides when; this module only saves and
restores). The file is replaced atomically: a kill while saving leaves the previous checkpoint readable."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from datasets.atomic import atomic_path


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Write `state` (the training loop's, picklable) with the weights, the optimiser and the RNG states."""
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                    "rng_python": random.getstate(), "rng_numpy": np.random.get_state(),
                    "rng_torch": torch.get_rng_state()}, tmp)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the weights, the optimiser and the RNG states saved at `path`; returns the saved loop state."""
    saved = torch.load(path, weights_only=False)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    random.setstate(saved["rng_python"])
    np.random.set_state(saved["rng_numpy"])
    torch.set_rng_state(saved["rng_torch"])
    return saved["state"]
