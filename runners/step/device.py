"""Which accelerator a run uses (trainer.device) and with what arithmetic (trainer.precision).

`resolve_device("auto")` picks CUDA, else Apple's MPS, else the CPU; an explicit `cuda`, `cuda:N` or `mps` that
this process cannot use stops with what torch sees (its CUDA build, is_available, the device count, MPS), so a
CPU-only torch wheel or a hidden GPU is told apart at once. `device_info` is what MLflow records as tags.
"""
from __future__ import annotations

import contextlib

import torch

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"
PRECISIONS = ("fp32", "bf16")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def what_torch_sees() -> str:
    """One line: the torch build, its CUDA, whether CUDA is usable, how many GPUs, and MPS."""
    return (f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none, a CPU-only build'}); "
            f"torch.cuda.is_available()={torch.cuda.is_available()}, "
            f"torch.cuda.device_count()={torch.cuda.device_count() if torch.cuda.is_available() else 0}, "
            f"MPS available={_mps_available()}")


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """trainer.device -> torch.device. auto: CUDA (device 0), else MPS, else CPU. Raises RuntimeError (what torch
    sees) for a cuda / cuda:N / mps this process cannot use, ValueError for anything else."""
    text = "cpu" if spec is None else str(spec).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise RuntimeError(f"trainer.device=mps, but no MPS device is usable here: {what_torch_sees()}")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        index = 0 if text == "cuda" else text.split(":", 1)[1]
        if not str(index).isdigit():
            raise ValueError(f"trainer.device={spec!r}: expected {DEVICE_CHOICES}")
        if not torch.cuda.is_available():
            raise RuntimeError(f"trainer.device={spec}, but no CUDA GPU was found: {what_torch_sees()}. Use "
                               "trainer.device=cpu (or auto), or install a CUDA build of torch on a GPU machine")
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise RuntimeError(f"trainer.device={spec}, but only {count} CUDA device(s) are visible (cuda:0.."
                               f"cuda:{count - 1}; CUDA_VISIBLE_DEVICES may hide others): {what_torch_sees()}")
        return torch.device("cuda", int(index))
    raise ValueError(f"trainer.device={spec!r}: expected {DEVICE_CHOICES}")


def use_device(device: torch.device) -> torch.device:
    """Make `device` the current one where that matters: `cuda:N` calls torch.cuda.set_device(N), so kernels, the
    caching allocator and CUDA graphs of this process use that GPU (not GPU 0) wherever a tensor is made without
    an explicit device. Returns `device`."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """fp32 anywhere; bf16 (torch.autocast) on CUDA only: on the CPU it is refused rather than silently slower
    and different (CPU bf16 autocast is not what the CPU figures were measured with)."""
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type != "cuda":
        raise ValueError(f"trainer.precision=bf16 runs under torch.autocast on a CUDA device only; this run's "
                         f"device is {device}. Use trainer.precision=fp32 (or trainer.device=cuda on a GPU)")


def autocast(precision: str, device: torch.device):
    """bf16: torch.autocast on CUDA (check_precision refuses it elsewhere); fp32: nothing. The cast cache is off:
    PyTorch requires that for autocast inside a CUDA graph capture (runners/step/cuda_graphs.py)."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def device_info(device: torch.device) -> dict[str, str]:
    """MLflow tags of the device: its name, torch's version and the CUDA / cuDNN versions torch runs with."""
    info = {"device": str(device), "torch_version": torch.__version__,
            "cuda_version": str(torch.version.cuda or "none"),
            "cudnn_version": str(torch.backends.cudnn.version() or "none")
            if torch.backends.cudnn.is_available() else "none"}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        info["device_name"] = "Apple MPS"
    else:
        import platform

        info["device_name"] = platform.processor() or platform.machine() or "cpu"
    return info


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing on an accelerator); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_device_mb(device: torch.device) -> float | None:
    """Peak memory allocated on a CUDA device by this process (MB); None elsewhere."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
