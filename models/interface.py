"""The one interface every model implements (RecBole's three verbs, smaller).

- `loss(batch) -> Tensor []`: training loss on a batch of the model's `train_format`, regularisation included.
- `score(batch, candidates [B, C]) -> Tensor [B, C]`: higher = more likely next item. The user/history side is
  encoded once per row and shared by the C candidates (evaluation scores the positive and negatives together).
- `full_scores(batch) -> Tensor [B, n_items]`: scores over the whole catalogue; the default chunks `score`.

`train_format` says which training rows the trainer feeds to `loss`:
- "pointwise": (history, target, label) rows, two per position (positive and sampled negative), as the reference;
- "pairwise":  (user, history, positive, negative) rows (BPR style);
- "sequence":  one row per user whose `hist` is that user's whole training sequence (SASRec, AttRec); the model
               builds its own per-position targets and samples negatives with torch's RNG.

Constructors take plain typed arguments. Every model receives the data shape as
(n_users, n_items, n_categories, item_category) and its hyper-parameters from conf/model/<name>.yaml.
`after_step()` runs after each optimiser step (e.g. AttRec's unit-ball clipping).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch


class SeqRecModel(nn.Module):
    name: ClassVar[str] = ""
    train_format: ClassVar[str] = "pointwise"

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


def category_buffer(item_category: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The item -> category lookup as a long tensor, to register as a buffer."""
    return torch.as_tensor(np.asarray(item_category), dtype=torch.long)
