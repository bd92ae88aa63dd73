"""ATRank's optional multi-type extension (the switch behavior_groups=typed, models/atrank.py): the group encoders,
one projection per object type into the shared width, of the data `behaviours` (datasets/behaviours.Behaviours;
per batch, `batch.groups`).

As the official multi/ model (jinze1994/ATRank, multi/model.py) and the slides: a group is an object type.
  items:   item ++ category ++ [brand, shop, ...] ++ action(rating) ++ time   -> item layer  -> hidden
  group g: object ++ [its features: shop, category, ...] ++ time               -> g's layer   -> hidden
Feature tables are SHARED: a category is one embedding whether reached through an item, a coupon or a category
behaviour (entity groups, whose objects are the feature's values, use that table as their object table). Each
table is `dim` wide (64, as the reference). Time: `onehot` (the reference's one_hot(bucket), `time_slots` wide) or
`lookup` (a learned `dim`-wide row per bucket, the slides' lookup_t; concatenated, which a projection makes
equivalent to the slides' sum). Targets of any group are projected by their group's layer with zeros in the
action and time slots (the reference pads them: tf.pad(i_emb, [[0, 0], [0, 64 + 12]])); each group has its own
bias table (the reference's item_b, item_q, item_c), zero-initialised.
Histories of all groups are concatenated along the sequence axis with their masks, for ONE self-attention.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import N_TIME_BUCKETS, Batch
from models.interface import category_buffer
from models.layers import time_one_hot

N_ACTIONS = 6  # rating 0 (unknown) and 1..5


class GroupEncoders(nn.Module):
    """The item group and each of `behaviours`' groups: shared feature tables, a dense layer and a bias table per
    group (`layers`, `bias`, keyed by group name)."""

    def __init__(self, n_items: int, n_categories: int, item_category: np.ndarray, behaviours=None, dim: int = 64,
                 hidden: int = 128, time_slots: int = N_TIME_BUCKETS, time_encoding: str = "onehot"):
        super().__init__()
        if time_encoding not in ("onehot", "lookup"):
            raise ValueError(f"time_encoding must be 'onehot' or 'lookup', got {time_encoding!r}")
        vocab = {**(behaviours.vocab_sizes() if behaviours is not None else {}), "category": n_categories}
        self.tables = nn.ModuleDict({name: nn.Embedding(n, dim) for name, n in sorted(vocab.items())})
        self.tables["item"] = nn.Embedding(n_items, dim)
        self.item_features = ["category", *sorted(behaviours.item_features)] if behaviours is not None else ["category"]
        self.register_buffer("feat_item_category", category_buffer(item_category), persistent=False)
        for name in self.item_features[1:]:
            self.register_buffer(f"feat_item_{name}", torch.as_tensor(behaviours.item_features[name]),
                                 persistent=False)
        self.action = nn.Embedding(N_ACTIONS, dim)
        self.time_slots, self.time_encoding = time_slots, time_encoding
        self.time = nn.Embedding(N_TIME_BUCKETS, dim) if time_encoding == "lookup" else None
        time_width = dim if time_encoding == "lookup" else time_slots
        self.groups = list(behaviours.groups) if behaviours is not None else []
        self.group_names = ["item", *(g.name for g in self.groups)]
        self.layers = nn.ModuleDict({"item": nn.Linear(dim * (len(self.item_features) + 2) + time_width, hidden)})
        self.bias = nn.ModuleDict({"item": nn.Embedding(n_items, 1)})
        self.group_features: dict[str, list[str]] = {"item": self.item_features}
        self.object_table: dict[str, str] = {"item": "item"}
        for g in self.groups:
            if g.entity is None:
                self.tables[f"object_{g.name}"] = nn.Embedding(g.n_objects, dim)
            self.object_table[g.name] = g.entity or f"object_{g.name}"
            self.group_features[g.name] = sorted(g.features)
            for name in self.group_features[g.name]:
                self.register_buffer(f"feat_{g.name}_{name}", torch.as_tensor(g.features[name]), persistent=False)
            self.layers[g.name] = nn.Linear(dim * (len(g.features) + 1) + time_width, hidden)
            self.bias[g.name] = nn.Embedding(g.n_objects, 1)
        for table in self.tables.values():
            nn.init.xavier_uniform_(table.weight)  # TF's get_variable default, as the rest of ATRank
        for b in self.bias.values():
            nn.init.zeros_(b.weight)

    def parts(self, group: str, ids: torch.Tensor) -> torch.Tensor:
        """Object ++ its features' embeddings: [...] -> [..., dim * (1 + n_features)]."""
        own = self.tables[self.object_table[group]](ids)
        feats = [self.tables[f](getattr(self, f"feat_{group}_{f}")[ids]) for f in self.group_features[group]]
        return torch.cat([own, *feats], dim=-1)

    def time_part(self, bucket: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Time-gap buckets [...] -> [..., time width]: the learned row (lookup) or the one-hot (onehot)."""
        if self.time is not None:
            return self.time(bucket)
        return time_one_hot(bucket, self.time_slots, dtype)

    def history(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """All groups' projected behaviours concatenated along the sequence: ([B, L + sum Lg, hidden], mask)."""
        x = self.parts("item", batch.hist)
        x = torch.cat([x, self.action(batch.hist_rating.clamp(0, N_ACTIONS - 1)), self.time_part(batch.hist_time,
                                                                                                   x.dtype)], -1)
        h, masks = [self.layers["item"](x)], [batch.mask]
        if len(batch.groups) < len(self.groups):
            raise ValueError(f"the model has behaviour groups {self.group_names[1:]} but the batch carries "
                             f"{len(batch.groups)}: load the dataset with the same `behaviours` option")
        for g, gh in zip(self.groups, batch.groups):
            x = self.parts(g.name, gh.objects)
            h.append(self.layers[g.name](torch.cat([x, self.time_part(gh.time, x.dtype)], -1)))
            masks.append(gh.mask)
        return torch.cat(h, dim=1), torch.cat(masks, dim=1)

    def targets(self, ids: torch.Tensor, group: str = "item") -> torch.Tensor:
        """Targets of `group` projected by its layer, zeros in the action/time slots: [...] -> [..., hidden]."""
        x = self.parts(group, ids)
        layer = self.layers[group]
        return nn.functional.linear(x, layer.weight[:, : x.shape[-1]], layer.bias)

    def target_bias(self, ids: torch.Tensor, group: str = "item") -> torch.Tensor:
        return self.bias[group](ids).squeeze(-1)
