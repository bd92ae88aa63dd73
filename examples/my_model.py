"""A model from outside the repository, in one file: the user is the mean of their history's item embeddings,
trained with BPR's pairwise loss. Run it with this file's folder on PYTHONPATH:
    PYTHONPATH=examples python runners/run.py model=custom model.target=my_model:MeanOfHistory +model.params.dim=16"""
import numpy as np
import torch
from torch import nn

from models.interface import SeqRecModel


class MeanOfHistory(SeqRecModel):
    train_format = "pairwise"  # rows (user, history, positive target, sampled negative neg)

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray, dim: int = 32):
        super().__init__()
        self.n_items = n_items  # the default full_scores reads it
        self.item, self.out = nn.Embedding(n_items, dim), nn.Embedding(n_items, dim)

    def user_vector(self, batch) -> torch.Tensor:  # [B, D]; padded slots (mask False) never count
        m = batch.mask.unsqueeze(-1).float()
        return (self.item(batch.hist) * m).sum(1) / m.sum(1).clamp(min=1)

    def score(self, batch, candidates: torch.Tensor) -> torch.Tensor:  # candidates [B, C] -> [B, C]
        return torch.einsum("bd,bcd->bc", self.user_vector(batch), self.out(candidates))

    def loss(self, batch) -> torch.Tensor:  # mean over rows of -log sigmoid(s+ - s-)
        s = self.score(batch, torch.stack([batch.target, batch.neg], 1))
        return -batch.row_mean(nn.functional.logsigmoid(s[:, 0] - s[:, 1]))
