"""Bi-LSTM baseline of ATRank's Table 3 (Zhou et al., AAAI 2018; reference code: jinze1994/ATRank, `rnn/model.py`).

A bidirectional LSTM (128 units per direction) reads the history's item ++ category embeddings (64 + 64). The
forward output at the last real step ++ the backward output at step 0 (i.e. both directions' final states) go
through dense(256 -> 128) to give the user vector u; logit = item bias + <u, target item ++ category>.
Loss = mean sigmoid cross-entropy + l2_reg * (||u||^2 + ||target emb||^2) / 2 summed over the batch (as the reference).

Padding: the history is packed with its lengths, so padded slots are never read. Initialisation follows the
reference's TF1 defaults: glorot-uniform embeddings and dense kernels, zero dense bias, LSTM gate biases 0 with
the forget gate at 1 (TF's `forget_bias=1.0`; PyTorch's default U(+-1/sqrt(H)) LSTM kernels equal TF's glorot here).
Departures: a zero-length history (impossible for pointwise rows) gives zero final states instead of failing;
the reference's unused user-id embedding is left out; `dropout` (0 = reference) acts on the 256 states.
Gate biases: torch's LSTM keeps two trainable vectors per gate (bias_ih, bias_hh) where TF has one; by default
both train, so a gate bias moves at twice the rate and counts twice in the clip norm. Reference mode
(single_gate_bias=true) freezes bias_hh, which then holds TF's constant forget_bias of 1: TF's cell exactly.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch

from models.interface import UserVectorModel
from models.layers import ItemCategoryEmbedding, rnn_over_padded, tf_default_init_
from models.registry import register


def tf_lstm_init_(lstm: nn.LSTM, single_bias: bool = False) -> None:
    """Zero gate biases with the forget gate at 1, like TF1's LSTMCell (PyTorch gate order: i, f, g, o).

    torch's LSTM has two bias vectors per gate (bias_ih + bias_hh) where TF has one trainable bias plus a constant
    forget_bias of 1. Both trainable (the default) learn the gate bias at twice the rate and count it twice in the
    clip norm; single_bias=True freezes bias_hh, which then holds TF's constant forget_bias exactly."""
    for name, param in lstm.named_parameters():
        if name.startswith("bias"):
            nn.init.zeros_(param)
            if name.startswith("bias_hh"):
                param.data[lstm.hidden_size:2 * lstm.hidden_size] = 1.0
                param.requires_grad_(not single_bias)


@register("bilstm")
class BiLSTM(UserVectorModel):
    train_format = "pointwise"

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, hidden: int = 128, l2_reg: float = 5e-5,
                 dropout: float = 0.0, single_gate_bias: bool = False):
        super().__init__()
        self.n_items = n_items
        self.l2_reg = l2_reg
        self.emb = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
        self.lstm = nn.LSTM(self.emb.dim, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(2 * hidden, self.emb.dim)  # user vector lives in the target's space (128)
        tf_default_init_(self.dense)
        tf_lstm_init_(self.lstm, single_gate_bias)

    def user_vector(self, batch: Batch) -> torch.Tensor:
        x = self.emb(batch.hist)  # [B, L, 128]
        # as the LSTM over the packed history (rnn_over_padded); lengths >= 1, 0-length rows are zeroed below
        _, h_n = rnn_over_padded(self.lstm, x, batch.lengths.clamp(min=1))  # [2, B, hidden]: forward state at the
        # last real step, backward state at step 0
        h = torch.cat([h_n[0], h_n[1]], dim=-1)  # [B, 2 hidden]
        h = h.masked_fill((batch.lengths == 0)[:, None], 0.0)
        return self.dense(self.dropout(h))  # [B, 128]
