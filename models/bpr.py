"""BPR: Bayesian Personalized Ranking from implicit feedback (Rendle et al., UAI 2009), as in the ATRank reference.

x_uij = (b_i + <u, e_i>) - (b_j + <u, e_j>), with e = item embedding ++ category embedding (64 + 64) and a
128-d user embedding; loss = -mean(log sigmoid(x_uij)) + l2_reg * (l2(u) + l2(e_i) + l2(e_j)) where
l2(x) = sum(x^2)/2 over the batch (tf.nn.l2_loss). No sequence: the history in the batch is ignored.
Reference recipe: plain SGD lr 1.0, no clipping, batch 32, 50 epochs, triples (user, items[k], neg k) for
k = 0..n-2 shuffled once (conf/model/bpr.yaml: reshuffle false).
Item biases start at 0 by default; reference mode (item_bias_init="tf_default") starts them as the reference's
tf.get_variable("item_b", [n_items]) does, glorot-uniform of a vector: U(+-sqrt(3 / n_items)).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch
from models.interface import UserVectorModel, l2_half_sum
from models.layers import ItemCategoryEmbedding
from models.registry import register


@register("bpr")
class BPR(UserVectorModel):
    train_format = "pairwise"

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, l2_reg: float = 5e-5, item_bias_init: str = "zero"):
        super().__init__()
        assert item_bias_init in ("zero", "tf_default")
        self.n_items = n_items
        self.emb = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
        if item_bias_init == "tf_default":  # TF's glorot for a 1-D shape: fan_in = fan_out = n_items
            nn.init.uniform_(self.emb.bias.weight, -(3.0 / n_items) ** 0.5, (3.0 / n_items) ** 0.5)
        self.user = nn.Embedding(n_users, self.emb.dim)
        nn.init.xavier_uniform_(self.user.weight)
        self.l2_reg = l2_reg

    def user_vector(self, batch: Batch) -> torch.Tensor:
        return self.user(batch.user)  # [B, D]: no sequence

    def loss(self, batch: Batch) -> torch.Tensor:
        u = self.user(batch.user)  # [B, D]
        e_i, e_j = self.emb(batch.target), self.emb(batch.neg)  # [B, D]
        x_uij = (self.emb.item_bias(batch.target) - self.emb.item_bias(batch.neg)
                 + (u * (e_i - e_j)).sum(-1))  # [B]
        return -batch.row_mean(nn.functional.logsigmoid(x_uij)) + self.l2_reg * l2_half_sum(u, e_i, e_j)
