"""CNN + max pooling: both padding modes against brute force, padding never leaks, candidates, a tiny fit."""
from __future__ import annotations

import pytest
import torch

from models.cnn import CNN
from models.registry import get_model
from tests.models.helpers import (N_ITEMS, extend_padding, one_thread, planted_batch, random_batch,  # noqa: F401
                                  random_candidates, row_alone, scramble_padding, shape_kwargs)

MODES = ["valid", "reference"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(padding_mode: str = "valid", seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    model = CNN(**shape_kwargs(), item_dim=8, cat_dim=8, dim=16, n_filters=4, padding_mode=padding_mode).eval()
    with torch.no_grad():
        for conv in model.convs:  # biases of both signs, so that ReLU(b) and the window choice both matter
            conv.bias.normal_(0.0, 0.3)
    return model


def test_registered():
    assert get_model("cnn") is CNN


@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_full_scores_agree_with_score(mode):
    model, batch = make_model(mode), random_batch()
    loss = model.loss(batch)
    assert loss.shape == () and torch.isfinite(loss)
    assert model.score(batch, random_candidates(batch)).shape == (4, 5)
    full = model.full_scores(batch)
    assert full.shape == (4, N_ITEMS)
    assert torch.allclose(full, model.score(batch, torch.arange(N_ITEMS).expand(4, -1)), atol=1e-5)


def brute_force_pool(model: CNN, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Pooled filters by the definitions in models/cnn.py, one row and one window at a time."""
    rows = []
    for b in range(len(lengths)):
        n, pooled = int(lengths[b]), []
        for width, conv in enumerate(model.convs, start=1):
            if model.padding_mode == "reference":  # zero-pad to 500, every VALID window
                seq = torch.nn.functional.pad(x[b, :n], (0, 0, 0, model.ref_len - n))  # [500, dim]
                starts = range(model.ref_len - width + 1)
            else:  # windows inside the history, or the one zero-padded window at 0
                seq = torch.nn.functional.pad(x[b, :n], (0, 0, 0, max(width - n, 0)))
                starts = range(max(n - width, 0) + 1)
            windows = torch.stack([seq[s:s + width].T for s in starts])  # [S, dim, width]
            pooled.append(torch.relu(conv(windows)[..., 0]).amax(dim=0))  # [F]
        rows.append(torch.cat(pooled))
    return torch.stack(rows)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", [[3, 1, 6, 4], [1], [12, 2, 9], [500, 490, 7], [495], [491], [500]])
def test_pooling_equals_brute_force(mode, lengths):
    model = make_model(mode)
    g = torch.Generator().manual_seed(len(lengths))
    lengths = torch.tensor(lengths)
    L = int(lengths.max())
    # inputs growing along the history, so the last (partial) windows often hold the max: boundaries matter
    x = torch.randn(len(lengths), L, 16, generator=g) * torch.linspace(0.5, 3.0, L)[None, :, None]
    x = x.masked_fill((torch.arange(L)[None, :] >= lengths[:, None])[..., None], 0.0)  # [B, L, dim]
    with torch.no_grad():
        assert torch.allclose(model.pool(x, lengths), brute_force_pool(model, x, lengths), atol=1e-5)


@pytest.mark.parametrize("n", [1, 490, 491, 495, 499, 500])
def test_reference_mode_all_padding_window_exactly_when_it_fits(n):
    """Positive kernels on negative inputs: a window touching a real item scores below b, so a filter pools to
    exactly b = ReLU(b) iff the padded length 500 leaves a window wholly in the padding (n <= 500 - width)."""
    model = make_model("reference")
    with torch.no_grad():
        for conv in model.convs:
            conv.weight.abs_()
            conv.bias.abs_()
        pooled = model.pool(-torch.rand(1, n, 16) - 0.1, torch.tensor([n])).view(10, 4)  # [widths, filters]
    for width, conv in enumerate(model.convs, start=1):
        at_floor = pooled[width - 1] == conv.bias
        assert at_floor.all() if n <= 500 - width else not at_floor.any(), (n, width)


@pytest.mark.parametrize("mode", MODES)
def test_padding_never_changes_scores(mode):
    model, batch = make_model(mode), random_batch([3, 1, 6, 4])
    cands = random_candidates(batch)
    scores = model.score(batch, cands)
    assert torch.allclose(scores, model.score(scramble_padding(batch), cands), atol=1e-6, rtol=0)
    assert torch.allclose(scores, model.score(extend_padding(batch), cands), atol=1e-6, rtol=0)
    for i in range(len(batch)):
        assert torch.allclose(scores[i], model.score(row_alone(batch, i), cands[i:i + 1])[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_one_candidate_equals_its_column(mode):
    model, batch = make_model(mode), random_batch()
    cands = random_candidates(batch)
    many = model.score(batch, cands)
    for c in range(cands.shape[1]):
        assert torch.allclose(model.score(batch, cands[:, c:c + 1])[:, 0], many[:, c], atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_length_one_and_zero_histories(mode):
    model = make_model(mode)
    for lengths in ([1], [1, 1], [0, 2]):
        batch = random_batch(lengths)
        assert torch.isfinite(model.score(batch, random_candidates(batch))).all()
        assert torch.isfinite(model.loss(batch))


@pytest.mark.parametrize("mode", MODES)
def test_sgd_reduces_loss(mode):
    model, batch = make_model(mode).train(), planted_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = model.loss(batch).item()
    for _ in range(30):
        opt.zero_grad()
        model.loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    assert model.loss(batch).item() < first - 0.1
