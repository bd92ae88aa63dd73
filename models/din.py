"""DIN, Deep Interest Network (Zhou et al., KDD 2018), a peer model outside ATRank's Table 3
(reference code: zhougr1993/DeepInterestNetwork, `din/model_dice.py`, run on this same Amazon Electronics split).

Embeddings as the other models: item 64 ++ category 64 = 128, for the history h_l and the candidate t.
- Activation unit: MLP over [h_l, t, h_l - t, h_l * t] (512 -> 80 -> 40 -> 1, Dice) gives a weight a_l per history
  item; as the paper says, the weights are NOT normalised (no softmax), padded slots get weight 0, and
  pooled = sum_l a_l h_l [128].
- Top MLP over pooled ++ t (256 -> 200 -> 80 -> 1, Dice; one logit is the paper's 2-way softmax); logit = that
  output + item bias (as the reference code).
  User features: Amazon has no user profile, so the attention-pooled history is the only user-side input (the
  reference code does the same; no user-id embedding).
Loss = mean sigmoid cross-entropy (+ l2_reg * (||pooled||^2 + ||t||^2) / 2 summed over the batch; default 0, as
the reference code, which has no L2).

Dice (paper eq. 9): p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + 1e-8)), f(s) = p(s) s + (1 - p(s)) alpha s, with E and
Var the mini-batch statistics in training (over real history slots only, so padding changes nothing) and running
averages (momentum 0.1) in eval(). Hence in training mode a row's score depends on its batch, as with batch norm;
evaluate in eval(). `activation: "prelu"` is the paper's PReLU (Dice with p(s) = 1[s > 0]).

Departures from the reference code (which follows the paper less closely): it softmax-normalises and scales the
attention weights, uses sigmoid in the activation unit, adds batch norm + dense 128 after pooling and batch norm
before an 80-40 top MLP, and its Dice has an extra learned scale; we follow the paper in all of these. Not
implemented: the paper's mini-batch aware regulariser (l2_reg above is the suite's plain option). Training recipe:
SGD lr 1.0, batch 32, clip 5, lr 0.1 from step 336,000, as the reference (and this split's other models).

Efficiency: the first activation-unit layer is split by blocks of its weight, W [h, t, h-t, h*t] =
(W_h + W_d) h + (W_t - W_d) t + W_p (h * t), so only the [B, C, L, 128] product is built per candidate, not the
[B, C, L, 512] concat (same function, same parameters). A paired training batch (trainer.pair_rows) embeds a
prefix's history once for its positive and negative rows; Dice's batch statistics run over the same real
(row, history slot) pairs as with separate rows, so the loss is unchanged. `full_scores` chunks the catalogue to bound memory.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch
from models.interface import PointwiseModel
from models.layers import ItemCategoryEmbedding, l2_half_sum, tf_default_init_
from models.registry import register


class Dice(nn.Module):
    """Data-adaptive activation of DIN; with adaptive=False it is PReLU. Normalises over the last axis' features,
    using only the rows where `mask` is True for the batch statistics."""

    def __init__(self, dim: int, adaptive: bool = True, eps: float = 1e-8, momentum: float = 0.1):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(dim))
        self.adaptive, self.eps, self.momentum = adaptive, eps, momentum
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x [..., D], mask [...] (True = real row) or None
        if not self.adaptive:
            return torch.where(x > 0, x, self.alpha * x)
        mean, var = self.running_mean, self.running_var
        if self.training:
            rows = x.reshape(-1, x.shape[-1]) if mask is None else x[mask]  # [N, D]
            if rows.shape[0] > 0:
                mean, var = rows.mean(0), rows.var(0, unbiased=False)
                with torch.no_grad():
                    self.running_mean.lerp_(mean, self.momentum)
                    self.running_var.lerp_(var, self.momentum)
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))
        return p * x + (1 - p) * self.alpha * x


@register("din")
class DIN(PointwiseModel):

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, att_hidden: tuple[int, ...] = (80, 40),
                 mlp_hidden: tuple[int, ...] = (200, 80), activation: str = "dice", l2_reg: float = 0.0,
                 dropout: float = 0.0):
        super().__init__()
        assert len(att_hidden) >= 1, "the activation unit needs at least one hidden layer"
        if activation not in ("dice", "prelu"):
            raise ValueError(f"activation must be 'dice' or 'prelu', not {activation!r}")
        self.n_items = n_items
        self.l2_reg = l2_reg
        self.emb = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
        D, adaptive = self.emb.dim, activation == "dice"
        att_sizes = [4 * D, *att_hidden]
        self.att = nn.ModuleList(nn.Linear(a, b) for a, b in zip(att_sizes, att_sizes[1:]))
        self.att_act = nn.ModuleList(Dice(n, adaptive) for n in att_hidden)
        self.att_out = nn.Linear(att_sizes[-1], 1)
        mlp_sizes = [2 * D, *mlp_hidden]
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(mlp_sizes, mlp_sizes[1:]))
        self.mlp_act = nn.ModuleList(Dice(n, adaptive) for n in mlp_hidden)
        self.mlp_out = nn.Linear(mlp_sizes[-1], 1)
        self.dropout = nn.Dropout(dropout)
        tf_default_init_(self)  # TF1 defaults, as the reference (embeddings: glorot in ItemCategoryEmbedding)

    def attention_weights(self, h: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # h [B, L, D] history, mask [B, L], t [B, C, D] candidates -> un-normalised weights [B, C, L]
        first = self.att[0]
        W_h, W_t, W_d, W_p = first.weight.split(h.shape[-1], dim=1)  # blocks for h, t, h - t, h * t: [A, D] each
        a = ((h @ (W_h + W_d).T)[:, None]  # [B, 1, L, A]
             + (t @ (W_t - W_d).T + first.bias)[:, :, None]  # [B, C, 1, A]
             + (t[:, :, None] * h[:, None]) @ W_p.T)  # [B, C, L, A]
        real = mask[:, None, :].expand(a.shape[:-1])  # [B, C, L]
        a = self.att_act[0](a, real)
        for layer, act in zip(self.att[1:], self.att_act[1:]):
            a = act(layer(a), real)  # [B, C, L, A']
        return self.att_out(a).squeeze(-1).masked_fill(~real, 0.0)  # [B, C, L]

    def logits_encoded(self, h: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor,
                       penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = self.emb(candidates)  # [B, C, D]
        pooled = self.attention_weights(h, mask, t) @ h  # [B, C, D]: weighted sum pooling
        z = torch.cat([pooled, t], dim=-1)  # [B, C, 2D]
        for layer, act in zip(self.mlp, self.mlp_act):
            z = self.dropout(act(layer(z)))  # [B, C, M]
        logits = self.emb.item_bias(candidates) + self.mlp_out(z).squeeze(-1)  # [B, C]
        if not penalty:
            return logits, None
        return logits, self.l2_reg * l2_half_sum(pooled, t) if self.l2_reg else logits.new_zeros(())

    def logits_and_penalty(self, batch: Batch, candidates: torch.Tensor,
                           penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.logits_encoded(self.emb(batch.hist), batch.mask, candidates, penalty)  # history embedded once

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int | None = None) -> torch.Tensor:
        h = self.emb(batch.hist)  # [B, L, D], embedded once
        B, L, D = h.shape
        chunk = chunk or max(1, 2 ** 24 // (B * max(L, 1) * D))  # bounds the [B, C, L, D] product (64 MB)
        items = torch.arange(self.n_items, device=h.device)
        out = [self.logits_encoded(h, batch.mask, part.expand(B, -1), False)[0] for part in items.split(chunk)]
        return torch.cat(out, dim=1)  # [B, N]
