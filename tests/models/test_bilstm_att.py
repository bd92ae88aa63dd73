"""Bi-LSTM + Attention specifics: scores equal a hand-written vanilla attention; a small model learns a planted rule."""
from __future__ import annotations

import pytest
import torch

from models.bilstm_att import BiLSTMAttention
from tests.models.helpers import (fit, one_thread, planted_batch, random_batch, random_candidates,  # noqa: F401
                                  shape_kwargs)

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0) -> BiLSTMAttention:
    torch.manual_seed(seed)
    return BiLSTMAttention(**shape_kwargs(), item_dim=8, cat_dim=8, hidden=16).eval()


def test_attention_is_the_reference_vanilla_attention():
    model, batch = make_model(), random_batch()
    cands = random_candidates(batch)
    outputs, scores = model.encode(batch), model.score(batch, cands)  # [B, L, 32], [B, C]
    for b in range(len(batch)):
        n = int(batch.lengths[b])
        for c in range(cands.shape[1]):
            t = model.emb(cands[b, c])  # [16]
            w = torch.softmax(outputs[b, :n] @ torch.cat([t, t]) / 32 ** 0.5, dim=0)  # real steps only
            u = model.dense(w @ outputs[b, :n])
            expected = model.emb.item_bias(cands[b, c]) + u @ t
            assert torch.allclose(scores[b, c], expected, atol=1e-5)


def test_sgd_reduces_loss():
    model = make_model().train()
    first, last = fit(model, planted_batch(), torch.optim.SGD(model.parameters(), lr=0.5), steps=30, clip_norm=5.0)
    assert last < first - 0.1
