"""GRU4Rec specifics: a small model learns a planted rule (the shared interface is in test_interface.py)."""
from __future__ import annotations

import pytest
import torch

from models.gru4rec import GRU4Rec
from tests.models.helpers import fit, planted_batch, shape_kwargs
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is far faster on a shared CPU


def make_model(seed: int = 0) -> GRU4Rec:
    torch.manual_seed(seed)
    return GRU4Rec(**shape_kwargs(), item_dim=8, cat_dim=8, hidden=12).eval()


def test_fits_a_planted_rule():
    model = make_model().train()
    first, last = fit(model, planted_batch(), torch.optim.Adam(model.parameters(), lr=0.02), steps=60)
    assert last < 0.5 * first
