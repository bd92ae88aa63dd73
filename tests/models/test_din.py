"""DIN specifics: the split first layer equals the paper's concat MLP, padding never leaks with a trained-like Dice
state (also in training mode), Dice and PReLU by their formulas, a small model learns a planted rule."""
from __future__ import annotations

import pytest
import torch

from models.din import DIN, Dice
from tests.models.helpers import (assert_padding_invariant, fit, one_thread, planted_batch, random_batch,  # noqa: F401
                                  random_candidates, shape_kwargs)

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(activation: str = "dice", seed: int = 0) -> DIN:
    torch.manual_seed(seed)
    model = DIN(**shape_kwargs(), item_dim=8, cat_dim=8, att_hidden=(12, 6), mlp_hidden=(10, 5),
                activation=activation)
    with torch.no_grad():  # non-trivial Dice state, as after some training
        for module in model.modules():
            if isinstance(module, Dice):
                module.alpha.uniform_(-0.5, 0.5)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_attention_unit_equals_the_plain_concat_mlp():
    """The split first layer is the paper's MLP over [h, t, h - t, h * t]; weights are not normalised."""
    model, batch = make_model(), random_batch()
    cands = random_candidates(batch)
    h, t = model.emb(batch.hist), model.emb(cands)  # [B, L, D], [B, C, D]
    weights = model.attention_weights(h, batch.mask, t)  # [B, C, L]
    hh, tt = h[:, None].expand(-1, 5, -1, -1), t[:, :, None].expand(-1, -1, h.shape[1], -1)
    a = torch.cat([hh, tt, hh - tt, hh * tt], dim=-1)  # [B, C, L, 4D]
    for layer, act in zip(model.att, model.att_act):
        a = act(layer(a))
    expected = model.att_out(a).squeeze(-1) * batch.mask[:, None, :]
    assert torch.allclose(weights, expected, atol=1e-5)
    assert not torch.allclose(weights.sum(-1), torch.ones(4, 5))


@pytest.mark.parametrize("training", [False, True])
def test_padding_never_changes_scores(training):
    """Also in training mode: Dice's batch statistics use the real history slots only. A row alone is compared in
    eval mode only: batch statistics make a row's training-mode score depend on its batch, as batch norm."""
    model, batch = make_model().train(training), random_batch([3, 1, 6, 4])
    assert_padding_invariant(model, batch, random_candidates(batch), atol=1e-6, rows_alone=not training)


def test_dice():
    dice = Dice(3)
    with torch.no_grad():
        dice.alpha.fill_(0.25)
    x = torch.randn(50, 3) * 4 + 1
    p = torch.sigmoid((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-8))
    assert torch.allclose(dice(x), p * x + (1 - p) * 0.25 * x, atol=1e-6)
    assert torch.allclose(dice.running_mean, 0.1 * x.mean(0), atol=1e-6)  # one step of momentum 0.1 from 0
    masked = torch.cat([x, torch.full((7, 3), 100.0)])  # extra rows left out of the statistics
    keep = torch.arange(57) < 50
    assert torch.allclose(dice(masked, keep)[:50], dice(x), atol=1e-6)
    dice.eval()
    p = torch.sigmoid((x - dice.running_mean) / torch.sqrt(dice.running_var + 1e-8))
    assert torch.allclose(dice(x), p * x + (1 - p) * 0.25 * x, atol=1e-6)
    prelu = Dice(3, adaptive=False)
    with torch.no_grad():
        prelu.alpha.fill_(0.25)
    assert torch.allclose(prelu(x), torch.where(x > 0, x, 0.25 * x))


@pytest.mark.parametrize("activation", ["dice", "prelu"])
def test_sgd_reduces_loss(activation):
    model = make_model(activation).train()
    first, last = fit(model, planted_batch(), torch.optim.SGD(model.parameters(), lr=0.5), steps=30, clip_norm=5.0)
    assert last < first - 0.1


REFERENCE = dict(activation="sigmoid", mlp_hidden=(80, 40), attention="softmax", att_order="reference",
                 frozen_bn=True, pooled_dense=16)


def authors_logit(model: DIN, hist: torch.Tensor, n: int, item: torch.Tensor) -> torch.Tensor:
    """din/model.py for one row, transcribed: attention(), batch_normalization (inference statistics), hist_fcn,
    b1, f1/f2 sigmoid, f3, + item_b. Parameters are read from the model."""
    sig = torch.sigmoid
    q = model.emb(item[None])[0]  # [H]
    k = model.emb(hist[None, :n])[0]  # [n, H]
    H = k.shape[-1]  # keys.get_shape()[-1]: 128 in the authors' setting
    qq = q.expand_as(k)
    din_all = torch.cat([qq, k, qq - k, qq * k], dim=-1)  # the authors' order
    a = sig(model.att[0](din_all))
    a = sig(model.att[1](a))
    w = torch.softmax(model.att_out(a).squeeze(-1) / H ** 0.5, dim=0)  # [n]; padding's -2^32 weights are 0
    hist_vec = w @ k  # [H]

    def bn(x, mod):  # moving mean 0, moving variance 1, epsilon 1e-3
        return mod.gamma * (x - 0.0) / (1.0 + 1e-3) ** 0.5 + mod.beta

    u = model.pooled_dense(bn(hist_vec, model.pooled_norm))
    z = bn(torch.cat([u, q]), model.top_norm)
    z = sig(model.mlp[1](sig(model.mlp[0](z))))
    return model.emb.item_bias(item) + model.mlp_out(z).squeeze(-1)


@torch.no_grad()
def test_reference_variant_is_the_authors_model():
    torch.manual_seed(0)
    model = DIN(**shape_kwargs(), item_dim=8, cat_dim=8, att_hidden=(80, 40), **REFERENCE).eval()
    with torch.no_grad():  # learned-looking affine maps and biases (the initial ones are 1, 0)
        for p in (model.pooled_norm.gamma, model.pooled_norm.beta, model.top_norm.gamma, model.top_norm.beta,
                  model.emb.bias.weight):
            p.uniform_(-1.0, 1.0)
    batch = random_batch()
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    h = batch.hist
    for b, n in enumerate(batch.lengths.tolist()):
        for c in range(cands.shape[1]):
            expected = authors_logit(model, h[b], n, cands[b, c])
            assert scores[b, c].item() == pytest.approx(expected.item(), abs=1e-5)
    assert model.train().loss(batch).isfinite()  # no batch statistics: training mode scores the same
    assert torch.allclose(model.score(batch, cands), scores, atol=1e-6)


def test_reference_softmax_weights_sum_to_one_over_real_slots_only():
    torch.manual_seed(0)
    model = DIN(**shape_kwargs(), item_dim=8, cat_dim=8, att_hidden=(12, 6), **REFERENCE).eval()
    batch = random_batch()
    cands = random_candidates(batch)
    with torch.no_grad():
        w = model.attention_weights(model.emb(batch.hist), batch.mask, model.emb(cands))  # [B, C, L]
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[:2]), atol=1e-6)
    assert float(w.masked_select(~batch.mask[:, None, :].expand_as(w)).abs().max()) == 0.0
