"""SASRec's three losses (model.params.loss = bce | ce | gbce) against the formulas written out by hand, position by
position in float64 Python, on a tiny batch with fixed weights and fixed negatives; GELU and S3Rec's N(0, 0.02^2)
initialisation; the default stays the paper's BCE."""
from __future__ import annotations

import math

import pytest
import torch

from models.sasrec import SASRec
from tests.models.helpers import N_ITEMS, random_batch, shape_kwargs
from tests.models.helpers import one_thread  # noqa: F401  (a fixture, used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = [5, 1, 3, 6]  # one row without a transition: it adds no term


def make_model(**kw) -> SASRec:
    torch.manual_seed(0)
    return SASRec(**shape_kwargs(), **{"dim": 8, "n_blocks": 1, "n_heads": 2, "max_len": 10, "dropout": 0.0,
                                       **kw}).train()


def steps(model: SASRec, batch) -> list[tuple[list[float], int, int, int]]:
    """(output vector F_t, target item, row, step) for every real step: inputs items[:n-1], targets items[1:]."""
    width = max(LENGTHS) - 1
    inputs = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    mask = torch.zeros(len(LENGTHS), width, dtype=torch.bool)
    for b, n in enumerate(LENGTHS):
        inputs[b, :n - 1], mask[b, :n - 1] = batch.hist[b, :n - 1], True
    with torch.no_grad():
        out = model.encode(inputs, mask).double()
    return [(out[b, t].tolist(), int(batch.hist[b, t + 1]), b, t) for b, n in enumerate(LENGTHS) for t in range(n - 1)]


def score(model: SASRec, vector: list[float], item: int) -> float:
    return sum(x * y for x, y in zip(vector, model.item.weight[item].double().tolist()))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_bce_is_the_papers_loss_with_one_negative_per_step(monkeypatch):
    model, batch = make_model(), random_batch(LENGTHS, seed=3)
    fixed = torch.tensor([[7, 11, 13, 17, 19], [1, 2, 3, 4, 5], [23, 29, 31, 37, 39], [6, 8, 9, 10, 12]])
    monkeypatch.setattr(model, "sample_negatives", lambda shape, seq, seq_mask: fixed[:, :shape[1]])
    terms = [-log_sigmoid(score(model, f, pos)) - log_sigmoid(-score(model, f, int(fixed[b, t])))
             for f, pos, b, t in steps(model, batch)]
    assert float(model.loss(batch).detach()) == pytest.approx(sum(terms) / len(terms), abs=1e-6, rel=0)


def test_ce_is_a_softmax_over_the_whole_catalogue():
    model, batch = make_model(loss="ce"), random_batch(LENGTHS, seed=3)
    terms = []
    for f, pos, _, _ in steps(model, batch):
        logits = [score(model, f, i) for i in range(N_ITEMS)]
        terms.append(math.log(sum(math.exp(s) for s in logits)) - logits[pos])
    assert float(model.loss(batch).detach()) == pytest.approx(sum(terms) / len(terms), abs=1e-6, rel=0)


@pytest.mark.parametrize("t", [0.0, 0.75, 1.0])
def test_gbce_is_gsasrecs_calibrated_loss(monkeypatch, t):
    k = 3
    model, batch = make_model(loss="gbce", gbce_negatives=k, gbce_t=t), random_batch(LENGTHS, seed=3)
    g = torch.Generator().manual_seed(7)
    fixed = torch.randint(0, N_ITEMS, (len(LENGTHS), max(LENGTHS) - 1, k), generator=g)
    monkeypatch.setattr(model, "uniform_negatives", lambda shape, device: fixed[:, :shape[1]])
    alpha = k / (N_ITEMS - 1)
    beta = 1 - t + t * alpha  # = alpha * (t * (1 - 1/alpha) + 1/alpha), gSASRec's beta written out
    terms = [(-beta * log_sigmoid(score(model, f, pos))
              - sum(log_sigmoid(-score(model, f, int(n))) for n in fixed[b, t_])) / (k + 1)
             for f, pos, b, t_ in steps(model, batch)]
    assert model.gbce_beta() == pytest.approx(beta, abs=1e-12)
    assert float(model.loss(batch).detach()) == pytest.approx(sum(terms) / len(terms), abs=1e-6, rel=0)


def test_gbce_draws_its_negatives_uniformly_from_the_catalogue():
    model = make_model(loss="gbce", gbce_negatives=64)
    torch.manual_seed(1)
    neg = model.uniform_negatives((4, 5, 64), torch.device("cpu"))
    assert neg.shape == (4, 5, 64) and int(neg.min()) >= 0 and int(neg.max()) < N_ITEMS
    assert len(set(neg.flatten().tolist())) == N_ITEMS  # 1,280 draws reach all 40 items


def test_every_loss_trains_and_back_propagates():
    batch = random_batch(LENGTHS, seed=3)
    for loss in ("bce", "ce", "gbce"):
        model = make_model(loss=loss, gbce_negatives=5)
        value = model.loss(batch)
        value.backward()
        assert torch.isfinite(value) and model.item.weight.grad.abs().sum() > 0, loss


def test_gelu_and_s3recs_initialisation():
    relu, gelu = make_model(), make_model(activation="gelu")
    assert isinstance(gelu.blocks[0].ffn[1], torch.nn.GELU) and isinstance(relu.blocks[0].ffn[1], torch.nn.ReLU)
    model = make_model(init_std=0.02, dim=64)
    weights = torch.cat([model.item.weight.flatten(), model.blocks[0].ffn[0].weight.flatten()]).detach()
    assert float(weights.std()) == pytest.approx(0.02, rel=0.05) and float(weights.mean()) == pytest.approx(0, abs=2e-3)
    assert float(model.blocks[0].attn.q.bias.detach().abs().max()) == 0.0
    assert float(relu.item.weight.detach().std()) > 0.1  # Xavier normal on a [40, 8] table: std sqrt(2 / 48) = 0.2


@pytest.mark.parametrize("kw, message", [
    ({"loss": "softmax"}, "model.params.loss='softmax': expected one of bce, ce, gbce"),
    ({"activation": "tanh"}, "model.params.activation='tanh'"),
    ({"loss": "gbce", "gbce_t": 1.5}, "gbce_t in [0, 1]")])
def test_unknown_choices_are_refused(kw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_model(**kw)


def test_a_gbce_sample_of_no_negative_is_refused_before_training():
    from runners.checks import check_model_sizes

    with pytest.raises(ValueError, match=r"model.params.gbce_negatives must be an integer >= 1 \(negatives per step\)"):
        check_model_sizes({"loss": "gbce", "gbce_negatives": 0})
