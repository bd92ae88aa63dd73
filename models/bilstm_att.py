"""Bi-LSTM + Attention baseline of ATRank's Table 3 (Zhou et al., AAAI 2018; reference: jinze1994/ATRank,
`rnn_att/model.py`).

The Bi-LSTM of models/bilstm.py (128 per direction, packed so padding is never read) gives outputs o [B, L, 256].
The target embedding t (item ++ category, 128) attends over them with the reference's `vanilla_attention`, a plain
masked dot product with no projections (not atrank.MultiHeadAttention): the query is t tiled twice (t ++ t, 256)
to match o, logits = <t ++ t, o_l> / sqrt(256), padded steps masked, softmax over the real steps, pooled
= sum_l w_l o_l [256] -> dense 128 = user vector u (one per candidate). Logit = item bias + <u, t>.
Loss = mean sigmoid cross-entropy + l2_reg * (||u||^2 + ||t||^2) / 2 summed over the batch.

`score` runs the LSTM once per row and attends once per candidate ([B, C, L] weights); `full_scores` does the
same in chunks of the catalogue; a paired training batch (trainer.pair_rows) shares one LSTM pass between a
prefix's positive and negative rows, the attention and L2 terms stay per row. Initialisation: TF1 defaults as in models/bilstm.py.
Departures: the reference masks with -2^32+1, we use -inf (identical for any row with a real item; a zero-length
history gets a zero context instead of a uniform average over padding); `dropout` (0 = reference) acts on pooled.
Gate biases: torch's LSTM keeps two trainable vectors per gate (bias_ih, bias_hh) where TF has one; by default
both train, so a gate bias moves at twice the rate and counts twice in the clip norm. Reference mode
(single_gate_bias=true) freezes bias_hh, which then holds TF's constant forget_bias of 1: TF's cell exactly.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch
from models.bilstm import tf_lstm_init_
from models.interface import PointwiseModel, l2_half_sum
from models.layers import ItemCategoryEmbedding, rnn_over_padded, tf_default_init_
from models.registry import register


@register("bilstm_att")
class BiLSTMAttention(PointwiseModel):

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, hidden: int = 128, l2_reg: float = 5e-5,
                 dropout: float = 0.0, single_gate_bias: bool = False):
        super().__init__()
        assert 2 * hidden % (item_dim + cat_dim) == 0, "the query is the target tiled to the Bi-LSTM width"
        self.n_items = n_items
        self.l2_reg = l2_reg
        self.emb = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
        self.lstm = nn.LSTM(self.emb.dim, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(2 * hidden, self.emb.dim)
        tf_default_init_(self.dense)
        tf_lstm_init_(self.lstm, single_gate_bias)

    def encode(self, batch: Batch) -> torch.Tensor:
        x = self.emb(batch.hist)  # [B, L, 128]
        # as the LSTM over the packed history (rnn_over_padded); lengths >= 1, 0-length rows: masked in `attend`
        out, _ = rnn_over_padded(self.lstm, x, batch.lengths.clamp(min=1))  # [B, L, 2 hidden], 0 on padding
        return out

    def attend(self, outputs: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # outputs [B, L, H], mask [B, L], t [B, C, D] target embeddings -> user vectors [B, C, D]
        H = outputs.shape[-1]
        query = t.repeat(1, 1, H // t.shape[-1])  # [B, C, H]: t ++ t, as the reference's tf.tile
        logits = query @ outputs.transpose(1, 2) / H ** 0.5  # [B, C, L]
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # zero-length rows -> zero context
        pooled = weights @ outputs  # [B, C, H]
        return self.dense(self.dropout(pooled))  # [B, C, D]

    def logits_encoded(self, outputs: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor,
                       penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = self.emb(candidates)  # [B, C, D]
        u = self.attend(outputs, mask, t)  # [B, C, D]
        logits = self.emb.item_bias(candidates) + (u * t).sum(-1)  # [B, C]
        return logits, self.l2_reg * l2_half_sum(u, t) if penalty else None

    def logits_and_penalty(self, batch: Batch, candidates: torch.Tensor,
                           penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.logits_encoded(self.encode(batch), batch.mask, candidates, penalty)  # the LSTM once per row

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 1024) -> torch.Tensor:
        outputs = self.encode(batch)  # the LSTM runs once, the attention per chunk of items
        items = torch.arange(self.n_items, device=outputs.device)
        out = [self.logits_encoded(outputs, batch.mask, part.expand(len(batch), -1), False)[0] for part in items.split(chunk)]
        return torch.cat(out, dim=1)  # [B, N]
