"""POP: rank items by how often they occur as training positives, the floor every model must clear.

score(item) = log(1 + count(item)), the same for every user; ties are left as ties.

Counts come from TRAINING data only. POP has nothing to learn by SGD, so it fits into the trainer's loop like this:
- `train_format = "pairwise"`: the rows are (user, items[k], negative k) for k = 0..n-2 of every user, i.e. each
  training interaction exactly once per epoch. `loss(batch)` adds one to the count of each `batch.target` (the
  positives; negatives are ignored) while `self.training` is True, so evaluation batches never count.
- `loss` returns `0 * anchor`, a zero that requires grad, so the trainer's backward / clip / step run unchanged.
  `anchor` is a dummy scalar parameter that exists only because optimisers refuse an empty parameter list; it
  never influences a score (and lr is 0 in conf/model/pop.yaml).
Training for ONE epoch gives exact counts. Further epochs multiply every count by the number of epochs, which
keeps the ranking of items but not the log(1 + count) values, so the yaml trains 1 epoch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch
from models.interface import SeqRecModel
from models.registry import register


@register("pop")
class Pop(SeqRecModel):
    train_format = "pairwise"
    one_user_vector = True  # full_scores: the same counts for every row, no forward pass per item
    data_parallel = False
    gradient_free = True
    data_parallel_note = "its counts would hold only rank 0's share of each batch"

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray):
        super().__init__()
        self.n_items = n_items
        self.register_buffer("counts", torch.zeros(n_items, dtype=torch.float64))  # [n_items], saved with the model
        self.anchor = nn.Parameter(torch.zeros(()))  # dummy, see the docstring

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.training:
            self.counts.index_add_(0, batch.target, torch.ones_like(batch.target, dtype=self.counts.dtype))
        return self.anchor * 0.0  # [] zero with a grad path

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:  # [B, C] -> [B, C]
        return torch.log1p(self.counts[candidates]).float()

    @torch.no_grad()
    def full_scores(self, batch: Batch, chunk: int = 4096) -> torch.Tensor:  # [B, n_items]
        return torch.log1p(self.counts).float().expand(len(batch), -1).clone()  # a copy: callers may mask in place
