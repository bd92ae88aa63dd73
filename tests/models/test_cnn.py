"""CNN + max pooling specifics: pooling in both padding modes equals brute force (reference: zero-padded to 500), the
packed per-tap product equals ten torch convolutions in values and gradients, the ReLU(b) floor of an all-padding
window, padding never leaks with conv biases of both signs (the yaml's are all 0.1), and a small model learns a
planted rule in both modes."""
from __future__ import annotations

import pytest
import torch

from models.cnn import CNN, WindowSums, pack_taps
from tests.models.helpers import (assert_padding_invariant, fit, one_thread, planted_batch, random_batch,  # noqa: F401
                                  random_candidates, shape_kwargs)

MODES = ["valid", "reference"]
pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(padding_mode: str = "valid", seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    model = CNN(**shape_kwargs(), item_dim=8, cat_dim=8, hidden=16, n_filters=4, padding_mode=padding_mode).eval()
    with torch.no_grad():
        model.conv_bias.normal_(0.0, 0.3)  # biases of both signs, so that ReLU(b) and the window choice both matter
    return model


def conv_bias(model: CNN, width: int) -> torch.Tensor:
    return model.conv_bias.view(model.max_width, -1)[width - 1]


def brute_force_pool(model: CNN, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Pooled filters by the definitions in models/cnn.py, one row and one window at a time."""
    rows = []
    for b in range(len(lengths)):
        n, pooled = int(lengths[b]), []
        for width in range(1, model.max_width + 1):
            if model.padding_mode == "reference":  # zero-pad to 500, every VALID window
                seq = torch.nn.functional.pad(x[b, :n], (0, 0, 0, model.ref_len - n))  # [500, dim]
                starts = range(model.ref_len - width + 1)
            else:  # windows inside the history, or the one zero-padded window at 0
                seq = torch.nn.functional.pad(x[b, :n], (0, 0, 0, max(width - n, 0)))
                starts = range(max(n - width, 0) + 1)
            windows = torch.stack([seq[s:s + width].T for s in starts])  # [S, dim, width]
            out = torch.nn.functional.conv1d(windows, model.conv_weight(width), conv_bias(model, width))
            pooled.append(torch.relu(out[..., 0]).amax(dim=0))  # [F]
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
        model.taps.abs_()
        model.conv_bias.abs_()
        pooled = model.pool(-torch.rand(1, n, 16) - 0.1, torch.tensor([n])).view(10, 4)  # [widths, filters]
    for width in range(1, 11):
        at_floor = pooled[width - 1] == conv_bias(model, width)
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


def convolution_pool(model: CNN, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """pool() through ten torch convolutions of the zero-padded batch (the pre-packing implementation)."""
    L = x.shape[1]
    padded = torch.nn.functional.pad(x.transpose(1, 2), (0, model.max_width - 1))  # [B, dim, L + W - 1]
    start = torch.arange(L)
    pooled = []
    for width in range(1, model.max_width + 1):
        h = torch.relu(torch.nn.functional.conv1d(padded, model.conv_weight(width), conv_bias(model, width))[..., :L])
        keep = model.window_kept(start, lengths[:, None], width)  # [B, L]
        h = h.masked_fill(~keep[:, None, :], float("-inf")).amax(dim=-1)  # [B, F]
        pooled.append(model.reference_floor(h, lengths[:, None], width, conv_bias(model, width)))
    return torch.cat(pooled, dim=-1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", [[3, 1, 6, 4], [1], [8, 2, 5], [2, 2], [14, 9, 30], [64, 3]])
def test_packed_taps_equal_the_convolutions(mode, lengths):
    """One product with the packed taps + WindowSums gives ten convolutions' values and gradients (input, kernels,
    biases), at widths below and above max_width."""
    model = make_model(mode)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), 16, generator=torch.Generator().manual_seed(1))
    x = x.masked_fill((torch.arange(x.shape[1])[None, :] >= lengths[:, None])[..., None], 0.0)
    outs = []
    for pool in (model.pool, lambda x, lengths: convolution_pool(model, x, lengths)):
        model.zero_grad()
        xi = x.clone().requires_grad_(True)
        pooled = pool(xi, lengths)
        (pooled * torch.linspace(-1, 1, pooled.shape[1])).sum().backward()
        outs.append((pooled, xi.grad, model.taps.grad.clone(), model.conv_bias.grad.clone()))
    for ours, convs in zip(*outs):
        assert torch.allclose(ours, convs, atol=1e-5)
    assert outs[0][2].abs().sum() > 0


def test_window_sums_gradcheck():
    products = torch.randn(2, 4, 12, dtype=torch.double, requires_grad=True)  # F=2, W=3: 2 * (3 + 2 + 1) columns
    bias = torch.randn(6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, b: WindowSums.apply(p, b, 2, 3), (products, bias))
    short = torch.randn(1, 2, 12, dtype=torch.double, requires_grad=True)  # fewer positions than taps
    assert torch.autograd.gradcheck(lambda p, b: WindowSums.apply(p, b, 2, 3), (short, bias))


def test_conv_weight_unpacks_what_was_packed():
    weights = [torch.randn(3, 5, w) for w in range(1, 5)]
    model = CNN(**shape_kwargs(), item_dim=4, cat_dim=4, hidden=5, n_filters=3, max_width=4)
    with torch.no_grad():
        model.taps.copy_(pack_taps(weights))
    for w, weight in enumerate(weights, start=1):
        assert torch.equal(model.conv_weight(w), weight)
