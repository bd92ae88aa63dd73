"""Sparse embedding gradients (runners/step/optim.py prepare_optimizer) give the same training as dense ones.

The trainer switches every nn.Embedding to sparse gradients when the optimiser's update is unchanged by it (SGD or
Adagrad without weight decay); clipping then goes through the sparse-aware clip_grad_norm. At every step of a
25-step training, the sparse step from the same weights must land on the dense step's weights to rounding level,
with and without clipping.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.batching import BatchMaker, batch_order, train_rows
from datasets.split import make_split
from datasets.table import build_table
from models.registry import get_model
from runners.step.optim import clip_grad_norm, prepare_optimizer, sparse_grad_ok, train_step
from runners.train.runtime import seed_everything
from runners.step.settings import TrainSettings
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

# One intra-op thread for both runs: with two, a reduction's order may differ between the dense and the sparse run
# (one item-table entry in 12,800 then drifts 1.9e-5 apart on ATRank when this file runs alone).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    table = build_table(synthetic.generate(n_users=300, n_items=200, n_categories=12, seed=3), "tiny")
    return table, make_split(table, "paper", 1234)


def sparse_step_gaps(model_name: str, params: dict, s: TrainSettings, data, steps: int = 25
                     ) -> tuple[list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Along `steps` steps of dense-gradient training: from the same weights (and optimiser state), the largest
    parameter difference between the dense step and the sparse one (prepare_optimizer's sparse_grad="auto"), per
    step; plus the weights at the start and the end. Comparing step by step, not two whole trajectories, keeps the
    check at rounding level: at SGD lr 1.0 a rounding difference (sparse rows are summed in another order than
    dense ones) that meets a ReLU kink grows by orders of magnitude within a few steps."""
    table, split = data
    seed_everything(0)
    model = get_model(model_name)(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                                  item_category=table.item_category, **params)
    rows = train_rows(table, split, model.train_format)
    maker = BatchMaker(table, max_len=s.max_len)
    optimizer, plist = prepare_optimizer(model, s.optimizer, s.lr, s.weight_decay, sparse_grad=False)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gaps = []
    for idx in batch_order(rows, s.batch_size, np.random.default_rng([0, 0]), indptr=table.indptr)[:steps]:
        batch = maker.make(rows.take(idx))
        twin = copy.deepcopy(model)
        twin_optimizer, twin_plist = prepare_optimizer(twin, s.optimizer, s.lr, s.weight_decay, sparse_grad="auto")
        assert all(m.sparse for m in twin.modules() if isinstance(m, torch.nn.Embedding))
        for p, q in zip(plist, twin_plist):  # Adagrad's sums so far
            twin_optimizer.state[q] = copy.deepcopy(optimizer.state[p])
        rng = torch.get_rng_state()  # AttRec draws its negatives in the step: the same ones for both
        train_step(model, optimizer, plist, batch, s.clip_norm)
        torch.set_rng_state(rng)
        train_step(twin, twin_optimizer, twin_plist, batch, s.clip_norm)
        gaps.append(max(float((p - q).detach().abs().max()) for p, q in zip(plist, twin_plist)))
    return gaps, start, {k: v.detach().clone() for k, v in model.state_dict().items()}


CASES = [  # (model, params, optimiser, lr, clip): the Table 3 recipes (SGD lr 1, clip 5; BPR unclipped) + Adagrad
    ("bpr", {}, "sgd", 1.0, None),
    ("atrank", {}, "sgd", 1.0, 5.0),
    ("atrank", {}, "sgd", 1.0, 0.05),  # a clip that bites at every step
    ("gru4rec", {}, "sgd", 1.0, 5.0),
    ("attrec", {}, "adagrad", 0.05, None),
]


@pytest.mark.parametrize("model_name,params,optimizer,lr,clip", CASES)
def test_sparse_and_dense_gradients_make_the_same_steps(data, model_name, params, optimizer, lr, clip):
    s = TrainSettings(optimizer=optimizer, lr=lr, clip_norm=clip, batch_size=32)
    gaps, start, end = sparse_step_gaps(model_name, params, s, data)
    assert len(gaps) >= 10 and max(gaps) < 1e-5, gaps  # 25 steps (AttRec: its 10 batches of users)
    embeddings = [k for k in end if k.endswith("weight") and end[k].shape[0] in (data[0].n_items, data[0].n_users)]
    assert embeddings and all(not torch.equal(end[k], start[k]) for k in embeddings)  # training moved them


def test_auto_keeps_adam_and_weight_decay_dense():
    assert not sparse_grad_ok("adam", 0.0)
    assert not sparse_grad_ok("sgd", 1e-4)
    assert sparse_grad_ok("sgd", 0.0) and sparse_grad_ok("adagrad", 0.0)


def test_clip_of_sparse_gradients_equals_torch_clip_of_the_dense_ones():
    torch.manual_seed(0)
    dense_emb, sparse_emb = torch.nn.Embedding(20, 4), torch.nn.Embedding(20, 4, sparse=True)
    sparse_emb.load_state_dict(dense_emb.state_dict())
    lin = torch.nn.Linear(4, 1)
    idx = torch.tensor([[1, 1, 3], [3, 7, 1]])  # repeated rows: the sparse gradient is uncoalesced
    grads = []
    for emb in (dense_emb, sparse_emb):
        lin.zero_grad(set_to_none=True)
        (lin(emb(idx)).square().sum() * 10).backward()
        params = [emb.weight, *lin.parameters()]
        norm = (torch.nn.utils.clip_grad_norm_ if emb is dense_emb else clip_grad_norm)(params, 0.5)
        grads.append((norm, emb.weight.grad.to_dense(), lin.weight.grad.clone()))
    (n_d, e_d, l_d), (n_s, e_s, l_s) = grads
    torch.testing.assert_close(n_s, n_d)
    torch.testing.assert_close(e_s, e_d)
    torch.testing.assert_close(l_s, l_d)
    assert float(torch.linalg.vector_norm(torch.cat([e_s.flatten(), l_s.flatten(), lin.bias.grad]))) == \
        pytest.approx(0.5, rel=1e-4)
