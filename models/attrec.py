"""AttRec: self-attentive short-term intent + long-term user preference, in one metric-learning distance.

Zhang, Tay, Yao, Sun, "Next Item Recommendation with Self-Attention" (AttRec), AAAI 2018 workshop / arXiv
1808.06414 (seed 004); authors' code: cheungdaven/DeepRec models/seq_rec/AttRec.py.

    X^u_t  = X[last L items]                                    [L, d]  short-term item table X
    Q' = K' = ReLU((X^u_t + TE) W)                              shared W (W_Q = W_K), TE = sinusoidal position signal
    s = softmax(Q'K'^T / sqrt(d)), diagonal masked before the softmax;   a = s X^u_t    (V = identity, no TE)
    m^u_t = mean of the L rows of a                             short-term intent      [d]
    y(u, i) = w ||U_u - V_i||^2 + (1 - w) ||m^u_t - X_i||^2     smaller = better; score() returns -y
    loss = sum_{i in T+} sum_{j in T-} [y(u, i) + gamma - y(u, j)]_+  (+ optional l2 on the rows used)
    after every optimiser step: every row of X, V and U is clipped to the unit ball (all rows, as the authors'
    tf.clip_by_norm on the full tables; Adam keeps moving rows after they leave the batch, so touched-rows-only
    clipping would not keep the bound).

Training (train_format "sequence"): a row's `hist` is the user's whole training sequence s_0..s_{n-1}. Every
start s = 1..n-1 gives one window: history = s_{s-L}..s_{s-1} (fewer when s < L), positives = s_s..s_{s+T-1}
(fewer near the end), and T negatives drawn uniformly with torch's RNG, redrawn (up to 10 rounds) while they equal
one of that window's positives (the paper's T- from I \\ T+). The hinge is summed over all (positive, negative)
pairs of a window (eq. 11) and averaged over the windows of the batch.

Choices and departures:
- Every start, with masking. The authors' DeepRec data code takes full windows of L + T consecutive items (step 1)
  and, for a user shorter than L + T, one window whose missing slots hold the padding item 0, which then takes
  part in the attention and as a target. Amazon 5-core users are short (most have fewer than L + T = 8 training
  items), so here short windows are masked instead: padded slots are never a key, a positive or in the mean.
- Windows are RIGHT-aligned: the most recent item always gets position L - 1 of TE, in training and scoring.
- A window with ONE real item has nothing off the diagonal; that item then attends to itself (m = X of the item)
  instead of giving an empty softmax. Histories of length 1 therefore score.
- Diagonal masked BEFORE the softmax as the paper says; the authors' code multiplies the weights by (1 - I) after it.
- d = 100 (the authors' default num_factor); U, V, X ~ N(0, 1/d), clipped to the unit ball at construction;
  W Xavier-initialised; dropout on Q'/K' (paper: "dropout on the non-linear layers") is 0 by default.
- l2 (lambda ||Theta||^2) is off by default (the unit-ball clipping is the paper's regulariser for sparse data);
  when on, it applies to the rows this batch uses and W, divided by the number of windows like the hinge.
- Optimiser: conf/model/attrec.yaml uses Adagrad lr 0.05 (the paper's "adaptive gradient algorithm"; the authors'
  code: AdagradOptimizer(lr 0.05, initial accumulator 0.05); PyTorch's Adagrad here starts its accumulator at 0).
- Scoring an ATRank-protocol pair uses the last L items of `batch.hist` and the row's user vector U_u.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch
from models.interface import SeqRecModel
from models.registry import register


def sinusoid(length: int, dim: int) -> torch.Tensor:
    """TE(t, 2i) = sin(t / 10000^(2i/d)), TE(t, 2i+1) = cos(t / 10000^(2i/d)), t = 0..length-1: [length, dim]."""
    t = torch.arange(length, dtype=torch.float32)[:, None]
    freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # [ceil(d/2)]
    te = torch.zeros(length, dim)
    te[:, 0::2] = torch.sin(t * freq)
    te[:, 1::2] = torch.cos(t * freq)[:, : dim // 2]
    return te


@register("attrec")
class AttRec(SeqRecModel):
    train_format = "sequence"
    data_parallel = False
    data_parallel_note = "its loss is a mean over the batch's windows, whose count only the whole batch knows (one row per user: an epoch is a few dozen steps anyway)"

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 dim: int = 100, L: int = 5, T: int = 3, w: float = 0.3, gamma: float = 0.5, l2: float = 0.0,
                 dropout: float = 0.0, neg_rounds: int = 10):
        super().__init__()
        self.n_items, self.dim, self.L, self.T = n_items, dim, L, T
        self.w, self.gamma, self.l2, self.neg_rounds = w, gamma, l2, neg_rounds
        self.U = nn.Embedding(n_users, dim)  # long-term user
        self.V = nn.Embedding(n_items, dim)  # long-term item
        self.X = nn.Embedding(n_items, dim)  # short-term item: history windows and the target's short-term side
        for emb in (self.U, self.V, self.X):
            nn.init.normal_(emb.weight, std=dim ** -0.5)
        self.W = nn.Linear(dim, dim, bias=False)  # W_Q = W_K
        nn.init.xavier_uniform_(self.W.weight)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("te", sinusoid(L, dim), persistent=False)  # [L, d]
        self.after_step()

    def short_term(self, window: torch.Tensor, wmask: torch.Tensor) -> torch.Tensor:
        """m for right-aligned windows [..., L] with mask [..., L] -> [..., d]."""
        x = self.X(window)  # [..., L, d]
        p = torch.relu(self.W(x + self.te))  # [..., L, d], shared projection
        logits = self.dropout(p) @ self.dropout(p).transpose(-1, -2) / self.dim ** 0.5  # [..., L, L]
        eye = torch.eye(self.L, dtype=torch.bool, device=window.device)
        allowed = wmask[..., None, :] & ~eye  # [..., L, L] real keys off the diagonal
        allowed = allowed | (eye & ~allowed.any(-1, keepdim=True))  # nothing else: attend to itself
        s = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
        a = s @ x  # [..., L, d], V = identity
        n_real = wmask.sum(-1, keepdim=True).clamp(min=1)  # [..., 1]
        return (a * wmask[..., None]).sum(-2) / n_real  # [..., d], mean over the real rows

    def distance(self, u: torch.Tensor, m: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """y for u, m [..., d] and items [..., C] -> [..., C]."""
        long = (u[..., None, :] - self.V(items)).pow(2).sum(-1)  # [..., C]
        short = (m[..., None, :] - self.X(items)).pow(2).sum(-1)
        return self.w * long + (1 - self.w) * short

    def last_window(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The last L real items of each row, right-aligned: ([B, L], mask [B, L])."""
        idx = batch.lengths[:, None] - self.L + torch.arange(self.L, device=batch.hist.device)  # [B, L]
        wmask = idx >= 0
        window = batch.hist.gather(1, idx.clamp(0, batch.hist.shape[1] - 1)).masked_fill(~wmask, 0)
        return window, wmask

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:  # candidates [B, C] -> [B, C]
        m = self.short_term(*self.last_window(batch))  # [B, d], once per row
        return -self.distance(self.U(batch.user), m, candidates)

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 4096) -> torch.Tensor:  # -> [B, n_items]
        m = self.short_term(*self.last_window(batch))  # [B, d]
        u, V, X = self.U(batch.user), self.V.weight, self.X.weight

        def sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [B, d], [N, d] -> [B, N]
            return a.pow(2).sum(-1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(-1)[None, :]

        return -(self.w * sq_dist(u, V) + (1 - self.w) * sq_dist(m, X))

    def sample_negatives(self, positives: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
        """Uniform items [..., T], redrawn while equal to one of the same window's real positives [..., T]."""
        neg = torch.randint(0, self.n_items, positives.shape, device=positives.device)
        for _ in range(self.neg_rounds):
            hit = ((neg[..., :, None] == positives[..., None, :]) & pmask[..., None, :]).any(-1)  # [..., T]
            if not hit.any():
                break
            neg = torch.where(hit, torch.randint(0, self.n_items, positives.shape, device=positives.device), neg)
        return neg

    def loss(self, batch: Batch) -> torch.Tensor:
        hist, n, N = batch.hist, batch.lengths, batch.hist.shape[1]
        if N < 2 or not bool((n > 1).any()):
            return self.W.weight.sum() * 0.0  # no window in this batch
        dev = hist.device
        starts = torch.arange(1, N, device=dev)  # [S], S = N - 1 windows per row
        h_idx = starts[:, None] - self.L + torch.arange(self.L, device=dev)  # [S, L]
        t_idx = starts[:, None] + torch.arange(self.T, device=dev)  # [S, T]
        win_ok = starts[None, :] < n[:, None]  # [B, S]
        wmask = (h_idx >= 0)[None] & win_ok[..., None]  # [B, S, L]
        pmask = t_idx[None] < n[:, None, None]  # [B, S, T]
        window = hist[:, h_idx.clamp(min=0)].masked_fill(~wmask, 0)  # [B, S, L]
        pos = hist[:, t_idx.clamp(max=N - 1)].masked_fill(~pmask, 0)  # [B, S, T]
        neg = self.sample_negatives(pos, pmask)  # [B, S, T]
        m = self.short_term(window, wmask)  # [B, S, d]
        u = self.U(batch.user)[:, None, :].expand_as(m)  # [B, S, d]
        y_pos, y_neg = self.distance(u, m, pos), self.distance(u, m, neg)  # [B, S, T]
        pairs = torch.relu(y_pos[..., :, None] + self.gamma - y_neg[..., None, :])  # [B, S, T+, T-]
        pairs = pairs * pmask[..., :, None] * win_ok[..., None, None]
        loss = pairs.sum() / win_ok.sum()
        if self.l2:
            real_pos, real_neg = pos[pmask], neg[win_ok]  # padding slots never regularised
            rows = (self.U(batch.user), self.X(window[wmask]), self.X(real_pos), self.V(real_pos), self.X(real_neg),
                    self.V(real_neg))
            loss = loss + self.l2 * (sum(r.pow(2).sum() for r in rows) + self.W.weight.pow(2).sum()) / win_ok.sum()
        return loss

    @torch.no_grad()
    def after_step(self) -> None:
        for emb in (self.X, self.V, self.U):
            emb.weight.renorm_(2, 0, 1.0)  # rows with norm > 1 scaled to norm 1 (eq. 12)
