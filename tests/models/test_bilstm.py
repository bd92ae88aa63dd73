"""Bi-LSTM specifics: a small model learns a planted rule (the shared interface is in test_interface.py)."""
from __future__ import annotations

import pytest
import torch

from models.bilstm import BiLSTM
from tests.models.helpers import fit, one_thread, planted_batch, shape_kwargs  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0) -> BiLSTM:
    torch.manual_seed(seed)
    return BiLSTM(**shape_kwargs(), item_dim=8, cat_dim=8, hidden=12).eval()


def test_sgd_reduces_loss():
    model = make_model().train()
    first, last = fit(model, planted_batch(), torch.optim.SGD(model.parameters(), lr=0.5), steps=30, clip_norm=5.0)
    assert last < first - 0.1
