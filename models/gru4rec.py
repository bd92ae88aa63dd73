"""GRU4Rec: a GRU over the history, its last state is the user vector.

Hidasi, Karatzoglou, Baltrunas, Tikk, "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016
(and Hidasi & Karatzoglou, "Recurrent Neural Networks with Top-k Gains for Session-based Recommendations",
CIKM 2018, for BPR-max).

    input:  e_t = item embedding ++ category embedding of history item t      (64 + 64 = 128, the suite's input)
    GRU:    h_t = GRU(e_t, h_{t-1}), h_0 = 0, over the real steps only (pack_padded_sequence with the lengths)
    user:   u = W h_{len-1} + b                                               (dense hidden -> 128, Glorot init)
    score:  s(item) = <u, item ++ category embedding> + item bias

Departures from the paper (the suite's adaptation to the ATRank protocol):
- The original trains on session-parallel mini-batches (one GRU step per event, hidden state carried across the
  batch's sessions) with ranking losses over in-batch negatives (TOP1, BPR, later BPR-max), and scores with the
  GRU's output layer. Here every model sees the same (history, target, label) rows: train_format "pointwise" with
  sigmoid cross-entropy against one sampled negative, the whole history re-encoded per row.
- Input is item ++ category embeddings (the original uses one-hot or an item embedding only) and the output side
  shares that same table (the original has a separate output layer), like the Table 3 models.
- `W` maps the state into the item space, as the Bi-LSTM's dense 128. The GRU keeps PyTorch's initialisation
  (the original: uniform in +-sqrt(6 / (fan_in + fan_out))). Dropout on the GRU input is optional (0 by default).
- L2: `l2_reg` x tf.nn.l2_loss of the user vectors and target embeddings, summed over the batch, is the Table 3
  models' regulariser (reference 5e-5), not the original's.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch

from models.interface import UserVectorModel
from models.layers import ItemCategoryEmbedding, rnn_over_padded, tf_default_init_
from models.registry import register


@register("gru4rec")
class GRU4Rec(UserVectorModel):
    train_format = "pointwise"

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, hidden: int = 128, n_layers: int = 1,
                 dropout: float = 0.0, l2_reg: float = 5e-5):
        super().__init__()
        self.n_items = n_items
        self.l2_reg = l2_reg
        self.emb = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(self.emb.dim, hidden, num_layers=n_layers, batch_first=True)
        self.out = tf_default_init_(nn.Linear(hidden, self.emb.dim))  # Glorot, as the Table 3 models' dense

    def user_vector(self, batch: Batch) -> torch.Tensor:  # -> [B, D]
        x = self.dropout(self.emb(batch.hist))  # [B, L, D]
        # as the GRU over the packed history (rnn_over_padded); rows with no history (never in pointwise rows) run
        # one padded step and are zeroed below, so padding never reaches a score.
        _, h_n = rnn_over_padded(self.gru, x, batch.lengths.clamp(min=1))  # [1, B, H]: after the last real step
        u = self.out(h_n[-1])  # [B, D]
        return u * (batch.lengths > 0).unsqueeze(-1).to(u.dtype)
