"""CNN + max pooling specifics: pooling in both padding modes equals brute force (reference: zero-padded to 500), the
ReLU(b) floor of an all-padding window, padding never leaks with conv biases of both signs (the yaml's are all 0.1),
and a small model learns a planted rule in both modes."""
from __future__ import annotations

import pytest
import torch

from models.cnn import CNN
from tests.models.helpers import (assert_padding_invariant, fit, one_thread, planted_batch, random_batch,  # noqa: F401
                                  random_candidates, shape_kwargs)

MODES = ["valid", "reference"]
pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(padding_mode: str = "valid", seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    model = CNN(**shape_kwargs(), item_dim=8, cat_dim=8, hidden=16, n_filters=4, padding_mode=padding_mode).eval()
    with torch.no_grad():
        for conv in model.convs:  # biases of both signs, so that ReLU(b) and the window choice both matter
            conv.bias.normal_(0.0, 0.3)
    return model


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
    """With biases of both signs, ReLU(b) (reference mode) and the window choice both matter."""
    model, batch = make_model(mode), random_batch([3, 1, 6, 4])
    assert_padding_invariant(model, batch, random_candidates(batch), atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_sgd_reduces_loss(mode):
    model = make_model(mode).train()
    first, last = fit(model, planted_batch(), torch.optim.SGD(model.parameters(), lr=0.5), steps=30, clip_norm=5.0)
    assert last < first - 0.1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", [[3, 1, 6, 4], [1], [8, 2, 5], [2, 2]])
def test_narrow_path_equals_the_convolutions(mode, lengths):
    """The one-matrix-product pooling of narrow batches gives the convolutions' values and gradients."""
    narrow, convs = make_model(mode), make_model(mode)
    convs.narrow_width = 0
    lengths = torch.tensor(lengths)
    assert int(lengths.max()) <= narrow.narrow_width
    x = torch.randn(len(lengths), int(lengths.max()), 16, generator=torch.Generator().manual_seed(1))
    x = x.masked_fill((torch.arange(x.shape[1])[None, :] >= lengths[:, None])[..., None], 0.0)
    outs = []
    for model in (narrow, convs):
        xi = x.clone().requires_grad_(True)
        pooled = model.pool(xi, lengths)
        (pooled * torch.linspace(-1, 1, pooled.shape[1])).sum().backward()
        outs.append((pooled, xi.grad, [c.weight.grad for c in model.convs], [c.bias.grad for c in model.convs]))
    (p1, g1, w1, b1), (p2, g2, w2, b2) = outs
    assert torch.allclose(p1, p2, atol=1e-5) and torch.allclose(g1, g2, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(w1 + b1, w2 + b2))
    assert torch.allclose(narrow.pool(x, lengths), brute_force_pool(narrow, x, lengths), atol=1e-5)
