"""The one interface every model implements (RecBole's three verbs, smaller).

- `loss(batch) -> Tensor []`: training loss on a batch of the model's `train_format`, regularisation included.
- `score(batch, candidates [B, C]) -> Tensor [B, C]`: higher = more likely next item. The user/history side is
  encoded once per row and shared by the C candidates (evaluation scores the positive and negatives together).
- `full_scores(batch) -> Tensor [B, n_items]`: scores over the whole catalogue; the default chunks `score`.

`train_format` says which training rows the trainer feeds to `loss`:
- "pointwise": (history, target, label) rows, two per position (positive and sampled negative), as the reference.
               Pointwise models derive from PointwiseModel and implement `logits_and_penalty`; the trainer feeds
               them either independent rows (`label` set) or PAIRED prefixes (`neg` set, no `label`), where each
               history is encoded once and scored against its positive and its negative (trainer.pair_rows);
- "pairwise":  (user, history, positive, negative) rows (BPR style);
- "sequence":  one row per user whose `hist` is that user's whole training sequence (SASRec, AttRec); the model
               builds its own per-position targets and samples negatives with torch's RNG.

The pointwise loss of the Table 3 models lives here: PointwiseModel (sigmoid cross-entropy + the model's
penalty, l2_half_sum as tf.nn.l2_loss) and UserVectorModel (logit = b_i + <u, e_i>, u independent of the item).

Constructors take plain typed arguments. Every model receives the data shape as
(n_users, n_items, n_categories, item_category) and its hyper-parameters from conf/model/<name>.yaml.
`after_step()` runs after each optimiser step (e.g. AttRec's unit-ball clipping).

`cuda_graphs` says whether the training step can be captured as a CUDA graph (runners/step/cuda_graphs.py): no host
reads, no data-dependent shapes, no tensors made from host data (tests/runners/step/test_capture_safety.py checks each
model that says so); a model that cannot says why in `cuda_graphs_note` and trains eagerly on a GPU.
Shortcuts that read a device value on the host (faster on the CPU, a sync per call elsewhere) are taken only where
`host_shortcuts(device)` allows: on the CPU, unless CPU_HOST_SHORTCUTS is off (the capture-safety test turns it
off to run the accelerators' code path on the CPU).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch

CPU_HOST_SHORTCUTS = True


def host_shortcuts(device: torch.device) -> bool:
    """Whether code on `device` may read a device value on the host to take a shortcut (the CPU only)."""
    return CPU_HOST_SHORTCUTS and device.type == "cpu"


class SeqRecModel(nn.Module):
    name: ClassVar[str] = ""
    train_format: ClassVar[str] = "pointwise"
    # trainer.processes > 1 splits each batch between workers and sums their gradients: exact for losses that are
    # means over rows (Batch.row_mean) plus sums; models whose loss is not say why here
    data_parallel: ClassVar[bool] = True
    data_parallel_note: ClassVar[str] = ""
    gradient_free: ClassVar[bool] = False  # learns without gradients (POP): its lr may be 0
    cuda_graphs: ClassVar[bool] = True  # its training step can be captured as a CUDA graph (see above)
    cuda_graphs_note: ClassVar[str] = ""
    # full_scores comes from one user vector per row (a matrix product, or counts): ranking every user against the
    # catalogue is affordable. False (the default, and ATRank, DIN, Bi-LSTM + Attention): each item is a forward
    # pass, so protocol.full_ranking_users=-1 ranks protocol.full_ranking_target_aware_users seeded users instead
    one_user_vector: ClassVar[bool] = False

    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 4096) -> torch.Tensor:
        n_items = self.n_items
        out = []
        for start in range(0, n_items, chunk):
            cands = torch.arange(start, min(start + chunk, n_items), device=batch.user.device)
            out.append(self.score(batch, cands.expand(len(batch), -1)))
        return torch.cat(out, dim=1)

    def after_step(self) -> None:
        """Hook run after every optimiser step; default: nothing."""


def check_choices(**choices: tuple[str, tuple[str, ...]]) -> None:
    """Each named argument's value is one of its choices; else ValueError naming the argument."""
    problems = [f"model.params.{k}={v!r}: expected one of {', '.join(allowed)}"
                for k, (v, allowed) in choices.items() if v not in allowed]
    if problems:
        raise ValueError("; ".join(problems))


def category_buffer(item_category: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The item -> category lookup as a long tensor, to register as a buffer."""
    return torch.as_tensor(np.asarray(item_category), dtype=torch.long)


def paired_labels(rows: int, device: torch.device) -> torch.Tensor:
    """[rows, 2] labels (1 for the positive column, 0 for the negative) made on the device itself: no copy from
    host memory, which a CUDA graph capture refuses and which an eager CUDA step would wait on."""
    return torch.stack([torch.ones(rows, device=device), torch.zeros(rows, device=device)], dim=1)


def l2_half_sum(*tensors: torch.Tensor) -> torch.Tensor:
    """sum(x^2) / 2 over all elements, like tf.nn.l2_loss (the reference's regulariser, summed over the batch)."""
    total = tensors[0].pow(2).sum()
    total = total.to(torch.promote_types(total.dtype, torch.float32))  # as a float32 zero start would (bf16 in)
    for t in tensors[1:]:
        total = total + t.pow(2).sum()
    return total / 2


class PointwiseModel(SeqRecModel):
    """A model trained on (history, target, label) rows with sigmoid cross-entropy, like the Table 3 models.

    Subclasses implement `logits_and_penalty(batch, candidates [B, C], penalty) -> (logits [B, C], penalty [])`,
    where the penalty is the model's regulariser summed over the B x C (row, candidate) pairs, each pair counted
    as one training row (with penalty=False it may be None: scoring skips it). The loss is the same function of
    the same rows whether they come one per batch row or paired: mean over rows of the per-row sigmoid
    cross-entropy, plus the penalty.
    """

    train_format: ClassVar[str] = "pointwise"

    def logits_and_penalty(self, batch: Batch, candidates: torch.Tensor,
                           penalty: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        return self.logits_and_penalty(batch, candidates, penalty=False)[0]

    def loss(self, batch: Batch) -> torch.Tensor:
        if batch.paired:  # [B, 2]: one history, its positive and its negative
            candidates = torch.stack([batch.target, batch.neg], dim=1)
            labels = paired_labels(len(batch), candidates.device)
        else:  # [B, 1]: one row per history
            candidates, labels = batch.target[:, None], batch.label[:, None]
        logits, penalty = self.logits_and_penalty(batch, candidates)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
        return batch.row_mean(bce) + penalty


class UserVectorModel(PointwiseModel):
    """A model whose user vector does not depend on the candidate: logit = b_i + <u, e_i>, e_i = item ++ category.

    Subclasses set `self.emb` (layers.ItemCategoryEmbedding), `self.n_items`, `self.l2_reg` and define
    `user_vector(batch) -> [B, D]`. The loss is the reference's: mean sigmoid cross-entropy + l2_reg * (l2(u) +
    l2(e_target)), l2 = sum(x^2)/2 over the training rows. Scoring C candidates reuses one user vector per row (a
    paired training batch encodes each history once for its positive and its negative; u counts once per row in
    the L2, as when the two rows were separate), and the full catalogue is one matmul.
    """
    one_user_vector = True

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
