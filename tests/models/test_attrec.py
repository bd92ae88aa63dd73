"""AttRec specifics: the yaml's paper settings, the paper's formula on single rows, L2 loss ignores padding, windows
of length-1 histories, hinge cases, unit-ball clipping after a step, fitting next items."""
from __future__ import annotations

import math

import pytest
import torch

from models.attrec import AttRec
from tests.models.helpers import (N_ITEMS, assert_loss_ignores_padding, build_from_yaml, fit, random_batch,
                                  random_candidates, shape_kwargs)
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is far faster on a shared CPU


def make_model(seed: int = 0, **kw) -> AttRec:
    torch.manual_seed(seed)
    return AttRec(**shape_kwargs(), **{"dim": 8, "L": 3, "T": 2, **kw}).eval()


def naive_score(model: AttRec, hist: list[int], user: int, item: int) -> float:
    """-y(u, i) written out item by item from the paper's equations (1)-(10)."""
    L, d = model.L, model.dim
    X, V, U, W = model.X.weight, model.V.weight, model.U.weight, model.W.weight
    win = hist[-L:]
    k = len(win)
    proj = [torch.relu(W @ (X[it] + model.te[L - k + n])) for n, it in enumerate(win)]  # slot of the latest = L-1
    rows = []
    for i in range(k):
        keys = [j for j in range(k) if j != i] or [i]  # diagonal masked; a lone item attends to itself
        s = torch.softmax(torch.stack([proj[i] @ proj[j] for j in keys]) / d ** 0.5, dim=0)
        rows.append(sum(s[n] * X[win[j]] for n, j in enumerate(keys)))
    m = torch.stack(rows).mean(0)
    y = model.w * (U[user] - V[item]).pow(2).sum() + (1 - model.w) * (m - X[item]).pow(2).sum()
    return -float(y)


def test_yaml_has_the_papers_settings():
    model = build_from_yaml("attrec")
    assert (model.L, model.T, model.w, model.gamma) == (5, 3, 0.3, 0.5)


@torch.no_grad()
def test_score_matches_the_papers_formula():
    model, batch = make_model(), random_batch([3, 1, 6, 4, 2])
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    for b in range(len(batch)):
        hist = batch.hist[b, :batch.lengths[b]].tolist()
        for c in range(cands.shape[1]):
            expected = naive_score(model, hist, int(batch.user[b]), int(cands[b, c]))
            assert scores[b, c].item() == pytest.approx(expected, abs=1e-5)


def test_l2_loss_ignores_padding():
    """The L2 term covers only the rows a window uses, never padded slots."""
    assert_loss_ignores_padding(make_model(l2=0.1), random_batch([3, 1, 6, 4]))


def test_length_one_histories():
    model, batch = make_model(), random_batch([1, 1, 1])
    loss = model.train().loss(batch)  # no window: a zero loss that still back-propagates
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss = model.loss(random_batch([2, 1]))  # one window whose history is a single item
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def hinge_case(gamma: float) -> tuple[AttRec, torch.Tensor]:
    """U = 0, X = 0 (so m = 0), V = 0 for every history item, a fixed negative item with ||V|| = 1:
    y_pos = 0 and y_neg = w for every pair."""
    model = make_model(gamma=gamma, w=0.3).train()
    neg_item = N_ITEMS - 1
    batch = random_batch([3, 1, 6, 4], n_items=N_ITEMS - 1)  # histories never contain the negative
    with torch.no_grad():
        model.U.weight.zero_()
        model.X.weight.zero_()
        model.V.weight.zero_()
        model.V.weight[neg_item, 0] = 1.0
    model.sample_negatives = lambda pos, pmask: torch.full_like(pos, neg_item)
    return model, model.loss(batch)


def n_pairs_per_window(lengths: list[int], T: int) -> tuple[int, int]:
    windows = sum(max(n - 1, 0) for n in lengths)
    pairs = sum(min(T, n - s) * T for n in lengths for s in range(1, n))
    return pairs, windows


def test_hinge_is_zero_when_every_positive_wins_by_more_than_gamma():
    model, loss = hinge_case(gamma=0.2)  # y_neg - y_pos = 0.3 > 0.2
    assert float(loss.detach()) == 0.0


def test_hinge_counts_every_positive_negative_pair_when_the_margin_is_violated():
    model, loss = hinge_case(gamma=0.5)  # each pair contributes 0 + 0.5 - 0.3 = 0.2
    pairs, windows = n_pairs_per_window([3, 1, 6, 4], model.T)
    assert float(loss.detach()) == pytest.approx(0.2 * pairs / windows, abs=1e-6)


