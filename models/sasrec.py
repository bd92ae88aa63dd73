"""SASRec: causal self-attention over the item sequence, the output at step t predicts item t + 1.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (authors' code: kang205/SASRec).

    E_t = M[s_t] * sqrt(d) + P[pos_t]                 item embedding (shared with the output) + learned position
    block(x): x = x + Dropout(SA(LN(x)));  x = x + Dropout(FFN(LN(x)))    the paper's g(x) = x + Dropout(g(LN(x)))
    SA = softmax(Q K^T / sqrt(d) + causal mask) V,  Q, K, V = LN(x) W^{Q,K,V};  FFN = act(x W1 + b1) W2 + b2
    F = LN(block_b(...block_1(Dropout(E))))           final layer norm as in the authors' code
    r(i, t) = <F_t, M_i>                              score of item i as the next item after step t

Training (train_format "sequence"): a row's `hist` is the user's whole training sequence s_0..s_{n-1}; inputs are
s_0..s_{n-2} (the last `max_len` of them), and at every step t the positive s_{t+1} is scored. `loss` (each is a
mean over the real steps of the batch, padding masked out; s+ = <F_t, M_{s_{t+1}}>, s- = a negative's score):
- bce (the default, the paper's): -log sigmoid(s+) - log(1 - sigmoid(s-)) with one negative per step drawn
  uniformly with torch's RNG; negatives that are any item of the row's sequence are redrawn (up to `neg_rounds`
  rounds, vectorised; a draw still colliding after that is accepted), as the authors' `random_neq`.
- ce: full softmax cross-entropy over the whole catalogue, -log softmax(F_t M^T)[s_{t+1}], no negative sampled
  (Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023).
- gbce: gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023; asash/gSASRec-pytorch gbce.py): k =
  `gbce_negatives` negatives per step drawn uniformly over the catalogue with no redraw (as that code), alpha =
  k / (n_items - 1), beta = alpha * (t * (1 - 1/alpha) + 1/alpha) with t = `gbce_t`, and per step
  (-log sigmoid(s+)^beta - sum_j log(1 - sigmoid(s-_j))) / (k + 1), in float64 (that code's mean over the k + 1
  scores of each step; its precision). Departure: that code's alpha is k / (pool_size - 1) with pool_size =
  n_items - 1, i.e. k / (n_items - 2); the paper's k / (|I| - 1) is used here.

Padding. Rows are RIGHT-padded (real items first). Position ids are right-aligned, pos_t = t + max_len - length,
so the most recent item always gets the last position embedding, exactly as the authors' left-padded sequences.
The attention mask lets query t see key j only if j <= t (causal) and j is real; with right padding every key
j <= t of a real query t is real, so padding never reaches a real position. Padded queries may also see
themselves (keeps their softmax finite); their outputs are never used.

Departures: item 0 is a real item here (the authors reserve id 0 for padding); residuals follow the paper's formula
(the authors' code adds them to LN(x) and normalises only the queries); no dropout on the attention weights; no L2
on embeddings (the authors' default l2_emb is 0 too). Scoring a (history, target) pair of the ATRank protocol
encodes `batch.hist` and reads the output at its last real step.

S3Rec's transformer (experiment=s3rec): `activation` relu (the paper) | gelu (S3Rec); `init_std` null = Xavier
normal embeddings and torch's default layers (the authors') | s = every Linear and Embedding weight ~ N(0, s^2),
Linear biases 0, LayerNorms (1, 0) (S3Rec's init_weights, s = 0.02). Still unlike S3Rec's code: pre-LN blocks
(S3Rec: post-LN, BERT style), FFN width = hidden (S3Rec: 4 x hidden), no attention-weight dropout, no output
projection after attention, item embeddings scaled by sqrt(d) with no LayerNorm on them, LayerNorm eps 1e-8
(S3Rec: 1e-12) (aHuiWang/CIKM2020-S3Rec modules.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datasets.batch import Batch
from models.interface import SeqRecModel, check_choices
from models.registry import register


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        assert dim % n_heads == 0, f"dim {dim} must be divisible by n_heads {n_heads}"
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.n_heads = n_heads

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:  # x [B, W, D], allowed [B, W, W]
        B, W, D = x.shape
        h = self.n_heads
        q = self.q(x).view(B, W, h, D // h).transpose(1, 2)  # [B, h, W, D/h]
        k = self.k(x).view(B, W, h, D // h).transpose(1, 2)
        v = self.v(x).view(B, W, h, D // h).transpose(1, 2)
        # softmax(q k^T / sqrt(D/h), masked) v, fused (every query may see itself: no all-masked row)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])  # [B, h, W, D/h]
        return out.transpose(1, 2).reshape(B, W, D)  # [B, W, D]


LOSSES = ("bce", "ce", "gbce")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float, activation: str = "relu"):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-8), nn.LayerNorm(dim, eps=1e-8)
        self.attn = CausalSelfAttention(dim, n_heads)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), ACTIVATIONS[activation](), nn.Dropout(dropout),
                                 nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:  # [B, W, D] -> [B, W, D]
        x = x + self.dropout(self.attn(self.norm1(x), allowed))
        return x + self.dropout(self.ffn(self.norm2(x)))


@register("sasrec")
class SASRec(SeqRecModel):
    train_format = "sequence"
    one_user_vector = True  # full_scores: one vector per row against the catalogue
    data_parallel = False
    data_parallel_note = "its loss is a mean over the batch's positions, whose count only the whole batch knows (one row per user: an epoch is a few dozen steps anyway)"
    cuda_graphs = False
    cuda_graphs_note = ("its loss selects the real positions by boolean mask and redraws negatives until none "
                        "hits (data-dependent shapes, host reads)")

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 dim: int = 64, n_blocks: int = 2, n_heads: int = 1, dropout: float = 0.5, max_len: int = 50,
                 neg_rounds: int = 10, loss: str = "bce", gbce_negatives: int = 256, gbce_t: float = 0.75,
                 activation: str = "relu", init_std: float | None = None):
        super().__init__()
        check_choices(loss=(loss, LOSSES), activation=(activation, tuple(ACTIVATIONS)))
        if loss == "gbce" and not (n_items >= 2 and 0.0 <= gbce_t <= 1.0):
            raise ValueError(f"loss=gbce needs n_items >= 2 (got {n_items}) and gbce_t in [0, 1] (got {gbce_t})")
        self.n_items, self.dim, self.max_len, self.neg_rounds = n_items, dim, max_len, neg_rounds
        self.loss_kind, self.gbce_negatives, self.gbce_t = loss, gbce_negatives, gbce_t
        self.item = nn.Embedding(n_items, dim)
        self.pos = nn.Embedding(max_len, dim)
        if init_std is None:  # before the blocks: their initial weights follow in the random stream
            nn.init.xavier_normal_(self.item.weight)  # the authors' initialiser
            nn.init.xavier_normal_(self.pos.weight)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout, activation) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim, eps=1e-8)
        if init_std is not None:
            init_normal(self, init_std)

    def last_items(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last max_len real items of each right-padded row, right-padded again: ([B, W], mask [B, W])."""
        W = min(seq.shape[1], self.max_len)
        keep = lengths.clamp(max=self.max_len)  # [B]
        steps = torch.arange(W, device=seq.device)
        idx = (lengths - keep)[:, None] + steps[None, :]  # [B, W]
        mask = steps[None, :] < keep[:, None]  # [B, W]
        return seq.gather(1, idx.clamp(max=seq.shape[1] - 1)).masked_fill(~mask, 0), mask

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, W] -> [B, W, D]
        W = items.shape[1]
        steps = torch.arange(W, device=items.device)
        pos = steps[None, :] + self.max_len - mask.sum(1, keepdim=True)  # [B, W], right-aligned
        pos = torch.where(mask, pos, 0)
        x = self.dropout(self.item(items) * self.dim ** 0.5 + self.pos(pos))  # [B, W, D]
        causal = steps[None, :] <= steps[:, None]  # [W, W], key j <= query i
        allowed = causal[None] & (mask[:, None, :] | torch.eye(W, dtype=torch.bool, device=items.device))  # [B, W, W]
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def user_vector(self, batch: Batch) -> torch.Tensor:  # -> [B, D], output at the last real step
        items, mask = self.last_items(batch.hist, batch.lengths)
        out = self.encode(items, mask)  # [B, W, D]
        last = (mask.sum(1) - 1).clamp(min=0)  # [B]
        return out[torch.arange(len(batch), device=out.device), last]

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:  # candidates [B, C] -> [B, C]
        return torch.einsum("bd,bcd->bc", self.user_vector(batch), self.item(candidates))

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 4096) -> torch.Tensor:  # -> [B, n_items]
        return self.user_vector(batch) @ self.item.weight.T

    def sample_negatives(self, shape: torch.Size, seq: torch.Tensor, seq_mask: torch.Tensor) -> torch.Tensor:
        """Uniform items [B, W], redrawn while they are any real item of the row's sequence seq [B, N]."""
        neg = torch.randint(0, self.n_items, shape, device=seq.device)
        for _ in range(self.neg_rounds):
            hit = ((neg[:, :, None] == seq[:, None, :]) & seq_mask[:, None, :]).any(-1)  # [B, W]
            if not hit.any():
                break
            neg = torch.where(hit, torch.randint(0, self.n_items, shape, device=seq.device), neg)
        return neg

    def uniform_negatives(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """gbce's negatives: uniform over the catalogue, no redraw (gSASRec's collate_with_random_negatives)."""
        return torch.randint(0, self.n_items, shape, device=device)

    def gbce_beta(self) -> float:
        """gSASRec's beta = alpha * (t * (1 - 1/alpha) + 1/alpha), alpha = k / (n_items - 1)."""
        alpha = self.gbce_negatives / (self.n_items - 1)
        return alpha * (self.gbce_t * (1 - 1 / alpha) + 1 / alpha)

    def loss(self, batch: Batch) -> torch.Tensor:
        n_in = (batch.lengths - 1).clamp(min=0)  # [B], inputs s_0..s_{n-2}
        if batch.hist.shape[1] < 2 or not bool((n_in > 0).any()):
            return self.item.weight.sum() * 0.0  # no transition in this batch
        inputs, mask = self.last_items(batch.hist[:, :-1], n_in)  # [B, W]
        targets, _ = self.last_items(batch.hist[:, 1:], n_in)  # [B, W], s_{t+1} aligned with inputs
        out = self.encode(inputs, mask)  # [B, W, D]
        if self.loss_kind == "ce":  # the real steps only: [P, n_items] logits
            return F.cross_entropy(out[mask] @ self.item.weight.T, targets[mask])
        pos_logits = (out * self.item(targets)).sum(-1)  # [B, W]
        if self.loss_kind == "gbce":
            neg = self.uniform_negatives((*targets.shape, self.gbce_negatives), targets.device)  # [B, W, k]
            neg_logits = torch.einsum("bwd,bwkd->bwk", out, self.item(neg)).double()  # [B, W, k]
            per_step = (self.gbce_beta() * F.softplus(-pos_logits.double()) + F.softplus(neg_logits).sum(-1))
            return (per_step[mask] / (self.gbce_negatives + 1)).mean().to(out.dtype)
        neg = self.sample_negatives(targets.shape, batch.hist, batch.mask)  # [B, W]
        neg_logits = (out * self.item(neg)).sum(-1)
        per_step = -(F.logsigmoid(pos_logits) + F.logsigmoid(-neg_logits))  # [B, W]
        return per_step[mask].mean()


def init_normal(model: nn.Module, std: float) -> None:
    """S3Rec's init_weights: Linear and Embedding weights ~ N(0, std^2), Linear biases 0, LayerNorms (1, 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
