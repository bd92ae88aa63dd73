"""Shared pieces of the model tests: small random Batches (no data files; right-padded histories exactly as
datasets/batching.py), building a model from its yaml, and the generic checks and training loop the tests reuse."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from datasets.batch import N_TIME_BUCKETS, Batch
from models.registry import get_model

N_USERS, N_ITEMS, N_CATEGORIES = 9, 40, 5
CONF = Path(__file__).resolve().parents[2] / "conf" / "model"


def item_categories(n_items: int = N_ITEMS, n_categories: int = N_CATEGORIES, seed: int = 0) -> np.ndarray:
    """A random item -> category map that uses every category."""
    rng = np.random.default_rng(seed)
    cats = rng.integers(0, n_categories, n_items)
    cats[:n_categories] = np.arange(n_categories)
    return cats.astype(np.int64)


def shape_kwargs(n_users: int = N_USERS, n_items: int = N_ITEMS, n_categories: int = N_CATEGORIES) -> dict:
    """The data-shape arguments every model constructor takes."""
    return dict(n_users=n_users, n_items=n_items, n_categories=n_categories,
                item_category=item_categories(n_items, n_categories))


def random_batch(lengths: list[int] | None = None, n_users: int = N_USERS, n_items: int = N_ITEMS,
                 seed: int = 0) -> Batch:
    """A Batch with right-padded histories of the given lengths (default [3, 1, 6, 4]), labels and negatives."""
    lengths = [3, 1, 6, 4] if lengths is None else lengths
    g = torch.Generator().manual_seed(seed)
    B, L = len(lengths), max(max(lengths), 1)
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    mask = torch.arange(L)[None, :] < lengths_t[:, None]  # [B, L]
    hist = torch.randint(0, n_items, (B, L), generator=g).masked_fill(~mask, 0)
    hist_time = torch.randint(0, N_TIME_BUCKETS, (B, L), generator=g).masked_fill(~mask, 0)
    hist_rating = torch.randint(1, 6, (B, L), generator=g).masked_fill(~mask, 0)
    return Batch(user=torch.randint(0, n_users, (B,), generator=g), hist=hist, hist_time=hist_time,
                 hist_rating=hist_rating, mask=mask, lengths=lengths_t,
                 target=torch.randint(0, n_items, (B,), generator=g),
                 label=torch.randint(0, 2, (B,), generator=g).float(),
                 neg=torch.randint(0, n_items, (B,), generator=g))


def scramble_padding(batch: Batch, n_items: int = N_ITEMS, seed: int = 1) -> Batch:
    """The same batch with random junk in every padded slot (mask and lengths unchanged)."""
    g = torch.Generator().manual_seed(seed)
    pad = ~batch.mask

    def junk(x: torch.Tensor, high: int) -> torch.Tensor:
        return torch.where(pad, torch.randint(0, high, x.shape, generator=g), x)

    return replace(batch, hist=junk(batch.hist, n_items), hist_time=junk(batch.hist_time, N_TIME_BUCKETS),
                   hist_rating=junk(batch.hist_rating, 6))


def random_candidates(batch: Batch, n_candidates: int = 5, n_items: int = N_ITEMS, seed: int = 2) -> torch.Tensor:
    """[B, C] candidate items."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_items, (len(batch), n_candidates), generator=g)


def extend_padding(batch: Batch, extra: int = 3, seed: int = 3) -> Batch:
    """The same batch padded `extra` slots wider (junk in the new slots, mask False): scores must not move."""
    g = torch.Generator().manual_seed(seed)
    B = len(batch)

    def widen(x: torch.Tensor, high: int) -> torch.Tensor:
        return torch.cat([x, torch.randint(0, high, (B, extra), generator=g)], dim=1)

    return replace(batch, hist=widen(batch.hist, N_ITEMS), hist_time=widen(batch.hist_time, N_TIME_BUCKETS),
                   hist_rating=widen(batch.hist_rating, 6),
                   mask=torch.cat([batch.mask, torch.zeros(B, extra, dtype=torch.bool)], dim=1))


def planted_batch(n_rows: int = 64, n_items: int = N_ITEMS, seed: int = 0) -> Batch:
    """Pointwise rows with a learnable rule: label 1 iff the target's category equals the last history item's."""
    cats = torch.as_tensor(item_categories(n_items))
    batch = random_batch(list(np.random.default_rng(seed).integers(1, 7, n_rows)), n_items=n_items, seed=seed)
    last = batch.hist[torch.arange(n_rows), batch.lengths - 1]
    label = (cats[batch.target] == cats[last]).float()
    return replace(batch, label=label)


def row_alone(batch: Batch, i: int) -> Batch:
    """Row i as a batch of its own, padded to its own length only."""
    n = max(int(batch.lengths[i]), 1)
    return Batch(**{k: None if v is None else (v[i:i + 1, :n] if v.dim() == 2 else v[i:i + 1])
                    for k, v in vars(batch).items() if k not in ("groups", "mean_rows")})


def build_from_yaml(name: str, seed: int = 0, **overrides):
    """The registered model `name` built from conf/model/<name>.yaml (params updated by `overrides`), after
    checking that the yaml names it and declares its train_format."""
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert cfg["name"] == name
    torch.manual_seed(seed)
    model = get_model(name)(**shape_kwargs(), **{**(cfg["params"] or {}), **overrides})
    assert model.train_format == cfg["train_format"]
    return model


@torch.no_grad()
def assert_padding_invariant(model, batch: Batch, cands: torch.Tensor, atol: float = 1e-6,
                             rows_alone: bool = True) -> None:
    """Junk in the padded slots (scramble_padding) and wider padding (extend_padding) change no score and no
    full_scores entry, and (if rows_alone) each row scored alone, padded to its own length, scores the same."""
    scores, full = model.score(batch, cands), model.full_scores(batch)
    for other in (scramble_padding(batch), extend_padding(batch)):
        assert torch.allclose(model.score(other, cands), scores, atol=atol, rtol=0)
        assert torch.allclose(model.full_scores(other), full, atol=atol, rtol=0)
    if rows_alone:
        for i in range(len(batch)):
            assert torch.allclose(model.score(row_alone(batch, i), cands[i:i + 1]), scores[i:i + 1], atol=atol, rtol=0)


def assert_loss_ignores_padding(model, batch: Batch, seed: int = 5) -> None:
    """Junk in the padded slots does not change the loss (torch's RNG reset, so that sampled negatives and dropout
    draws are the same for both)."""
    torch.manual_seed(seed)
    loss = model.loss(batch)
    torch.manual_seed(seed)
    assert torch.allclose(model.loss(scramble_padding(batch)), loss, atol=1e-6, rtol=0)


def fit(model, batch: Batch, opt: torch.optim.Optimizer, steps: int, clip_norm: float | None = None,
        seed: int | None = None) -> tuple[float, float]:
    """The loss on `batch` before and after `steps` optimiser steps on it (gradient-norm clip if clip_norm;
    model.after_step() after every step, as the trainer). With a seed, torch's RNG is reset to it before each of
    the two measurements, so that models sampling negatives are measured on the same draws."""
    if seed is not None:
        torch.manual_seed(seed)
    first = float(model.loss(batch).detach())
    for _ in range(steps):
        opt.zero_grad()
        model.loss(batch).backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        opt.step()
        model.after_step()
    if seed is not None:
        torch.manual_seed(seed)
    return first, float(model.loss(batch).detach())


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: tiny models are much slower with 2 threads on a busy shared CPU.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")` after importing it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
