"""DIN, Deep Interest Network (Zhou et al., KDD 2018), a peer model outside ATRank's Table 3
(authors' code: zhougr1993/DeepInterestNetwork, `din/model.py`, run on this same Amazon Electronics split; its
~0.88 GAUC on that split is the figure DIN is usually quoted with).

Default: the paper's architecture.

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

Reference mode (experiment=reference: `reference_params` in conf/model/din.yaml) is the authors' Amazon model,
`din/model.py` (its train.py imports that file; model_dice.py is the Dice variant of the top MLP only):
- attention="softmax": activation unit dense 80 -> 40 -> 1 with SIGMOID over [t, h, t - h, t * h]
  (att_order="reference"), padded slots set to -2^32 + 1, the weights scaled by 1/sqrt(128) and soft-maxed;
- frozen_bn=true: tf.layers.batch_normalization called without `training=True`, so it always runs on its initial
  moving statistics (mean 0, variance 1, eps 1e-3): each batch norm is a learned per-feature affine map
  gamma * x / sqrt(1 + 1e-3) + beta. One on the pooled vector, then pooled_dense=128 (dense, no activation), one on
  [pooled, t] before the top MLP;
- activation="sigmoid", mlp_hidden=[80, 40]: the top MLP dense 80 -> 40 -> 1, sigmoid, then + the item bias
  (initialised 0, as here);
- the same loss (mean sigmoid cross-entropy, no L2), SGD lr 1.0, batch 32, global-norm clip 5, lr 0.1 later.
What stays different: the authors' code pads histories with item 0 (a real item), whose embedding then enters the
activation unit (masked out of the softmax, as here); its user embedding table exists but is never used (left out).
Not implemented in either mode: the paper's mini-batch aware regulariser (l2_reg is the suite's plain option).

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
from models.interface import PointwiseModel, host_shortcuts, l2_half_sum
from models.layers import ItemCategoryEmbedding, tf_default_init_
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
        if self.training and mask is not None and not host_shortcuts(x.device):
            mean, var = self.masked_statistics(x, mask)
        elif self.training:
            rows = x.reshape(-1, x.shape[-1]) if mask is None else x[mask]  # [N, D]
            if rows.shape[0] > 0:
                mean, var = rows.mean(0), rows.var(0, unbiased=False)
                with torch.no_grad():
                    self.running_mean.lerp_(mean, self.momentum)
                    self.running_var.lerp_(var, self.momentum)
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))
        return p * x + (1 - p) * self.alpha * x


    def masked_statistics(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch mean and (biased) variance over the real rows as masked sums, with the running statistics'
        update: fixed shapes and no host read (the accelerators' path; x[mask] has a data-dependent shape). With
        no real row: the running statistics, not updated."""
        w = mask.reshape(-1, 1).to(x.dtype)  # [N, 1]
        rows = x.reshape(-1, x.shape[-1])  # [N, D]
        n = w.sum()
        some = n > 0
        mean = (rows * w).sum(0) / n.clamp(min=1)
        var = ((rows - mean) ** 2 * w).sum(0) / n.clamp(min=1)
        with torch.no_grad():
            step = self.momentum * some.to(x.dtype)
            self.running_mean.lerp_(mean, step)
            self.running_var.lerp_(var, step)
        return torch.where(some, mean, self.running_mean), torch.where(some, var, self.running_var)


