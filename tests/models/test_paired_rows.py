"""Paired training rows (trainer.pair_rows): one history encoded once for its positive and its negative gives the
same loss and the same gradient of every parameter as the two rows fed separately (the earlier path).

Real pipeline on generated data: datasets.batching.train_rows builds both layouts from the same split; the test
takes the same prefixes both ways, in one batch each."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.batching import BatchMaker, Rows, train_rows
from datasets.split import make_split
from datasets.table import build_table
from models.registry import get_model
from runners.train.trainer import seed_everything
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")
POINTWISE = ["atrank", "bilstm", "bilstm_att", "cnn", "din", "gru4rec"]


@pytest.fixture(scope="module")
def data():
    table = build_table(synthetic.generate(n_users=120, n_items=150, n_categories=9, seed=5), "tiny")
    return table, make_split(table, "paper", 1234)


def unpaired_rows_of(prefixes: Rows) -> Rows:
    """The two separate rows of each prefix, as the earlier path fed them: (history, pos, 1) and (history, neg, 0)."""
    n = len(prefixes)
    return Rows(np.concatenate([prefixes.user] * 2), np.concatenate([prefixes.end] * 2),
                np.concatenate([prefixes.target, prefixes.neg]),
                label=np.concatenate([np.ones(n, np.float32), np.zeros(n, np.float32)]))


def loss_and_grads(model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    loss.backward()
    return loss.item(), {k: p.grad.to_dense() if p.grad.is_sparse else p.grad.clone()
                         for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", POINTWISE)
def test_paired_loss_and_gradients_equal_the_separate_rows(data, name):
    table, split = data
    paired = train_rows(table, split, "pointwise", paired=True)
    assert paired.label is None and len(paired) * 2 == len(train_rows(table, split, "pointwise"))
    prefixes = paired.take(np.random.default_rng(0).choice(len(paired), 24, replace=False))
    assert (prefixes.end - table.indptr[prefixes.user]).max() > 3  # histories of several lengths
    maker = BatchMaker(table)
    seed_everything(0)
    model = get_model(name)(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                            item_category=table.item_category, l2_reg=1e-2)  # an L2 large enough to matter
    model.train()
    loss_p, grads_p = loss_and_grads(model, maker.make(prefixes))
    loss_u, grads_u = loss_and_grads(model, maker.make(unpaired_rows_of(prefixes)))
    assert loss_p == pytest.approx(loss_u, rel=1e-5)
    assert grads_p.keys() == grads_u.keys() and len(grads_p) == len(list(model.parameters()))
    for k in grads_u:
        torch.testing.assert_close(grads_p[k], grads_u[k], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name} {k}: {m}")


@pytest.mark.parametrize("name", ["atrank", "bilstm"])
def test_a_different_negative_changes_the_paired_loss(data, name):
    """The negative's row really takes part (the test above could not fail if it were dropped on both sides)."""
    table, split = data
    prefixes = train_rows(table, split, "pointwise", paired=True).take(np.arange(16))
    other = Rows(prefixes.user, prefixes.end, prefixes.target, neg=(prefixes.neg + 1) % table.n_items)
    maker = BatchMaker(table)
    seed_everything(0)
    model = get_model(name)(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                            item_category=table.item_category)
    with torch.no_grad():
        assert model.loss(maker.make(prefixes)).item() != pytest.approx(model.loss(maker.make(other)).item(), rel=1e-6)
