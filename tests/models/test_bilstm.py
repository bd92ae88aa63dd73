"""Bi-LSTM specifics: a small model learns a planted rule (the shared interface is in test_interface.py)."""
from __future__ import annotations

import pytest
import torch

from models.bilstm import BiLSTM
from tests.models.helpers import fit, one_thread, planted_batch, random_batch, shape_kwargs  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0) -> BiLSTM:
    torch.manual_seed(seed)
    return BiLSTM(**shape_kwargs(), item_dim=8, cat_dim=8, hidden=12).eval()


def test_sgd_reduces_loss():
    model = make_model().train()
    first, last = fit(model, planted_batch(), torch.optim.SGD(model.parameters(), lr=0.5), steps=30, clip_norm=5.0)
    assert last < first - 0.1


def test_single_gate_bias_trains_one_bias_per_gate_as_tf():
    """torch's LSTM has bias_ih and bias_hh; both get the same gradient, so by default a gate bias moves twice as
    fast. single_gate_bias (reference mode) freezes bias_hh at TF's constant forget_bias (0, 1, 0, 0 per gate)."""
    batch = random_batch()
    grads = {}
    for single in (False, True):
        torch.manual_seed(0)
        model = BiLSTM(**shape_kwargs(), item_dim=8, cat_dim=8, hidden=6, single_gate_bias=single).train()
        model.loss(batch).backward()
        grads[single] = {n: p.grad for n, p in model.lstm.named_parameters()}
        hh = model.lstm.bias_hh_l0.detach()
        assert hh[:6].eq(0).all() and hh[6:12].eq(1).all() and hh[12:].eq(0).all()
    assert torch.equal(grads[False]["bias_ih_l0"], grads[False]["bias_hh_l0"])  # the double rate
    assert grads[False]["bias_ih_l0"].abs().sum() > 0
    assert grads[True]["bias_hh_l0"] is None and grads[True]["bias_hh_l0_reverse"] is None
    assert torch.allclose(grads[True]["bias_ih_l0"], grads[False]["bias_ih_l0"])  # the same function