class Sigmoid(nn.Module):
    """The reference's activation; takes (and ignores) Dice's mask so that both fit one call."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(x)


class FrozenBatchNorm(nn.Module):
    """tf.layers.batch_normalization outside training mode: initial moving statistics (0, 1), so an affine map."""

    def __init__(self, dim: int, eps: float = 1e-3):
        super().__init__()
        self.gamma, self.beta = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
        self.scale = (1.0 + eps) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * (x * self.scale) + self.beta


@register("din")
class DIN(PointwiseModel):

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, att_hidden: tuple[int, ...] = (80, 40),
                 mlp_hidden: tuple[int, ...] = (200, 80), activation: str = "dice", l2_reg: float = 0.0,
                 dropout: float = 0.0, attention: str = "unnormalised", att_order: str = "paper",
                 frozen_bn: bool = False, pooled_dense: int | None = None):
        super().__init__()
        assert len(att_hidden) >= 1, "the activation unit needs at least one hidden layer"
        if activation not in ("dice", "prelu", "sigmoid"):
            raise ValueError(f"activation must be 'dice', 'prelu' or 'sigmoid', not {activation!r}")
        assert attention in ("unnormalised", "softmax") and att_order in ("paper", "reference")
        self.n_items, self.l2_reg, self.attention, self.att_order = n_items, l2_reg, attention, att_order
        self.emb = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
        D = self.emb.dim

        def act(n: int) -> nn.Module:
            return Sigmoid() if activation == "sigmoid" else Dice(n, adaptive=activation == "dice")

        att_sizes = [4 * D, *att_hidden]
        self.att = nn.ModuleList(nn.Linear(a, b) for a, b in zip(att_sizes, att_sizes[1:]))
        self.att_act = nn.ModuleList(act(n) for n in att_hidden)
        self.att_out = nn.Linear(att_sizes[-1], 1)
        self.pooled_norm = FrozenBatchNorm(D) if frozen_bn else nn.Identity()
        self.pooled_dense = nn.Linear(D, pooled_dense) if pooled_dense else nn.Identity()
        U = pooled_dense or D
        self.top_norm = FrozenBatchNorm(U + D) if frozen_bn else nn.Identity()
        mlp_sizes = [U + D, *mlp_hidden]
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(mlp_sizes, mlp_sizes[1:]))
        self.mlp_act = nn.ModuleList(act(n) for n in mlp_hidden)
        self.mlp_out = nn.Linear(mlp_sizes[-1], 1)
        self.dropout = nn.Dropout(dropout)
        tf_default_init_(self)  # TF1 defaults, as the reference (embeddings: glorot in ItemCategoryEmbedding)

    def attention_weights(self, h: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # h [B, L, D] history, mask [B, L], t [B, C, D] candidates -> weights [B, C, L]
        first = self.att[0]
        if self.att_order == "paper":  # blocks for [h, t, h - t, h * t]: [A, D] each
            W_h, W_t, W_d, W_p = first.weight.split(h.shape[-1], dim=1)
            W_hh, W_tt = W_h + W_d, W_t - W_d
        else:  # the authors' [t, h, t - h, t * h]
            W_t, W_h, W_d, W_p = first.weight.split(h.shape[-1], dim=1)
            W_hh, W_tt = W_h - W_d, W_t + W_d
        a = ((h @ W_hh.T)[:, None]  # [B, 1, L, A]
             + (t @ W_tt.T + first.bias)[:, :, None]  # [B, C, 1, A]
             + (t[:, :, None] * h[:, None]) @ W_p.T)  # [B, C, L, A]
        real = mask[:, None, :].expand(a.shape[:-1])  # [B, C, L]
        a = self.att_act[0](a, real)
        for layer, act in zip(self.att[1:], self.att_act[1:]):
            a = act(layer(a), real)  # [B, C, L, A']
        logits = self.att_out(a).squeeze(-1)  # [B, C, L]
        if self.attention == "unnormalised":  # the paper: a_l used as they are, padding 0
            return logits.masked_fill(~real, 0.0)
        scaled = logits.masked_fill(~real, float("-inf")) / h.shape[-1] ** 0.5
        return torch.softmax(scaled, dim=-1).nan_to_num(0.0)  # an empty history pools nothing

    def logits_encoded(self, h: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor,
                       penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = self.emb(candidates)  # [B, C, D]
        pooled = self.attention_weights(h, mask, t) @ h  # [B, C, D]: weighted sum pooling
        u = self.pooled_dense(self.pooled_norm(pooled))  # reference: affine, dense 128; paper: identity
        z = self.top_norm(torch.cat([u, t], dim=-1))  # [B, C, U + D]
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
