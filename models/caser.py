"""Caser: horizontal and vertical convolutions over the embeddings of the last L items, plus a user embedding.

Tang & Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence Embedding", WSDM 2018
(authors' code: graytowne/caser_pytorch).

    E = [Q[s_{t-L}]; ...; Q[s_{t-1}]]                          [L, d] embeddings of the last L items
    o_v = conv_v(E)                                            n_v filters of shape [L, 1] (no activation) -> n_v d
    o_h = [max_t ReLU(conv_h(E))  for h = 1..L]                n_h filters of shape [h, d] each, max-pooled -> n_h L
    z = ReLU(W1 Dropout([o_v; o_h]) + b1)                      [d]
    y(i) = W2_i . [z; P_u] + b2_i                              P_u the user embedding, W2 [n_items, 2d]

Training (train_format "sequence"): a row's `hist` is the user's whole training sequence s_0..s_{n-1}; the model
cuts its windows of L inputs and T targets itself. A user with n >= L + T items gives every window of L + T
consecutive items (step 1), as the authors' sliding window; a shorter user gives one window whose targets are
its last min(T, n - 1) items and whose inputs are the items before them, left-padded. Each target gets
`n_neg` negatives (3: the authors' neg_samples) drawn uniformly with torch's RNG, redrawn (up to neg_rounds
rounds) while they are any item of the user's training sequence (the authors draw from the items the user never
rated). Loss, as the authors': -mean log sigmoid(y(targets)) - mean log(1 - sigmoid(y(negatives))), the means
over every real (window, target) and (window, negative) of the batch. L2 (1e-6) is the optimiser's weight decay,
as the authors' Adam(weight_decay=l2).

Two named options train as RecBole's Caser does (the code S3Rec's author points to for that table's baselines):
`windows="every_item"` cuts one window at every position 1..n-1 (inputs left-padded, targets truncated at the
sequence's end), so every item after the first is a target, where the authors' sliding windows leave a long user's
first L items and a short user's first n - T items untrained as targets; `loss="ce"` is softmax cross-entropy of
each real target against the whole catalogue (y over all items), no negatives drawn. RecBole also uses T=1
(`model.params.T=1`). Defaults stay the paper's: windows="sliding", loss="bce".

Why "sequence" and not "pairwise": Caser needs L consecutive inputs and T consecutive targets of one user, and
its negatives avoid the user's items; the sequence rows hold the whole training sequence, so windows and
negatives come from it directly, like AttRec's. A batch is therefore batch_size USERS (each giving one or more
windows), where the authors' batch is 512 windows; on the Amazon sets most users give one or two windows.

Padding. Input slots before the start of a short history hold a padding embedding (an extra row of Q, index
n_items, trained like the authors' item 0, which is their padding id); real items and padded batch slots never
mix, so padding a batch wider changes nothing. Scoring reads the last L items of `batch.hist` (padded the same
way when fewer than L, all padding when the history is empty) and the row's user.

Departures: short sequences' windows hold only real targets (the authors pad the window of L + T on the left,
so a user with fewer than T + 1 items gets padding among the targets and no real input); item 0 is a real item;
negatives are drawn with torch's RNG instead of numpy's. Initialisation as the authors': Q, P ~ N(0, 1/d^2),
W2 ~ N(0, 1/(2d)^2), b2 = 0, convolutions and W1 torch's defaults.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datasets.batch import Batch
from models.interface import SeqRecModel, check_choices
from models.registry import register


WINDOWS = ("sliding", "every_item")
LOSSES = ("bce", "ce")


@register("caser")
class Caser(SeqRecModel):
    train_format = "sequence"
    one_user_vector = True  # full_scores: one vector per row against the catalogue
    data_parallel = False
    data_parallel_note = "its loss is a mean over the batch's windows, whose count only the whole batch knows"
    cuda_graphs = False
    cuda_graphs_note = ("its loss selects windows by boolean mask and redraws negatives until none hits "
                        "(data-dependent shapes, host reads)")

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 dim: int = 50, L: int = 5, T: int = 3, n_v: int = 4, n_h: int = 16, dropout: float = 0.5,
                 n_neg: int = 3, neg_rounds: int = 10, windows: str = "sliding", loss: str = "bce"):
        super().__init__()
        check_choices(windows=(windows, WINDOWS), loss=(loss, LOSSES))
        if n_v < 0 or n_h < 0 or n_v + n_h == 0:
            raise ValueError(f"caser: n_v and n_h must be >= 0 and not both 0, got n_v={n_v}, n_h={n_h}")
        if n_neg < 1:
            raise ValueError(f"caser: n_neg must be >= 1, got {n_neg}")
        self.n_items, self.dim, self.L, self.T = n_items, dim, L, T
        self.n_v, self.n_h, self.n_neg, self.neg_rounds = n_v, n_h, n_neg, neg_rounds
        self.window_kind, self.loss_kind = windows, loss
        self.item = nn.Embedding(n_items + 1, dim)  # row n_items pads short windows
        self.user = nn.Embedding(n_users, dim)
        self.conv_v = nn.Conv2d(1, n_v, (L, 1)) if n_v else None
        self.conv_h = nn.ModuleList(nn.Conv2d(1, n_h, (h, dim)) for h in range(1, L + 1)) if n_h else None
        self.fc1 = nn.Linear(n_v * dim + n_h * L, dim)
        self.W2 = nn.Embedding(n_items, 2 * dim)
        self.b2 = nn.Embedding(n_items, 1)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.user.weight, std=1.0 / dim)  # the authors' initialiser
        nn.init.normal_(self.item.weight, std=1.0 / dim)
        nn.init.normal_(self.W2.weight, std=1.0 / (2 * dim))
        nn.init.zeros_(self.b2.weight)

    @property
    def pad_item(self) -> int:
        return self.n_items

    def hidden(self, window: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """x = [z; P_u] for windows [M, L] (padding = pad_item) and users [M] -> [M, 2d]."""
        e = self.item(window)[:, None]  # [M, 1, L, d]
        parts = []
        if self.conv_v is not None:
            parts.append(self.conv_v(e).flatten(1))  # [M, n_v * d]
        if self.conv_h is not None:
            for conv in self.conv_h:
                parts.append(F.relu(conv(e).squeeze(3)).amax(dim=2))  # [M, n_h], max over time
        z = F.relu(self.fc1(self.dropout(torch.cat(parts, dim=1))))  # [M, d]
        return torch.cat([z, self.user(user)], dim=1)

    def last_window(self, batch: Batch) -> torch.Tensor:
        """The last L real items of each row, left-padded with pad_item: [B, L]."""
        idx = batch.lengths[:, None] - self.L + torch.arange(self.L, device=batch.hist.device)  # [B, L]
        window = batch.hist.gather(1, idx.clamp(0, batch.hist.shape[1] - 1))
        return window.masked_fill(idx < 0, self.pad_item)

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:  # candidates [B, C] -> [B, C]
        x = self.hidden(self.last_window(batch), batch.user)  # [B, 2d], once per row
        return torch.einsum("bd,bcd->bc", x, self.W2(candidates)) + self.b2(candidates)[..., 0]

    def catalogue_logits(self, x: torch.Tensor) -> torch.Tensor:
        """y(i) for every item i of the catalogue, from hidden states x [M, 2d] -> [M, n_items]."""
        return x @ self.W2.weight.T + self.b2.weight.T

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 4096) -> torch.Tensor:  # -> [B, n_items]
        return self.catalogue_logits(self.hidden(self.last_window(batch), batch.user))

    def windows(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training windows of the batch: (row of each [M], inputs [M, L], targets [M, T], target mask
        [M, T]). Window s has targets s_s..s_{s+T-1} and inputs s_{s-L}..s_{s-1}."""
        n, N, dev = batch.lengths, batch.hist.shape[1], batch.hist.device
        starts = torch.arange(1, N, device=dev)  # [S]
        if self.window_kind == "every_item":
            chosen = starts[None, :] < n[:, None]  # [B, S], every start 1..n-1
        else:
            full = (starts[None, :] >= self.L) & (starts[None, :] <= n[:, None] - self.T)  # [B, S]
            short_start = (n - self.T).clamp(min=1)  # [B], the one window of a user with n < L + T
            short = (n[:, None] < self.L + self.T) & (n[:, None] >= 2) & (starts[None, :] == short_start[:, None])
            chosen = full | short
        row, start = chosen.nonzero(as_tuple=True)  # [M]
        s = starts[start]
        h_idx = s[:, None] - self.L + torch.arange(self.L, device=dev)  # [M, L]
        t_idx = s[:, None] + torch.arange(self.T, device=dev)  # [M, T]
        inputs = batch.hist[row[:, None], h_idx.clamp(min=0)].masked_fill(h_idx < 0, self.pad_item)
        tmask = t_idx < n[row][:, None]  # [M, T]
        targets = batch.hist[row[:, None], t_idx.clamp(max=N - 1)].masked_fill(~tmask, 0)
        return row, inputs, targets, tmask

    def sample_negatives(self, shape: torch.Size, seq: torch.Tensor, seq_mask: torch.Tensor) -> torch.Tensor:
        """Uniform items [M, K], redrawn while they are any real item of the window's sequence seq [M, N]."""
        neg = torch.randint(0, self.n_items, shape, device=seq.device)
        for _ in range(self.neg_rounds):
            hit = ((neg[:, :, None] == seq[:, None, :]) & seq_mask[:, None, :]).any(-1)  # [M, K]
            if not hit.any():
                break
            neg = torch.where(hit, torch.randint(0, self.n_items, shape, device=seq.device), neg)
        return neg

    def loss(self, batch: Batch) -> torch.Tensor:
        row, inputs, targets, tmask = self.windows(batch)
        if len(row) == 0:
            return self.W2.weight.sum() * 0.0  # no window in this batch
        x = self.hidden(inputs, batch.user[row])  # [M, 2d]
        if self.loss_kind == "ce":  # every real target against the catalogue
            log_p = F.log_softmax(self.catalogue_logits(x), dim=1)  # [M, n_items]
            return -log_p.gather(1, targets)[tmask].mean()
        neg = self.sample_negatives((len(row), self.T * self.n_neg), batch.hist[row], batch.mask[row])  # [M, T*K]
        nmask = tmask.repeat_interleave(self.n_neg, dim=1)  # [M, T*K], n_neg negatives per real target

        def logits(items: torch.Tensor) -> torch.Tensor:
            return torch.einsum("md,mkd->mk", x, self.W2(items)) + self.b2(items)[..., 0]

        positive = -F.logsigmoid(logits(targets))[tmask].mean()
        negative = -F.logsigmoid(-logits(neg))[nmask].mean()
        return positive + negative
