"""POP specifics: counts are exactly the training positives, scores are log(1 + count) and agree EXACTLY (no
tolerance) across score/full_scores/padding on a trained model, the trainer's step still runs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.pop import Pop
from tests.models.helpers import N_ITEMS, random_batch, random_candidates, scramble_padding, shape_kwargs
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is far faster on a shared CPU


def one_epoch(model: Pop, targets: np.ndarray, batch_size: int = 7) -> None:
    """One pass over pairwise rows whose positives are `targets`, with an optimiser step per batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    model.train()
    for s in range(0, len(targets), batch_size):
        t = torch.as_tensor(targets[s:s + batch_size])
        batch = replace(random_batch([1] * len(t), seed=s), target=t, neg=torch.zeros_like(t), label=None)
        opt.zero_grad()
        loss = model.loss(batch)
        assert loss.shape == () and loss.requires_grad and float(loss.detach()) == 0.0
        loss.backward()
        opt.step()
        model.after_step()


def test_counts_equal_bincount_of_positives_after_one_pass():
    targets = np.random.default_rng(0).zipf(1.5, 200) % N_ITEMS
    model = Pop(**shape_kwargs())
    one_epoch(model, targets)
    assert np.array_equal(model.counts.numpy(), np.bincount(targets, minlength=N_ITEMS))


def test_eval_mode_loss_does_not_count():
    model = Pop(**shape_kwargs()).eval()
    model.loss(random_batch())
    assert float(model.counts.sum()) == 0.0


def test_scores_shapes_and_ranking():
    targets = np.array([3] * 5 + [7] * 2 + [1])
    model = Pop(**shape_kwargs())
    one_epoch(model, targets)
    model.eval()
    batch = random_batch()
    full = model.full_scores(batch)
    assert full.shape == (4, N_ITEMS)
    assert (full.argmax(1) == 3).all()
    assert torch.allclose(full[0, [3, 7, 1, 0]], torch.log1p(torch.tensor([5.0, 2.0, 1.0, 0.0])))
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    assert scores.shape == (4, 5)
    assert torch.equal(scores, full.gather(1, cands))
    assert torch.equal(model.score(batch, cands[:, 2:3])[:, 0], scores[:, 2])
    assert torch.equal(scores, model.score(scramble_padding(batch), cands))
    assert model.score(random_batch([1, 1]), cands[:2]).shape == (2, 5)
