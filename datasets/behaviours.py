"""Heterogeneous behaviours beside the item history: groups of other object types (queries, coupons, brands, ...)
that a user acted on over time, for ATRank's behaviour-group framework (models/atrank.py, behavior_groups=typed).

A group is one object type. Its events are (user, object, time) in CSR form per user, time-sorted; each object may
carry features (e.g. a coupon's shop and category) that index SHARED vocabularies, the same tables as the items'
own features, so a shop is one embedding whether it is reached through an item or a coupon. A group whose objects
are themselves a shared entity (amazon_hin's brand behaviours) sets `entity` and its object ids index that
vocabulary. Items stay in the Table; their extra features (brand, shop) live here in `item_features`.

Built once after the table (datasets/load.py), from raw keys mapped onto the table's ids; not cached on disk (it
is cheap), and its digest joins the table's content hash. A row's group history holds the events strictly before
the row target's time, so a target's own derived event (its brand, its category) never leaks into its history.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from datasets.batch import padded_window, time_bucket

USER_TIME_SHIFT = 40  # sort key = user << 40 | time: unix seconds fit in 40 bits until the year 36,812


@dataclass(frozen=True)
class RawGroup:
    """One group as raw keys: events (columns user, object, time) and each object's features (feature -> {object
    key -> value key}). `entity`: the objects are values of that shared feature (no own embedding table)."""

    name: str
    events: pd.DataFrame
    object_features: dict[str, dict[str, str]] = field(default_factory=dict)
    entity: str | None = None


@dataclass(frozen=True)
class BehaviourGroup:
    name: str
    indptr: np.ndarray  # int64 [n_users + 1]
    objects: np.ndarray  # int64 [n_events], ids into `object_keys` (or into vocab[entity] when entity is set)
    times: np.ndarray  # int64 [n_events], unix seconds, sorted within each user
    object_keys: np.ndarray  # str [n_objects]
    features: dict[str, np.ndarray]  # feature -> int64 [n_objects], ids into the shared vocabulary
    entity: str | None = None
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # user << 40 | time, sorted

    @property
    def n_objects(self) -> int:
        return len(self.object_keys)


@dataclass(frozen=True)
class Behaviours:
    """Everything beyond item + category: shared feature vocabularies, the items' extra features, the groups."""

    vocab: dict[str, np.ndarray]  # feature -> str keys ("category" is the table's category_keys)
    item_features: dict[str, np.ndarray]  # feature -> int64 [n_items]
    groups: tuple[BehaviourGroup, ...]
    digest: str

    def vocab_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.vocab.items()}


def build_behaviours(table, item_features: dict[str, dict[str, str]], groups: list[RawGroup]) -> Behaviours:
    """Map raw keys onto `table`'s ids. Every shared feature's vocabulary is the sorted union of its values over
    items and groups, except category, which is the table's own. Events of users not in the table are dropped;
    an item or object without a value for a feature gets the value "<unknown>"."""
    values: dict[str, set[str]] = {}
    for name, mapping in item_features.items():
        values.setdefault(name, set()).update(mapping.values())
    for g in groups:
        for name, mapping in g.object_features.items():
            values.setdefault(name, set()).update(mapping.values())
        if g.entity:
            values.setdefault(g.entity, set()).update(g.events["object"].astype(str))
    vocab = {name: np.array(sorted(v | {"<unknown>"}), dtype=str) for name, v in values.items() if name != "category"}
    vocab["category"] = table.category_keys
    for name, keys in vocab.items():
        if name == "category":
            missing = values.get("category", set()) - set(keys)
            if missing:
                raise ValueError(f"behaviours: category values {sorted(missing)[:5]} are not categories of the "
                                 "table's items; a group's category must be one of theirs")
    items = {name: _lookup(vocab[name], [mapping.get(k, "<unknown>") for k in table.item_keys])
             for name, mapping in item_features.items()}
    built = tuple(_build_group(table, g, vocab) for g in groups)
    return Behaviours(vocab=vocab, item_features=items, groups=built, digest=_digest(items, built))


def _lookup(keys: np.ndarray, values) -> np.ndarray:
    return np.searchsorted(keys, np.asarray(values, dtype=str)).astype(np.int64)


def _build_group(table, g: RawGroup, vocab: dict[str, np.ndarray]) -> BehaviourGroup:
    ev = g.events
    raw_user = ev["user"].to_numpy(dtype=str)
    user = np.searchsorted(table.user_keys, raw_user)
    known = (user < table.n_users) & (table.user_keys[np.minimum(user, table.n_users - 1)] == raw_user)
    ev, user = ev[known], user[known]
    obj_raw = ev["object"].to_numpy(dtype=str)
    object_keys = vocab[g.entity] if g.entity else np.unique(obj_raw)
    objects = _lookup(object_keys, obj_raw)
    times = ev["time"].to_numpy(dtype=np.int64)
    order = np.lexsort((times, user))
    indptr = np.zeros(table.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=table.n_users), out=indptr[1:])
    features = {name: _lookup(vocab[name], [m.get(k, "<unknown>") for k in object_keys])
                for name, m in g.object_features.items()}
    times = times[order]
    keys = (user[order].astype(np.int64) << USER_TIME_SHIFT) | times
    return BehaviourGroup(g.name, indptr, objects[order], times, object_keys, features, g.entity, keys)


def _digest(item_features: dict[str, np.ndarray], groups: tuple[BehaviourGroup, ...]) -> str:
    h = hashlib.sha256()
    for name in sorted(item_features):
        h.update(name.encode()), h.update(item_features[name].tobytes())
    for g in groups:
        h.update(f"{g.name}|{g.entity}".encode())
        for a in (g.indptr, g.objects, g.times, *[g.features[k] for k in sorted(g.features)]):
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def group_history(g: BehaviourGroup, users: np.ndarray, cutoff_time: np.ndarray, ref_day: np.ndarray,
                  max_len: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row: the user's events of group `g` strictly before `cutoff_time` (the last `max_len`), as
    right-padded (objects, time-gap buckets relative to `ref_day`, mask), each [B, Lg] with Lg >= 1."""
    key = (users.astype(np.int64) << USER_TIME_SHIFT) | cutoff_time
    end = np.searchsorted(g.keys, key, side="left")
    idx, mask, _ = padded_window(g.indptr[users], end, max_len)
    objects = np.where(mask, g.objects[idx] if len(g.objects) else 0, 0)
    days = g.times[idx] // 86400 if len(g.times) else np.zeros_like(idx)
    time = np.where(mask, time_bucket(ref_day[:, None] - days + 1), 0)
    return objects.astype(np.int64), time, mask

