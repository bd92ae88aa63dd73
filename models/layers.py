"""Blocks that more than one model uses. Shapes: B batch, L history length, C candidates, D width."""
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


class LayerNorm(nn.Module):
    """Layer norm with the reference's epsilon (1e-8), learned gain and shift."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class MultiHeadAttention(nn.Module):
    """ATRank's multi-head attention: ReLU(dense) for Q, K and V, scaled dot product per head, key-padding mask,
    residual connection to the queries and layer norm. Padded keys never get weight; a query whose keys are all
    padding gets a zero context (then only the residual)."""

    def __init__(self, dim: int, n_heads: int = 8, dropout: float = 0.0):
        super().__init__()
        assert dim % n_heads == 0, f"dim {dim} must be divisible by n_heads {n_heads}"
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.n_heads = n_heads
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNorm(dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        # queries [N, Tq, D], keys [N, Tk, D], key_mask [N, Tk] (True = real)
        N, Tq, D = queries.shape
        h = self.n_heads
        q = torch.relu(self.q(queries)).view(N, Tq, h, D // h).transpose(1, 2)  # [N, h, Tq, D/h]
        k = torch.relu(self.k(keys)).view(N, -1, h, D // h).transpose(1, 2)  # [N, h, Tk, D/h]
        v = torch.relu(self.v(keys)).view(N, -1, h, D // h).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / (D // h) ** 0.5  # [N, h, Tq, Tk]
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # all-padding rows -> zeros
        context = (self.dropout(weights) @ v).transpose(1, 2).reshape(N, Tq, D)  # [N, Tq, D]
        return self.norm(context + queries)


class FeedForward(nn.Module):
    """Position-wise feed-forward [D -> D/4 (ReLU) -> D], residual and layer norm (the reference's [32, 128])."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.inner = nn.Linear(dim, hidden or dim // 4)
        self.outer = nn.Linear(hidden or dim // 4, dim)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.outer(torch.relu(self.inner(x))))


def l2_half_sum(*tensors: torch.Tensor) -> torch.Tensor:
    """sum(x^2) / 2 over all elements, like tf.nn.l2_loss (the reference's regulariser, summed over the batch)."""
    return sum((t.pow(2).sum() for t in tensors), torch.zeros(())) / 2


def tf_default_init_(module: nn.Module) -> nn.Module:
    """TensorFlow 1.x defaults, as the reference was trained with them: Glorot-uniform kernels, zero biases.

    (PyTorch's Linear/Conv default, U(+-1/sqrt(fan_in)), trains differently at the reference's SGD lr 1.0.)"""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
