"""Blocks that more than one model uses. Shapes: B batch, L history length, C candidates, D width."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch
from models.interface import PointwiseModel, category_buffer, host_shortcuts


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


class LayerNorm(nn.Module):
    """Layer norm with the reference's epsilon (1e-8), learned gain and shift."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the functional call: one module call less per norm
        n = self.norm
        return nn.functional.layer_norm(x, n.normalized_shape, n.weight, n.bias, n.eps)


@dataclass(frozen=True)
class KeyMask:
    """A key-padding mask prepared once for every attention over the same keys (ATRank's self and target
    attention share it). A row whose keys are all padding attends over all its slots (a finite softmax) and its
    context is zeroed: the same values as masking with -inf and replacing the NaN rows by zeros, without NaNs in
    backward."""

    allowed: torch.Tensor  # [N, 1, 1, Tk] bool: keys a query may attend to
    has_key: torch.Tensor | None  # [N] rows with a real key; None when every row has one

    @classmethod
    def of(cls, key_mask: torch.Tensor) -> KeyMask:
        """From key_mask [N, Tk] (True = real)."""
        has_key = key_mask.any(-1)  # [N]
        # the shortcut reads a value back: on the CPU only (on an accelerator a host sync per call, and no CUDA
        # graph could capture it); the general path gives the same values when every row has a key
        if host_shortcuts(key_mask.device) and bool(has_key.all()):
            return cls(key_mask[:, None, None, :], None)
        return cls((key_mask | ~has_key[:, None])[:, None, None, :], has_key)


def one_hot(x: torch.Tensor, slots: int, dtype: torch.dtype) -> torch.Tensor:
    """[..., slots] of `dtype`: 1 where x equals the slot's index (values >= slots give all zeros). As
    nn.functional.one_hot(x, n)[..., :slots], without its range check, which reads x back on the CPU."""
    return (x[..., None] == torch.arange(slots, device=x.device)).to(dtype)


class StackedLinear(nn.Linear):
    """`blocks` dense layers of one input, their kernels stacked along the output: one matrix product instead of
    `blocks` (fewer calls in a narrow step). Initialised block by block (tf_default_init_), as separate layers."""

    def __init__(self, in_features: int, out_features: int, blocks: int):
        super().__init__(in_features, blocks * out_features)
        self.blocks = blocks

    def block(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel and bias of block i (views)."""
        n = self.out_features // self.blocks
        return self.weight[i * n:(i + 1) * n], self.bias[i * n:(i + 1) * n]


class MultiHeadAttention(nn.Module):
    """ATRank's multi-head attention: ReLU(dense) for Q, K and V, scaled dot product per head, key-padding mask,
    residual connection to the queries and layer norm. Padded keys never get weight; a query whose keys are all
    padding gets a zero context (then only the residual).

    The Q, K and V kernels are stored stacked: one [3D x D] product when the block attends over its own queries
    (`self_attention`, ATRank's history block: parameter `qkv`), else Q alone and K, V stacked (`q`, `kv`: the
    target attention). Same function and initial values as three separate layers (stacked: 1.04x faster on narrow
    steps)."""

    def __init__(self, dim: int, n_heads: int = 8, dropout: float = 0.0, self_attention: bool = False):
        super().__init__()
        assert dim % n_heads == 0, f"dim {dim} must be divisible by n_heads {n_heads}"
        self.self_attention = self_attention
        if self_attention:
            self.qkv = StackedLinear(dim, dim, 3)
        else:
            self.q = nn.Linear(dim, dim)
            self.kv = StackedLinear(dim, dim, 2)
        self.n_heads = n_heads
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNorm(dim)

    def kernel(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the "q", "k" or "v" projection (views of the stacked parameters)."""
        if self.self_attention:
            return self.qkv.block("qkv".index(name))
        return (self.q.weight, self.q.bias) if name == "q" else self.kv.block("kv".index(name))

    def projections(self, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """ReLU(dense) Q [N, Tq, D], K and V [N, Tk, D]."""
        if self.self_attention:
            if keys is not queries:
                raise ValueError("a self-attention block (self_attention=True) attends over its own queries")
            return torch.relu(self.qkv(queries)).chunk(3, dim=-1)
        k, v = torch.relu(self.kv(keys)).chunk(2, dim=-1)
        return torch.relu(self.q(queries)), k, v

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | KeyMask) -> torch.Tensor:
        # queries [N, Tq, D], keys [N, Tk, D], key_mask [N, Tk] (True = real) or prepared (KeyMask.of)
        mask = key_mask if isinstance(key_mask, KeyMask) else KeyMask.of(key_mask)
        N, Tq, D = queries.shape
        h = self.n_heads
        q, k, v = (x.view(N, -1, h, D // h).transpose(1, 2) for x in self.projections(queries, keys))  # [N, h, T, D/h]
        if self.training and self.dropout.p > 0:  # dropout on the weights: spelled out (SDPA's dropout differs)
            logits = (q @ k.transpose(-1, -2) / (D // h) ** 0.5).masked_fill(~mask.allowed, float("-inf"))
            context = self.dropout(torch.softmax(logits, dim=-1)) @ v  # [N, h, Tq, D/h]
        else:  # fused softmax(q k^T / sqrt(D/h) + mask) v: no [N, h, Tq, Tk] intermediates kept for backward
            context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.allowed)
        if mask.has_key is not None:
            context = context * mask.has_key[:, None, None, None]
        return self.norm(context.transpose(1, 2).reshape(N, Tq, D) + queries)  # [N, Tq, D]


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
    total = tensors[0].pow(2).sum()
    total = total.to(torch.promote_types(total.dtype, torch.float32))  # as a float32 zero start would (bf16 in)
    for t in tensors[1:]:
        total = total + t.pow(2).sum()
    return total / 2


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
            for kernel in m.weight.data.chunk(m.blocks) if isinstance(m, StackedLinear) else [m.weight]:
                nn.init.xavier_uniform_(kernel)  # a stacked layer's blocks as separate layers (same draws)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class UserVectorModel(PointwiseModel):
    """A model whose user vector does not depend on the candidate: logit = b_i + <u, e_i>, e_i = item ++ category.

    Subclasses set `self.emb` (ItemCategoryEmbedding), `self.n_items`, `self.l2_reg` and define
    `user_vector(batch) -> [B, D]`. The loss is the reference's: mean sigmoid cross-entropy + l2_reg * (l2(u) +
    l2(e_target)), l2 = sum(x^2)/2 over the training rows. Scoring C candidates reuses one user vector per row (a
    paired training batch encodes each history once for its positive and its negative; u counts once per row in
    the L2, as when the two rows were separate), and the full catalogue is one matmul.
    """

    def user_vector(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def logits_and_penalty(self, batch: Batch, candidates: torch.Tensor,
                           penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        u = self.user_vector(batch)  # [B, D], shared by the C candidates
        t = self.emb(candidates)  # [B, C, D]
        logits = self.emb.item_bias(candidates) + torch.einsum("bd,bcd->bc", u, t)  # [B, C]
        if not penalty:
            return logits, None
        return logits, self.l2_reg * l2_half_sum(u[:, None].expand_as(t), t)

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 0) -> torch.Tensor:
        return self.user_vector(batch) @ self.emb.all_items().T + self.emb.bias.weight.T  # [B, n_items]