def test_after_step_clips_every_embedding_to_the_unit_ball():
    model = make_model().train()
    with torch.no_grad():
        for emb in (model.X, model.V, model.U):
            emb.weight.mul_(5.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    opt.zero_grad()
    model.loss(random_batch([3, 1, 6, 4])).backward()
    opt.step()
    assert max(float(e.weight.detach().norm(dim=1).max()) for e in (model.X, model.V, model.U)) > 1.5
    model.after_step()
    for emb in (model.X, model.V, model.U):
        assert float(emb.weight.detach().norm(dim=1).max()) <= 1 + 1e-6


def test_fits_next_items():
    """A few Adam steps on a batch of sequences lower the hinge."""
    model = make_model(dim=16).train()
    batch = random_batch([6, 5, 6, 4, 6, 3], seed=4)
    first, last = fit(model, batch, torch.optim.Adam(model.parameters(), lr=0.05), steps=50, seed=0)
    assert last < 0.5 * first


REFERENCE = dict(w=0.2, pairs="aligned", reduction="sum", diagonal="after_softmax", table_l2=1e-3, W_l2=1e-2,
                 init_std=1e-3, unit_ball=False, position_signal="tensor2tensor")


def tf_timing_signal(length: int, channels: int) -> torch.Tensor:
    """tensor2tensor's add_timing_signal written out for one position at a time."""
    half = channels // 2
    rows = []
    for t in range(length):
        inc = math.log(1e4) / (half - 1)
        rows.append([math.sin(t * math.exp(-i * inc)) for i in range(half)]
                    + [math.cos(t * math.exp(-i * inc)) for i in range(half)] + [0.0] * (channels % 2))
    return torch.tensor(rows)


def authors_loss(model: AttRec, hist: list[list[int]], users: list[int], negs: dict) -> float:
    """The reference variant's loss transcribed from the authors' TensorFlow graph, window by window: softmax over
    the real keys, diagonal weight zeroed after it, mean over the real rows, aligned hinge summed, then
    l2_loss (sum of squares / 2) of whole tables (1e-3) and of W (1e-2)."""
    L, T, d = model.L, model.T, model.dim
    X, V, U, W = model.X.weight, model.V.weight, model.U.weight, model.W.weight
    te = tf_timing_signal(L, d)
    total = 0.0
    for b, seq in enumerate(hist):
        for s in range(1, len(seq)):
            win = seq[max(0, s - L):s]
            k = len(win)
            q = [torch.relu(W @ (X[it] + te[L - k + n])) for n, it in enumerate(win)]
            out = []
            for i in range(k):
                w = torch.softmax(torch.stack([q[i] @ q[j] for j in range(k)]) / math.sqrt(d), dim=0)
                out.append(sum(w[j] * X[win[j]] for j in range(k) if j != i))
            m = torch.stack([torch.as_tensor(o) * torch.ones(d) for o in out]).mean(0)
            for t, pos in enumerate(seq[s:s + T]):
                neg = negs[(b, s, t)]
                y = lambda item: 0.2 * (U[users[b]] - V[item]).pow(2).sum() + 0.8 * (m - X[item]).pow(2).sum()
                total += float(torch.relu(y(pos) + model.gamma - y(neg)))
    tables = sum(float(e.pow(2).sum()) for e in (U, V, X))
    return total + 1e-3 * tables / 2 + 1e-2 * float(W.pow(2).sum()) / 2


@torch.no_grad()
def test_reference_variant_matches_the_authors_formulas():
    model = make_model(dim=6, **REFERENCE).train()
    assert torch.allclose(model.te, tf_timing_signal(model.L, 6), atol=1e-6)
    assert float(model.U.weight.abs().max()) <= 2e-3  # truncated at 2 standard deviations of 0.001
    with torch.no_grad():  # larger values than the reference's init, so that the hinge is not flat
        for e in (model.U, model.V, model.X):
            e.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    batch = random_batch([3, 1, 6, 4])
    g = torch.Generator().manual_seed(7)
    fixed: dict = {}

    def negatives(pos: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
        neg = torch.randint(0, N_ITEMS, pos.shape, generator=g)
        for b, s, t in zip(*[i.tolist() for i in torch.nonzero(pmask, as_tuple=True)]):
            fixed[(b, s + 1, t)] = int(neg[b, s, t])  # window index s is start s + 1
        return neg

    model.sample_negatives = negatives
    loss = float(model.loss(batch))
    hist = [batch.hist[b, :n].tolist() for b, n in enumerate(batch.lengths.tolist())]
    assert loss == pytest.approx(authors_loss(model, hist, batch.user.tolist(), fixed), rel=1e-5)


def test_reference_variant_never_clips_and_paper_variant_does():
    for unit_ball, bound_held in ((False, False), (True, True)):
        model = make_model(**{**REFERENCE, "unit_ball": unit_ball})
        with torch.no_grad():
            model.X.weight.mul_(0).add_(2.0)  # every row of norm 2 * sqrt(d)
        model.after_step()
        assert (float(model.X.weight.detach().norm(dim=1).max()) <= 1 + 1e-6) == bound_held


def test_yaml_reference_params_are_the_authors():
    model = build_from_yaml("attrec", **__import__("yaml").safe_load(
        open("conf/model/attrec.yaml"))["reference_params"])
    assert (model.w, model.pairs, model.reduction, model.diagonal, model.unit_ball) == (
        0.2, "aligned", "sum", "after_softmax", False)
