"""Checkpoints of a training run: weights, optimiser, the loop's state and every random generator's state, so that
a run killed mid-training resumes bit-identically (runners/train/trainer.py decides when; this module only saves and
restores). The file is replaced atomically: a kill while saving leaves the previous checkpoint readable.

A checkpoint lives in a cache another user may write to, so reading it never runs code from it: the file is one
header line (`seqrec-checkpoint 2 sha256=<hex>`) and a torch.save payload holding only tensors and plain types;
the payload's sha256 is checked before it is unpickled, and it is unpickled with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import random
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from datasets.atomic import atomic_write_bytes
from datasets.corrupt import READ_ERRORS, move_aside
from runners.train.evaluation import EvalOutcome

MAGIC = b"seqrec-checkpoint 2 sha256="
KEYS = ("model", "optimizer", "state", "rng_python", "rng_numpy", "rng_torch")


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Write `state` (the training loop's: tensors, numpy arrays and scalars, EvalOutcome, plain types) with the
    weights, the optimiser and the RNG states."""
    saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": to_plain(state),
             "rng_python": python_rng_state(), "rng_numpy": numpy_rng_state(), "rng_torch": torch.get_rng_state()}
    buf = io.BytesIO()
    torch.save(saved, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def to_plain(x):
    """`x` with numpy arrays and EvalOutcomes as tagged dicts of tensors and numpy scalars as python ones: what
    torch.load(weights_only=True) reads back (from_plain undoes it, bit for bit)."""
    if isinstance(x, EvalOutcome):
        return {"__eval_outcome__": {f.name: to_plain(getattr(x, f.name)) for f in fields(x)}}
    if isinstance(x, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(x).copy())}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_plain(v) for v in x)
    if x is None or isinstance(x, (torch.Tensor, bool, int, float, str)):
        return x
    raise TypeError(f"checkpoint state: cannot store a {type(x).__name__} as tensors and plain types")


def from_plain(x):
    """The value to_plain was given."""
    if isinstance(x, dict):
        if set(x) == {"__eval_outcome__"}:
            return EvalOutcome(**{k: from_plain(v) for k, v in x["__eval_outcome__"].items()})
        if set(x) == {"__ndarray__"}:
            return x["__ndarray__"].numpy()
        return {k: from_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(from_plain(v) for v in x)
    return x


def python_rng_state() -> dict:
    version, internal, gauss_next = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next}


def numpy_rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_rng_states(saved: dict) -> None:
    py, npy = saved["rng_python"], saved["rng_numpy"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(saved["rng_torch"])


class CorruptCheckpoint(RuntimeError):
    """A checkpoint that cannot be read; it has been moved aside (the message names the file and where it went)."""


def load_verified(path: Path) -> dict:
    """The saved dict at `path`: header and sha256 checked before anything is unpickled, then unpickled with
    weights_only=True and checked for every key. Raises ValueError (or OSError) saying what is wrong; moves
    nothing (read_checkpoint does)."""
    data = Path(path).read_bytes()
    head, newline, payload = data.partition(b"\n")
    if not (head.startswith(MAGIC) and newline):
        what = ("an old-format checkpoint (a bare torch.save file, written before checkpoints were verified before "
                "loading)" if data[:4] == b"PK\x03\x04" else "not a checkpoint")
        raise ValueError(f"{what}: no '{MAGIC.decode()}' header; not loaded")
    expected, got = head[len(MAGIC):].decode("ascii", "replace"), hashlib.sha256(payload).hexdigest()
    if got != expected:
        raise ValueError(f"sha256 of the contents is {got[:16]}..., the header says {expected[:16]}...; not loaded")
    try:
        saved = torch.load(io.BytesIO(payload), weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError("holds objects other than tensors and plain types (torch.load weights_only=True "
                         f"refused it: {str(e).splitlines()[0][:160]})") from e
    missing = [k for k in KEYS if k not in saved] if isinstance(saved, dict) else list(KEYS)
    if missing:
        raise KeyError(f"missing {missing}")
    return saved


def read_checkpoint(path: Path) -> dict:
    """load_verified's dict; a damaged, foreign or old-format file (truncated, flipped bits, no header, a wrong
    sha256, objects weights_only refuses, missing keys) is named in a warning, moved aside to
    `<name>.corrupt-<time>` and raised as CorruptCheckpoint, so that no rerun reads it again."""
    try:
        return load_verified(path)
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
    set_rng_states(saved)
    return from_plain(saved["state"])
