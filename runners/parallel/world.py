"""Where this process stands in a torchrun launch, read from its environment (standard library only), so that
runners/config.py can check trainer.processes without importing the training stack (runners/parallel/torchrun.py
serves the ranks)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class TorchrunWorld:
    rank: int
    world: int


def torchrun_world(environ: Mapping[str, str] = os.environ) -> TorchrunWorld | None:
    """This process's place in a torchrun (env://) launch of more than one process; None outside one."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    world = int(environ["WORLD_SIZE"])
    if world <= 1:
        return None
    local = int(environ.get("LOCAL_WORLD_SIZE", world))
    if local != world:
        raise RuntimeError(f"torchrun started {world} processes on {world // max(local, 1)} nodes: a data-parallel "
                           "run here needs one host (shared-memory gradients); use --nnodes 1")
    return TorchrunWorld(int(environ["RANK"]), world)


def check_processes(processes: int, environ: Mapping[str, str] = os.environ) -> None:
    """Under torchrun, trainer.processes must name the processes torchrun started (it is part of the config and
    its hash); refuse anything else before any work is done."""
    world = torchrun_world(environ)
    if world is not None and processes != world.world:
        raise ValueError(f"torchrun started {world.world} processes (--nproc-per-node), but trainer.processes="
                         f"{processes}: set trainer.processes={world.world}")
