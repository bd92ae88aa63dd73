"""AttRec: self-attentive short-term intent + long-term user preference, in one metric-learning distance.

Zhang, Tay, Yao, Sun, "Next Item Recommendation with Self-Attention" (AttRec), AAAI 2018 workshop / arXiv
1808.06414 (seed 004); authors' code: cheungdaven/DeepRec models/seq_rec/AttRec.py.

    X^u_t  = X[last L items]                                    [L, d]  short-term item table X
    Q' = K' = ReLU((X^u_t + TE) W)                              shared W (W_Q = W_K), TE = sinusoidal position signal
    s = softmax(Q'K'^T / sqrt(d)), diagonal masked before the softmax;   a = s X^u_t    (V = identity, no TE)
    m^u_t = mean of the L rows of a                             short-term intent      [d]
    y(u, i) = w ||U_u - V_i||^2 + (1 - w) ||m^u_t - X_i||^2     smaller = better; score() returns -y
    loss = sum_{i in T+} sum_{j in T-} [y(u, i) + gamma - y(u, j)]_+  (+ optional l2 on the rows used)
    after every optimiser step: every row of X, V and U is clipped to the unit ball (eq. 12; all rows, since
    Adagrad keeps moving rows after they leave the batch, so touched-rows-only clipping would not keep the bound).

Training (train_format "sequence"): a row's `hist` is the user's whole training sequence s_0..s_{n-1}. Every
start s = 1..n-1 gives one window: history = s_{s-L}..s_{s-1} (fewer when s < L), positives = s_s..s_{s+T-1}
(fewer near the end), and T negatives drawn uniformly with torch's RNG, redrawn (up to 10 rounds) while they equal
one of that window's positives (the paper's T- from I \\ T+). The hinge is summed over all (positive, negative)
pairs of a window (eq. 11) and averaged over the windows of the batch.

Default (the paper) and its choices:
- Every start, with masking: padded slots are never a key, a positive or in the mean. Windows are RIGHT-aligned:
  the most recent item always gets position L - 1 of TE, in training and scoring.
- A window with ONE real item has nothing off the diagonal; that item then attends to itself (m = X of the item)
  instead of giving an empty softmax. Histories of length 1 therefore score.
- Diagonal masked BEFORE the softmax, as the paper says.
- d = 100; U, V, X ~ N(0, 1/d), clipped to the unit ball at construction; W Xavier-initialised; dropout on
  Q'/K' (paper: "dropout on the non-linear layers") is 0 by default; omega (w) = 0.3 (the paper's best on its data).
- l2 (lambda ||Theta||^2) is off by default (the unit-ball clipping is the paper's regulariser for sparse data);
  when on, it applies to the rows this batch uses and W, divided by the number of windows like the hinge.
- Optimiser (conf/model/attrec.yaml): Adagrad lr 0.05, the paper's "adaptive gradient algorithm".
- Scoring an ATRank-protocol pair uses the last L items of `batch.hist` and the row's user vector U_u.

Reference mode (experiment=reference: `reference_params` in conf/model/attrec.yaml), the authors' code
(cheungdaven/DeepRec models/seq_rec/AttRec.py, the hinge version at commit 67a1198; its tables P, Q, X are U, X, V
here):
- pairs=aligned, reduction=sum: the hinge over the T aligned pairs (positive t vs negative t), summed over the
  batch's windows and positions, not averaged;
- w = 0.2 (the code's alpha); diagonal=after_softmax: the softmax runs over all keys, then the diagonal weight is
  zeroed (tf.matrix_set_diag on the weights), so a row's weights sum to less than 1;
- table_l2 = 1e-3 and W_l2 = 1e-2: tf.nn.l2_loss (sum of squares / 2) of the whole U, V, X tables and of W
  (l2_regularizer scale 1e-2) added to every step's loss;
- position_signal = tensor2tensor: the code's add_timing_signal (all sines, then all cosines, timescales
  1..1e4) instead of the paper's interleaved TE(t, 2i) = sin, TE(t, 2i+1) = cos;
- init_std = 0.001: truncated normal tables (tf.truncated_normal stddev 0.001);
- unit_ball = false: the code builds the clip_by_norm ops but its training loop never runs them;
- Adagrad's accumulator starts at 0.05 (AdagradOptimizer initial_accumulator_value) where torch starts at 0:
  `reference_initial_accumulator` in the yaml.
Differences that remain in reference mode: windows of fewer than L + T items are masked here, where DeepRec pads
them with item 0, which then takes part as a key and a target; the code's fourth table (a user table used only
in the regulariser) has no effect on scores and is left out; d stays 100 (that commit uses 150, another 100);
negatives are drawn per window from the items outside the window's targets, as here, but with numpy's RNG.
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


def timing_signal(length: int, dim: int) -> torch.Tensor:
    """tensor2tensor's add_timing_signal (the authors' code): [sin(t * f_i) for all i, cos(t * f_i) for all i]
    concatenated, f_i = 1e4^(-i / (d/2 - 1)), i = 0..d/2-1, zero-padded to an odd d: [length, dim]."""
    half = dim // 2
    t = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-torch.arange(half, dtype=torch.float64) * np.log(1e4) / max(half - 1, 1))
    te = torch.cat([torch.sin(t * freq), torch.cos(t * freq)], dim=1)
    return nn.functional.pad(te, (0, dim % 2)).float()


@register("attrec")
class AttRec(SeqRecModel):
    train_format = "sequence"
    one_user_vector = True  # full_scores: one vector per row against the catalogue
    data_parallel = False
    data_parallel_note = "its loss is a mean over the batch's windows, whose count only the whole batch knows (one row per user: an epoch is a few dozen steps anyway)"
    cuda_graphs = False
    cuda_graphs_note = ("its loss selects windows and positives by boolean mask and redraws negatives until none "
                        "hits (data-dependent shapes, host reads)")

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 dim: int = 100, L: int = 5, T: int = 3, w: float = 0.3, gamma: float = 0.5, l2: float = 0.0,
                 dropout: float = 0.0, neg_rounds: int = 10, pairs: str = "all", reduction: str = "mean",
                 diagonal: str = "before_softmax", table_l2: float = 0.0, W_l2: float = 0.0,
                 init_std: float | None = None, unit_ball: bool = True, position_signal: str = "paper"):
        super().__init__()
        assert pairs in ("all", "aligned") and reduction in ("mean", "sum")
        assert diagonal in ("before_softmax", "after_softmax") and position_signal in ("paper", "tensor2tensor")
        self.n_items, self.dim, self.L, self.T = n_items, dim, L, T
        self.w, self.gamma, self.l2, self.neg_rounds = w, gamma, l2, neg_rounds
        self.pairs, self.reduction, self.diagonal = pairs, reduction, diagonal
        self.table_l2, self.W_l2, self.unit_ball = table_l2, W_l2, unit_ball
        self.U = nn.Embedding(n_users, dim)  # long-term user
        self.V = nn.Embedding(n_items, dim)  # long-term item
        self.X = nn.Embedding(n_items, dim)  # short-term item: history windows and the target's short-term side
        for emb in (self.U, self.V, self.X):
            if init_std is None:
                nn.init.normal_(emb.weight, std=dim ** -0.5)
            else:  # tf.truncated_normal: redrawn beyond 2 standard deviations
                nn.init.trunc_normal_(emb.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
        self.W = nn.Linear(dim, dim, bias=False)  # W_Q = W_K
        nn.init.xavier_uniform_(self.W.weight)
        self.dropout = nn.Dropout(dropout)
        te = sinusoid(L, dim) if position_signal == "paper" else timing_signal(L, dim)
        self.register_buffer("te", te, persistent=False)  # [L, d]
        self.after_step()

    def short_term(self, window: torch.Tensor, wmask: torch.Tensor) -> torch.Tensor:
        """m for right-aligned windows [..., L] with mask [..., L] -> [..., d]."""
        x = self.X(window)  # [..., L, d]
        p = torch.relu(self.W(x + self.te))  # [..., L, d], shared projection
        logits = self.dropout(p) @ self.dropout(p).transpose(-1, -2) / self.dim ** 0.5  # [..., L, L]
        eye = torch.eye(self.L, dtype=torch.bool, device=window.device)
        if self.diagonal == "before_softmax":
            allowed = wmask[..., None, :] & ~eye  # [..., L, L] real keys off the diagonal
            allowed = allowed | (eye & ~allowed.any(-1, keepdim=True))  # nothing else: attend to itself
            s = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
        else:  # the authors' code: softmax over all real keys, then the diagonal weight zeroed (rows sum < 1)
            keys = wmask[..., None, :] | ~wmask.any(-1)[..., None, None]  # an empty window: any (it is unused)
            s = torch.softmax(logits.masked_fill(~keys, float("-inf")), dim=-1).masked_fill(eye, 0.0)
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
        if self.pairs == "all":  # eq. 11: every (positive, negative) pair of a window
            hinge = torch.relu(y_pos[..., :, None] + self.gamma - y_neg[..., None, :])  # [B, S, T+, T-]
            hinge = hinge * pmask[..., :, None] * win_ok[..., None, None]
        else:  # the authors' code: positive t against negative t only
            hinge = torch.relu(y_pos + self.gamma - y_neg) * pmask * win_ok[..., None]  # [B, S, T]
        n_windows = win_ok.sum()
        loss = hinge.sum() / (n_windows if self.reduction == "mean" else 1)
        if self.l2:
            real_pos, real_neg = pos[pmask], neg[win_ok]  # padding slots never regularised
            rows = (self.U(batch.user), self.X(window[wmask]), self.X(real_pos), self.V(real_pos), self.X(real_neg),
                    self.V(real_neg))
            loss = loss + self.l2 * (sum(r.pow(2).sum() for r in rows) + self.W.weight.pow(2).sum()) / n_windows
        return loss + self.reference_l2()

    def reference_l2(self) -> torch.Tensor | float:
        """The authors' regulariser, tf.nn.l2_loss (sum of squares / 2) of the WHOLE tables and of W, every step."""
        if not (self.table_l2 or self.W_l2):
            return 0.0
        tables = sum(emb.weight.pow(2).sum() for emb in (self.U, self.V, self.X))
        return (self.table_l2 * tables + self.W_l2 * self.W.weight.pow(2).sum()) / 2

    @torch.no_grad()
    def after_step(self) -> None:
        if not self.unit_ball:
            return
        for emb in (self.X, self.V, self.U):
            emb.weight.renorm_(2, 0, 1.0)  # rows with norm > 1 scaled to norm 1 (eq. 12)
