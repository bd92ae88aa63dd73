"""models/layers.py holds only blocks that two or more models share (a block one model alone uses lives in that
model's file), and its one time-encoding helper serves every one-hot time input."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from datasets.batch import N_TIME_BUCKETS
from models.layers import time_one_hot

MODELS = Path(__file__).resolve().parents[2] / "models"
NOT_MODELS = {"__init__.py", "layers.py", "interface.py", "registry.py"}


def layers_blocks() -> dict[str, set[str]]:
    """Each public top-level block of layers.py -> the other layers.py blocks whose bodies name it."""
    tree = ast.parse((MODELS / "layers.py").read_text())
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name[0] != "_"}
    return {name: {other for other, node in defs.items() if other != name and any(
        isinstance(x, ast.Name) and x.id == name for x in ast.walk(node))} for name in defs}


def model_files_importing(name: str) -> set[str]:
    """The model files (models/*.py) with `from models.layers import ... name ...`."""
    users = set()
    for path in MODELS.glob("*.py"):
        if path.name in NOT_MODELS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "models.layers" and \
                    any(a.name == name for a in node.names):
                users.add(path.name)
    return users


def test_every_block_of_layers_is_shared_by_two_models():
    blocks = layers_blocks()
    users = {name: model_files_importing(name) for name in blocks}
    for name, callers in blocks.items():  # a helper of another block serves that block's models too
        for caller in callers:
            users[name] |= users[caller]
    lonely = {name: sorted(u) for name, u in users.items() if len(u - {"behaviour_groups.py"}) < 2}
    assert not lonely, f"models/layers.py blocks used by fewer than two models (move them to their model): {lonely}"


@pytest.mark.parametrize("slots", [12, N_TIME_BUCKETS])
def test_time_one_hot_is_the_one_hot_of_both_former_spellings(slots):
    """ATRank's typed groups used nn.functional.one_hot(bucket, 13)[..., :slots]; the others compared against the
    slot indices: both are time_one_hot, with bucket 12 an all-zero row at the reference's 12 slots."""
    bucket = torch.arange(N_TIME_BUCKETS).repeat(2, 1)  # [2, 13]
    got = time_one_hot(bucket, slots, torch.float32)
    assert got.shape == (2, N_TIME_BUCKETS, slots) and got.dtype == torch.float32
    assert torch.equal(got, nn.functional.one_hot(bucket, N_TIME_BUCKETS)[..., :slots].float())
    assert torch.equal(got.sum(-1)[0], (torch.arange(N_TIME_BUCKETS) < slots).float())
