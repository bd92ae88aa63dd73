"""ATRank: an attention-based user behavior modeling framework (Zhou et al., AAAI 2018), Amazon setting.

Follows the official code (jinze1994/ATRank, atrank/model.py):
  behavior h_l = dense(item_emb ++ cate_emb ++ time one-hot -> 128), no activation       [B, L, 128]
  1 block: multi-head self-attention (8 heads, ReLU on Q/K/V, residual + layer norm) then feed-forward
           [32, 128] (residual + layer norm)                                               [B, L, 128]
  1 block: vanilla attention, query = target embedding t = item ++ cate (128), keys = the block above,
           same form, then feed-forward                                                    [B, C, 128]
  logit = b_t + <u, t>;  loss = mean sigmoid CE + l2_reg * (l2(u) + l2(t)), l2 = sum(x^2)/2 (tf.nn.l2_loss).

Time one-hot: `time_slots=13` (default) encodes all gap buckets 0..12; `time_slots=12` is the reference's
`one_hot(bucket, 12)`, where bucket 12 (gaps >= 4,096 days) becomes an all-zero vector.
Behaviour groups (`behavior_groups`):
- "one" (default): the Table 3 model above, items only, the target item ++ category unprojected.
- "typed": the paper's heterogeneous-behaviour framework, as the official multi/ model (models/behaviour_groups.py):
  a group is an object type (items; queries, coupons, brands, categories: the dataset's `behaviours` option,
  datasets/behaviour_sources.py), each with its own features from shared tables, the item group with an action
  embedding (the review's rating), its own projection to 128; all groups concatenated with their masks into ONE
  self-attention; the target projected by its group's layer (zeros for action and time) with its group's bias.
  `time_encoding`: onehot (the reference) or lookup (the slides' learned lookup_t). Loaded without groups
  (`behaviours: []`) it is the items-only variant (the reference's att-i2i).
- "rating": an ad-hoc split of the ONE item type into three groups by review rating ({1,2}, {3}, {4,5}; unknown
  joins the last), a Linear each, no action embedding, target unprojected. Not the paper's framework (which
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

import numpy as np
import torch
from torch import nn

from datasets.batch import N_TIME_BUCKETS, Batch
from models.behaviour_groups import GroupEncoders
from models.interface import PointwiseModel
from models.layers import (FeedForward, ItemCategoryEmbedding, KeyMask, MultiHeadAttention, l2_half_sum, one_hot,
                           tf_default_init_)
from models.registry import register

RATING_GROUP = torch.tensor([2, 0, 0, 1, 2, 2])  # rating 0 (unknown), 1..5 -> group


@register("atrank")
class ATRank(PointwiseModel):
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
        self.typed = None
        if behavior_groups == "typed":  # replaces the item embedding and the behaviour layer
            self.typed = GroupEncoders(n_items, n_categories, item_category, behaviours, item_dim, hidden,
                                       time_slots, time_encoding)
        else:
            self.n_groups = 1 if behavior_groups == "one" else 3
            self.items = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
            self.behavior = nn.ModuleList(nn.Linear(hidden + time_slots, hidden) for _ in range(self.n_groups))
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
        if self.typed is not None:
            h, mask = self.typed.history(batch)  # [B, L + sum Lg, 128]
        else:
            h, mask = self.behaviours(batch, hist_emb), batch.mask
        mask = KeyMask.of(mask)
        for att, ff in zip(self.self_att, self.self_ff):
            h = ff(att(h, h, mask))
        return h, mask

    def behaviours(self, batch: Batch, x: torch.Tensor | None = None) -> torch.Tensor:
        x = self.items(batch.hist) if x is None else x  # [B, L, 128]
        t = one_hot(batch.hist_time, self.time_slots, x.dtype)
        x = torch.cat([x, t], dim=-1)  # [B, L, 128 + slots]
        if self.n_groups == 1:
            h = self.behavior[0](x)  # [B, L, 128]
        else:
            group = self.rating_group[batch.hist_rating.clamp(0, 5)]  # [B, L]
            h = sum(proj(x) * (group == g).unsqueeze(-1) for g, proj in enumerate(self.behavior))
        return h

    def target_embedding(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target vectors [..., 128], target biases [...])."""
        if self.typed is not None:
            return self.typed.targets(items), self.typed.target_bias(items)
        return self.items(items), self.items.item_bias(items)

    def user_vectors(self, h: torch.Tensor, mask: KeyMask, target_emb: torch.Tensor) -> torch.Tensor:
        u = target_emb  # [B, C, 128]: each candidate is a query
        for att, ff in zip(self.target_att, self.target_ff):
            u = ff(att(u, h, mask))
        return u

    def logits_and_penalty(self, batch: Batch, candidates: torch.Tensor,
                           penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.typed is None:  # one lookup for the history and the candidates: fewer calls in a narrow step
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
