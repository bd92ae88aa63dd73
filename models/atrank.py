"""ATRank: an attention-based user behavior modeling framework (Zhou et al., AAAI 2018), Amazon setting.

Follows the official code (jinze1994/ATRank, atrank/model.py). Shapes: B batch, L history, C candidates, D = 128.
  behaviour h_l = dense(item_emb ++ cate_emb ++ time one-hot -> 128), no activation          [B, L, 128]
  1 block: multi-head self-attention (8 heads, ReLU on Q/K/V, residual + layer norm) then feed-forward
           [32, 128] (residual + layer norm)                                                  [B, L, 128]
  1 block: vanilla attention, query = target embedding t = item ++ cate (128), keys = the block above,
           same form, then feed-forward                                                       [B, C, 128]
  logit = b_t + <u, t>;  loss = mean sigmoid CE + l2_reg * (l2(u) + l2(t)), l2 = sum(x^2)/2 (tf.nn.l2_loss):
  PointwiseModel.loss and l2_half_sum (models/interface.py).
This file reads top to bottom: the attention blocks (no other model uses them), then the model.

Names (a behaviour is one event of a history: an object, its features, its time gap; the paper's word):
- `behavior_groups` (the switch: config key and argument): how a history's behaviours are grouped, below.
- `behaviours` (the data: the dataset's extra behaviour groups, datasets/behaviours.Behaviours, given to the
  constructor); per batch their tensors are `batch.groups` (one GroupHistory each: objects, time, mask [B, Lg]).
- the group encoders (the modules that turn a group's behaviours into h_l): `group_layers` (one dense layer per
  group, for "one" and "rating") or `group_encoders` (GroupEncoders, for "typed": tables and a layer per type).
  `embed_history` gives h for "one" and "rating", `group_encoders.history` for "typed".

Time one-hot (layers.time_one_hot): `time_slots=13` (default) encodes all gap buckets 0..12; `time_slots=12` is the
reference's `one_hot(bucket, 12)`, where bucket 12 (gaps >= 4,096 days) becomes an all-zero vector.
The switch `behavior_groups`:
- "one" (default): the Table 3 model above, items only, the target item ++ category unprojected.
- "typed": the paper's heterogeneous-behaviour framework, as the official multi/ model (models/behaviour_groups.py):
  a group is an object type (items; queries, coupons, brands, categories: the dataset's `behaviours` option,
  datasets/behaviour_sources.py), each with its own features from shared tables, the item group with an action
  embedding (the review's rating), its own projection to 128; all groups concatenated with their masks into ONE
  self-attention; the target projected by its group's layer (zeros for action and time) with its group's bias.
  `time_encoding`: onehot (the reference) or lookup (the slides' learned lookup_t). Loaded without groups
  (`behaviours: []`) it is the items-only variant (the reference's att-i2i).
- "rating": an ad-hoc split of the ONE item type into three groups by review rating ({1,2}, {3}, {4,5}; unknown
  joins the last), a dense layer each, no action embedding, target unprojected. Not the paper's framework (which
  groups by object type); kept as a measured comparison.
Paired training rows (trainer.pair_rows, the default recipe): the history's self-attention block is computed once
per prefix and shared by its positive and negative rows; the vanilla attention (queried by the target) and the
L2 terms are per row, so the loss is that of the two separate rows. experiment=reference keeps separate rows.
Departures of "typed" from the reference's multi/ model: the time one-hot is `time_slots` wide (13 by default, as
above; 12 under experiment=reference), and a row's group history holds only events strictly before its target's
time (the reference's input files are pre-built, with no stated rule). The reference trains on targets of one
group per batch (item, query or coupon batches); here targets are items, the other groups' target projection
and bias exist (models/behaviour_groups.py) but no pipeline scores them yet.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from datasets.batch import N_TIME_BUCKETS, Batch
from models.behaviour_groups import GroupEncoders
from models.interface import PointwiseModel, host_shortcuts, l2_half_sum
from models.layers import ItemCategoryEmbedding, tf_default_init_, time_one_hot
from models.registry import register

RATING_GROUP = torch.tensor([2, 0, 0, 1, 2, 2])  # rating 0 (unknown), 1..5 -> group ("rating")


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
    """A key-padding mask prepared once for every attention over the same keys (the self and the vanilla
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
    """Multi-head attention: ReLU(dense) for Q, K and V, scaled dot product per head, key-padding mask,
    residual connection to the queries and layer norm. Padded keys never get weight; a query whose keys are all
    padding gets a zero context (then only the residual).

    The Q, K and V kernels are stored stacked: one [3D x D] product when the block attends over its own queries
    (`self_attention`, ATRank's history block: parameter `qkv`), else Q alone and K, V stacked (`q`, `kv`: the
    target attention). Same function and initial values as three separate layers (1.04x on narrow
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


@register("atrank")
class ATRank(PointwiseModel):
    """Modules in the order of the computation: the group encoders (`items` and `group_layers`, or
    `group_encoders`), `n_blocks` self-attention blocks over the history (`self_att`, `self_ff`), `n_blocks`
    vanilla-attention blocks queried by each candidate (`target_att`, `target_ff`)."""

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, hidden: int = 128, n_heads: int = 8, n_blocks: int = 1,
                 time_slots: int = N_TIME_BUCKETS, behavior_groups: str = "one", l2_reg: float = 5e-5,
                 dropout: float = 0.0, time_encoding: str = "onehot", behaviours=None):
        super().__init__()
        if item_dim + cat_dim != hidden:
            raise ValueError(f"item_dim + cat_dim ({item_dim}+{cat_dim}) must equal hidden ({hidden}): the "
                             "target embedding is the vanilla attention's query")
        if behavior_groups not in ("one", "rating", "typed"):
            raise ValueError(f"behavior_groups must be 'one', 'typed' or 'rating', got {behavior_groups!r}")
        self.n_items = n_items
        self.time_slots = time_slots
        self.group_encoders = None
        if behavior_groups == "typed":  # replaces the item embedding and the group layers
            self.group_encoders = GroupEncoders(n_items, n_categories, item_category, behaviours, item_dim, hidden,
                                                time_slots, time_encoding)
        else:
            self.items = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
            n_groups = 1 if behavior_groups == "one" else 3
            self.group_layers = nn.ModuleList(nn.Linear(hidden + time_slots, hidden) for _ in range(n_groups))
        self.self_att = nn.ModuleList(MultiHeadAttention(hidden, n_heads, dropout, self_attention=True)
                                      for _ in range(n_blocks))
        self.self_ff = nn.ModuleList(FeedForward(hidden) for _ in range(n_blocks))
        self.target_att = nn.ModuleList(MultiHeadAttention(hidden, n_heads, dropout) for _ in range(n_blocks))
        self.target_ff = nn.ModuleList(FeedForward(hidden) for _ in range(n_blocks))
        self.register_buffer("rating_group", RATING_GROUP.clone(), persistent=False)
        self.l2_reg = l2_reg
        tf_default_init_(self)

    def encode_history(self, batch: Batch, hist_emb: torch.Tensor | None = None) -> tuple[torch.Tensor, KeyMask]:
        """The self-attention blocks' output over the history and its key mask, prepared once for every attention
        over it (typed: all groups, concatenated). `hist_emb`: the history's item embeddings, if looked up already."""
        if self.group_encoders is not None:
            h, mask = self.group_encoders.history(batch)  # [B, L + sum Lg, 128]
        else:
            h, mask = self.embed_history(batch, hist_emb), batch.mask  # [B, L, 128]
        mask = KeyMask.of(mask)
        for att, ff in zip(self.self_att, self.self_ff):
            h = ff(att(h, h, mask))
        return h, mask

    def embed_history(self, batch: Batch, x: torch.Tensor | None = None) -> torch.Tensor:
        """The behaviour vectors h [B, L, 128] of "one" and "rating": each behaviour through its group's layer.
        `x`: the history's item embeddings [B, L, 128], if looked up already."""
        x = self.items(batch.hist) if x is None else x  # [B, L, 128]
        t = time_one_hot(batch.hist_time, self.time_slots, x.dtype)  # [B, L, slots]
        x = torch.cat([x, t], dim=-1)  # [B, L, 128 + slots]
        if len(self.group_layers) == 1:
            return self.group_layers[0](x)  # [B, L, 128]
        group = self.rating_group[batch.hist_rating.clamp(0, 5)]  # [B, L]
        return sum(layer(x) * (group == g).unsqueeze(-1) for g, layer in enumerate(self.group_layers))

    def target_embedding(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target vectors [..., 128], target biases [...])."""
        if self.group_encoders is not None:
            return self.group_encoders.targets(items), self.group_encoders.target_bias(items)
        return self.items(items), self.items.item_bias(items)

    def user_vectors(self, h: torch.Tensor, mask: KeyMask, target_emb: torch.Tensor) -> torch.Tensor:
        """The vanilla-attention blocks: u [B, C, 128], each candidate's view of the encoded history h."""
        u = target_emb  # [B, C, 128]: each candidate is a query
        for att, ff in zip(self.target_att, self.target_ff):
            u = ff(att(u, h, mask))
        return u

    def logits_and_penalty(self, batch: Batch, candidates: torch.Tensor,
                           penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.group_encoders is None:  # one lookup for the history and the candidates: fewer calls in a narrow step
            L = batch.hist.shape[1]
            emb = self.items(torch.cat([batch.hist, candidates], dim=1))  # [B, L + C, 128]
            h, mask = self.encode_history(batch, emb[:, :L])  # once per history, shared by its C candidates
            t, bias = emb[:, L:], self.items.item_bias(candidates)  # [B, C, 128], [B, C]
        else:
            h, mask = self.encode_history(batch)
            t, bias = self.target_embedding(candidates)
        u = self.user_vectors(h, mask, t)  # [B, C, 128]: each candidate is a query
        logits = bias + (u * t).sum(-1)  # [B, C]
        return logits, self.l2_reg * l2_half_sum(u, t) if penalty else None

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 2048) -> torch.Tensor:
        h, mask = self.encode_history(batch)  # computed once, then candidates in chunks (target-dependent attention)
        out = []
        for s in range(0, self.n_items, chunk):
            cands = torch.arange(s, min(s + chunk, self.n_items), device=h.device).expand(len(batch), -1)
            t, bias = self.target_embedding(cands)
            out.append(bias + (self.user_vectors(h, mask, t) * t).sum(-1))
        return torch.cat(out, dim=1)
