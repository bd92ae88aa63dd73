"""BERT4Rec: a bidirectional Transformer trained to fill in masked items (the cloze task).

Sun, Liu, Wu, Pei, Lin, Ou, Jiang, "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019 (authors' code: FeiSun/BERT4Rec, TensorFlow, BERT's modeling.py).

    E_t = Dropout(LN(M[s_t] + P[t]))                  item embedding (tied with the output) + learned position t
    block(x): x = LN(x + Dropout(SA(x)));  x = LN(x + Dropout(FFN(x)))    post-LN, as BERT
    SA = softmax(Q K^T / sqrt(d/h) + padding mask) V with attention dropout (every real key, both directions)
    FFN = GELU(x W1 + b1) W2 + b2,  W1: d -> 4d      (BERT's tanh approximation of GELU)
    out(h) = LN(GELU(h W_t + b_t)) M^T + b            the authors' output head: transform, tied items, item bias

Training (train_format "sequence"): a row's `hist` is the user's whole training sequence; its last `max_len`
items are the input (`train_window="last"`), or, with `train_window="random"`, `max_len` consecutive items from
a start drawn uniformly afresh at every step (a longer sequence's older items are trained on too; the batches
must then keep the whole sequence: `model.max_len=null`). In each row max(1, round(n * mask_prob)) of its n
items (at most `max_predictions`) are replaced by the [MASK] token (an extra embedding row, index n_items),
chosen uniformly with torch's RNG afresh at every step. Loss: softmax cross-entropy over the whole catalogue at
each masked position, averaged over the masked positions of the batch (the original recipe; no sampled
negatives).

Scoring: [MASK] is appended after the history (its oldest item dropped when the history already holds max_len
items, so that the input stays max_len long) and the output at the [MASK] slot scores every item.

Padding. Rows are RIGHT-padded (real items first) and positions count from the oldest kept item (pos_t = t), as
the authors' sequences, which are padded at the end. Padded slots are never a key; a padded query sees only
itself (keeps its softmax finite) and its output is never used. The masking draw is made over a fixed width
max_len, so widening a batch's padding never changes which items are masked.

Defaults (conf/model/bert4rec.yaml) are the authors' Beauty setup (bert_config_beauty_64.json, run_beauty.sh),
the Amazon set closest to sports and toys, which is also S3Rec's recipe: d = 64, 2 layers, 2 heads, FFN 4d,
hidden dropout 0.5, attention dropout 0.2, truncated-normal init std 0.02, max_len 50, mask_prob 0.6 (the
paper's rho for Beauty; 0.2 is its ML-1m/ML-20m value), max_predictions 30.

Departures from the authors' code:
- Optimiser: Adam lr 1e-3, no warm-up, no decay, batch 256 (S3Rec's recipe and the suite's epoch budget); the
  authors train 400k steps of AdamWeightDecay lr 1e-4 (weight decay 0.01, 100 warm-up steps, linear decay).
- Masks are redrawn every step from the last max_len items of each user; the authors precompute 10 masked copies
  (dupe_factor) of every sliding window (step 0.1 * max_len) of long sequences, so older windows of a user longer
  than max_len are not trained on here. `train_window="random"` trains on them: one window per user and step,
  every start equally likely (the authors: every window a row, so a long user weighs more per epoch).
- All chosen positions become [MASK] (the authors' mask_prob = 1.0 for every set: no random-item or keep cases).
- The softmax runs over the n_items real items only; the authors' vocabulary also holds [PAD], [MASK] and unused
  tokens as (never correct) classes.
- Item 0 is a real item (the authors reserve id 0 for padding); padding is masked out instead.
- Scoring a (history, target) pair of the ATRank protocol appends [MASK] to `batch.hist` in the same way.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datasets.batch import Batch
from models.interface import SeqRecModel
from models.registry import register

LN_EPS = 1e-12  # BERT's layer-norm epsilon


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, attn_dropout: float):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"bert4rec: dim {dim} must be divisible by n_heads {n_heads}")
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.n_heads, self.attn_dropout = n_heads, attn_dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:  # x [B, W, D], allowed [B, W, W]
        B, W, D = x.shape
        h = self.n_heads
        q, k, v = (f(x).view(B, W, h, D // h).transpose(1, 2) for f in (self.q, self.k, self.v))  # [B, h, W, D/h]
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], dropout_p=p)  # [B, h, W, D/h]
        return self.out(out.transpose(1, 2).reshape(B, W, D))


class Block(nn.Module):
    """BERT's post-LN Transformer layer."""

    def __init__(self, dim: int, n_heads: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attn = SelfAttention(dim, n_heads, attn_dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=LN_EPS), nn.LayerNorm(dim, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:  # [B, W, D] -> [B, W, D]
        x = self.norm1(x + self.dropout(self.attn(x, allowed)))
        return self.norm2(x + self.dropout(self.ffn(x)))


@register("bert4rec")
class BERT4Rec(SeqRecModel):
    train_format = "sequence"
    one_user_vector = True  # full_scores: one vector per row against the catalogue
    data_parallel = False
    data_parallel_note = "its loss is a mean over the batch's masked positions, whose count only the whole batch knows"
    cuda_graphs = False
    cuda_graphs_note = "its loss selects the masked positions by boolean mask (data-dependent shapes)"

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 dim: int = 64, n_blocks: int = 2, n_heads: int = 2, dropout: float = 0.5,
                 attn_dropout: float = 0.2, max_len: int = 50, mask_prob: float = 0.6, max_predictions: int = 30,
                 init_std: float = 0.02, train_window: str = "last"):
        super().__init__()
        if train_window not in ("last", "random"):
            raise ValueError(f"bert4rec: train_window must be 'last' or 'random', got {train_window!r}")
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"bert4rec: mask_prob must be in (0, 1], got {mask_prob!r}")
        if max_len < 2 or max_predictions < 1:
            raise ValueError(f"bert4rec: max_len must be >= 2 and max_predictions >= 1, got {max_len}, "
                             f"{max_predictions}")
        self.n_items, self.max_len = n_items, max_len
        self.mask_prob, self.max_predictions = mask_prob, max_predictions
        self.train_window = train_window
        self.item = nn.Embedding(n_items + 1, dim)  # row n_items is [MASK]
        self.pos = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout, attn_dropout) for _ in range(n_blocks))
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(approximate="tanh"), nn.LayerNorm(dim, eps=LN_EPS))
        self.bias = nn.Parameter(torch.zeros(n_items))  # output-only item bias
        for module in self.modules():  # BERT's initialiser: truncated normal (2 std), zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    @property
    def mask_token(self) -> int:
        return self.n_items

    def last_items(self, seq: torch.Tensor, lengths: torch.Tensor, keep_at_most: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The last `keep_at_most` real items of each right-padded row, right-padded again: (items [B, W], mask
        [B, W], kept counts [B]), W = min(row width, keep_at_most)."""
        W = min(seq.shape[1], keep_at_most)
        keep = lengths.clamp(max=keep_at_most)  # [B]
        steps = torch.arange(W, device=seq.device)
        idx = (lengths - keep)[:, None] + steps[None, :]  # [B, W]
        mask = steps[None, :] < keep[:, None]  # [B, W]
        return seq.gather(1, idx.clamp(min=0, max=max(seq.shape[1] - 1, 0))).masked_fill(~mask, 0), mask, keep

    def random_windows(self, seq: torch.Tensor, lengths: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like last_items with keep_at_most = max_len, but each row longer than max_len keeps max_len consecutive
        items from a start drawn uniformly in [0, length - max_len]."""
        spare = (lengths - self.max_len).clamp(min=0)  # [B] how many starts beyond the first
        back = (torch.rand(len(lengths), device=seq.device) * (spare + 1)).floor().long().clamp(max=spare)
        return self.last_items(seq, lengths - back, self.max_len)  # the window ends `back` items before the last

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, W] -> [B, W, D]
        W = items.shape[1]
        steps = torch.arange(W, device=items.device)
        x = self.dropout(self.norm(self.item(items) + self.pos(steps)[None]))  # [B, W, D]
        eye = torch.eye(W, dtype=torch.bool, device=items.device)
        allowed = mask[:, None, :] | eye[None]  # [B, W, W]: every real key; a padded query sees itself
        for block in self.blocks:
            x = block(x, allowed)
        return x

    def logits(self, h: torch.Tensor) -> torch.Tensor:  # [..., D] -> [..., n_items]
        return self.head(h) @ self.item.weight[:self.n_items].T + self.bias

    def user_vector(self, batch: Batch) -> torch.Tensor:  # -> [B, D], the encoder's output at the appended [MASK]
        hist = batch.hist.masked_fill(~batch.mask, 0)
        items, _, keep = self.last_items(hist, batch.lengths, self.max_len - 1)
        items = torch.cat([items, items.new_zeros(len(batch), 1)], dim=1)  # [B, W + 1]
        rows = torch.arange(len(batch), device=items.device)
        items[rows, keep] = self.mask_token
        mask = torch.arange(items.shape[1], device=items.device)[None, :] <= keep[:, None]
        return self.encode(items, mask)[rows, keep]

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:  # candidates [B, C] -> [B, C]
        t = self.head(self.user_vector(batch))  # [B, D]
        return torch.einsum("bd,bcd->bc", t, self.item(candidates)) + self.bias[candidates]

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 4096) -> torch.Tensor:  # -> [B, n_items]
        return self.logits(self.user_vector(batch))

    def cloze_mask(self, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """[B, W] True at the positions to mask: max(1, round(n * mask_prob)) (at most max_predictions) of each
        row's n real positions, uniformly. The draw has width max_len whatever the batch's padding."""
        W = mask.shape[1]
        r = torch.rand(mask.shape[0], self.max_len, device=mask.device)[:, :W].masked_fill(~mask, 2.0)
        rank = r.argsort(dim=1).argsort(dim=1)  # [B, W], rank of each slot's draw; padded slots rank last
        k = torch.round(keep * self.mask_prob).clamp(min=1, max=self.max_predictions)  # [B]
        return (rank < k[:, None]) & mask

    def loss(self, batch: Batch) -> torch.Tensor:
        hist = batch.hist.masked_fill(~batch.mask, 0)
        if self.train_window == "random":
            items, mask, keep = self.random_windows(hist, batch.lengths)
        else:
            items, mask, keep = self.last_items(hist, batch.lengths, self.max_len)
        if not bool(mask.any()):
            return self.item.weight.sum() * 0.0  # no item in this batch
        masked = self.cloze_mask(mask, keep)  # [B, W]
        out = self.encode(items.masked_fill(masked, self.mask_token), mask)  # [B, W, D]
        return F.cross_entropy(self.logits(out[masked]), items[masked])
