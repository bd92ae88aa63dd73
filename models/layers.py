"""Blocks that two or more models share; a block one model alone uses lives in that model's file (ATRank's
attention blocks are in models/atrank.py). Shapes: B batch, L history length, C candidates, D width."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.interface import category_buffer


class ItemCategoryEmbedding(nn.Module):
    """Item embedding ++ its category's embedding (64 + 64 = 128 in the reference), plus a per-item bias."""

    def __init__(self, n_items: int, n_categories: int, item_category: np.ndarray, item_dim: int = 64,
                 cat_dim: int = 64, init_std: float | None = None):
        super().__init__()
        self.item = nn.Embedding(n_items, item_dim)
        self.category = nn.Embedding(n_categories, cat_dim)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.bias.weight)
        for table in (self.item, self.category):  # TF's get_variable default (the reference), unless a std is given
            nn.init.normal_(table.weight, std=init_std) if init_std is not None else nn.init.xavier_uniform_(table.weight)
        self.register_buffer("item_category", category_buffer(item_category), persistent=False)
        self.dim = item_dim + cat_dim

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., item_dim + cat_dim]
        return torch.cat([self.item(items), self.category(self.item_category[items])], dim=-1)

    def item_bias(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [...]
        return self.bias(items).squeeze(-1)

    def all_items(self) -> torch.Tensor:  # [n_items, item_dim + cat_dim]
        return torch.cat([self.item.weight, self.category(self.item_category)], dim=-1)


def time_one_hot(bucket: torch.Tensor, slots: int, dtype: torch.dtype) -> torch.Tensor:
    """Time-gap buckets [...] -> [..., slots] one-hot of `dtype` (ATRank, CNN). `slots` below the number of buckets
    is the reference's one_hot(bucket, 12): buckets >= slots (gaps of 4,096 days or more) give all zeros. Compares
    against the slot indices: no range check that reads `bucket` back on the host."""
    return (bucket[..., None] == torch.arange(slots, device=bucket.device)).to(dtype)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first lengths[b] steps in reverse order, padding left in place: x [B, L, ...] (an involution)."""
    B, L = x.shape[:2]
    t = torch.arange(L, device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # [B, L]
    return x.gather(1, idx.view(B, L, *[1] * (x.dim() - 2)).expand_as(x))


def rnn_over_padded(rnn: nn.LSTM | nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What `rnn` computes on pack_padded_sequence(x, lengths) (batch_first, lengths >= 1), from the right-padded x:
    (outputs [B, L, dirs * H], zero on padding, as pad_packed_sequence; h_n [dirs, B, H] of the last layer: the
    forward state after each row's last real step and, if bidirectional, the backward state at step 0).

    Same parameters and function, computed faster on CPU: the packed kernel's backward costs O(L^2) (each step's
    slice of the input gradient is written into a zero-filled full-size tensor: 2-4 s per batch of 32 x 350 items,
    ~20x this). A forward pass over right padding is exact on the real steps (padding only comes after them); the
    backward direction runs forward over each row's reversed real steps. Falls back to packing where that does not
    hold (bidirectional with several layers, dropout between layers in training, LSTM projections)."""
    dirs = 2 if rnn.bidirectional else 1
    if (dirs == 2 and rnn.num_layers > 1) or (rnn.dropout and rnn.training) or getattr(rnn, "proj_size", 0):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = rnn(packed)
        h_n = h_n[0] if isinstance(h_n, tuple) else h_n  # LSTM: (h, c)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, h_n[-dirs:]
    B, L, _ = x.shape
    last = (lengths - 1)[:, None, None].expand(B, 1, rnn.hidden_size)  # [B, 1, H]
    real = (torch.arange(L, device=x.device)[None, :] < lengths[:, None])[..., None]  # [B, L, 1]
    outs, finals = [], []
    for d, sfx in enumerate(["", "_reverse"][:dirs]):
        params = [getattr(rnn, f"{w}_l{k}{sfx}") for k in range(rnn.num_layers)
                  for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias or w.startswith("weight")]
        h0 = x.new_zeros(rnn.num_layers, B, rnn.hidden_size)
        inp = x if d == 0 else reverse_padded(x, lengths)
        if isinstance(rnn, nn.LSTM):
            out = torch.lstm(inp, (h0, h0), params, rnn.bias, rnn.num_layers, 0.0, rnn.training, False, True)[0]
        else:
            out = torch.gru(inp, h0, params, rnn.bias, rnn.num_layers, 0.0, rnn.training, False, True)[0]
        finals.append(out.gather(1, last)[:, 0])  # [B, H]: state after the row's last real step
        outs.append(out if d == 0 else reverse_padded(out, lengths))
    out = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
    return out * real, torch.stack(finals)


def tf_default_init_(module: nn.Module) -> nn.Module:
    """TensorFlow 1.x defaults, as the reference was trained with them: Glorot-uniform kernels, zero biases.

    (PyTorch's Linear/Conv default, U(+-1/sqrt(fan_in)), trains differently at the reference's SGD lr 1.0.)"""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            for kernel in m.weight.data.chunk(getattr(m, "blocks", 1)):  # a layer of stacked kernels (`blocks`,
                nn.init.xavier_uniform_(kernel)  # atrank.StackedLinear): block by block, as separate layers
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
