"""CNN + Max Pooling baseline of ATRank's Table 3 (Zhou et al., AAAI 2018; reference: jinze1994/ATRank,
`cnn/model.py`, itself after Kim's text CNN).

History input x_l = dense(item ++ category ++ one-hot time bucket -> 128), no activation, zero at padded slots.
The reference takes `one_hot(bucket, 12)`, so bucket 12 (gaps of 4,096 days or more) is an all-zero vector; so here.
For each filter width w in 1..10: 32 filters, ReLU(conv(x) + b) with b initialised to 0.1, max-pooled over window
positions; the 320 pooled values -> dense 128 = user vector u. Logit = item bias + <u, target item ++ category>.
Loss = mean sigmoid cross-entropy + l2_reg * (||u||^2 + ||target emb||^2) / 2 summed over the batch.

Which windows take part in the max (`padding_mode`):
- "valid" (default, our choice): only windows lying entirely inside the real history. A history shorter than w has
  none; it then uses the one window at position 0, i.e. the history zero-padded to width w. Padding never changes a
  score, and a row's score does not depend on the other rows of its batch.
- "reference": the official code's behaviour. Histories are zero-padded to ref_len = 500 and every position of
  the VALID convolution is pooled: partial windows at the end see zeros and each all-padding window gives exactly
  ReLU(b). Computed without padding to 500: we convolve only up to the batch's longest history (+ w - 1 zeros) and
  add ReLU(b) to the max analytically when an all-padding window exists (len <= ref_len - w). The reference
  fails on histories longer than 500; here such a row is padded to its own length instead.
The modes differ on nearly every row: the reference's max also sees the partial end windows and, for histories of
at most 490 items, ReLU(b) (a floor under every pooled value).

How the ten convolutions are computed: as ONE matrix product of the history with every filter's every tap (a
[hidden, F * (1 + 2 + ... + 10)] kernel: 1,760 columns, no zero taps), then shifted sums of the per-tap products
(`WindowSums`): the convolutions' multiply-adds exactly, their values to float summation order. oneDNN's
convolutions build (JIT) a primitive per history width, which the epoch's 400 shuffled widths keep evicting;
the matrix product has no such cost and fewer dispatched calls (docs/performance.md). The kernel is initialised
as ten Conv1d layers would be (the same random draws for a seed) and `conv_weight(w)` gives width w's [F, hidden, w].

Initialisation as the reference: conv kernels truncated normal (std 0.1), conv biases 0.1, glorot-uniform
embeddings and dense kernels, zero dense biases. Dropout on the pooled 320 values (0 = reference).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch

from models.interface import UserVectorModel
from models.layers import ItemCategoryEmbedding, tf_default_init_, time_one_hot
from models.registry import register

ONE_HOT_SLOTS = 12  # the reference's one_hot(bucket, 12): bucket 12 -> all zeros


def tap_columns(n_filters: int, max_width: int) -> list[tuple[int, int]]:
    """Columns of tap j (0-based) in the packed kernel: widths j+1..max_width, n_filters columns each."""
    out, lo = [], 0
    for j in range(max_width):
        hi = lo + n_filters * (max_width - j)
        out.append((lo, hi))
        lo = hi
    return out


def pack_taps(weights: list[torch.Tensor]) -> torch.Tensor:
    """Ten Conv1d kernels ([F, hidden, w] for w = 1..W) -> one [hidden, F * W(W+1)/2] matrix, tap-major: tap j's
    columns hold the widths > j in order, so its filters land on a suffix of the [W * F] width-major output."""
    W = len(weights)
    return torch.cat([weights[w - 1][:, :, j].t() for j in range(W) for w in range(j + 1, W + 1)], dim=1)


class WindowSums(torch.autograd.Function):
    """out[b, t, width w's filters] = bias + sum over taps j < w of products[b, t + j, (tap j, width w)]: the ten
    convolutions' sums from the per-tap products, positions past the batch's width counting as zero input."""

    @staticmethod
    def forward(ctx, products: torch.Tensor, bias: torch.Tensor, n_filters: int, max_width: int) -> torch.Tensor:
        B, L, C = products.shape
        assert C == n_filters * max_width * (max_width + 1) // 2, "one column per filter and tap"
        out = bias.expand(B, L, -1).clone()  # [B, L, W * F]
        for j, (lo, hi) in enumerate(tap_columns(n_filters, max_width)[:L]):
            out[:, : L - j, n_filters * j:] += products[:, j:, lo:hi]
        ctx.shape, ctx.sizes = products.shape, (n_filters, max_width)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (B, L, C), (F, W) = ctx.shape, ctx.sizes
        g = grad.new_empty(B, L, C)
        for j, (lo, hi) in enumerate(tap_columns(F, W)):
            g[:, : min(j, L), lo:hi].fill_(0.0)  # products of positions no window start reaches with tap j
            if j < L:
                g[:, j:, lo:hi] = grad[:, : L - j, F * j:]
        return g, grad.sum(dim=(0, 1)), None, None


@register("cnn")
class CNN(UserVectorModel):
    train_format = "pointwise"

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, hidden: int = 128, n_filters: int = 32, max_width: int = 10,
                 l2_reg: float = 5e-5, dropout: float = 0.0, padding_mode: str = "valid", ref_len: int = 500):
        super().__init__()
        if padding_mode not in ("valid", "reference"):
            raise ValueError(f"padding_mode must be 'valid' or 'reference', not {padding_mode!r}")
        assert ref_len >= max_width, "the reference's padded length must hold the widest filter"
        self.n_items = n_items
        self.l2_reg = l2_reg
        self.padding_mode = padding_mode
        self.ref_len = ref_len
        self.max_width = max_width
        self.n_filters = n_filters
        self.emb = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
        self.input = nn.Linear(self.emb.dim + ONE_HOT_SLOTS, hidden)
        convs = [nn.Conv1d(hidden, n_filters, width) for width in range(1, max_width + 1)]  # draws as before packing
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(n_filters * max_width, self.emb.dim)
        tf_default_init_(self.input)
        tf_default_init_(self.dense)
        for conv in convs:
            nn.init.trunc_normal_(conv.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(conv.bias, 0.1)
        self.taps = nn.Parameter(pack_taps([c.weight.detach() for c in convs]))  # [hidden, F * W(W+1)/2]
        self.conv_bias = nn.Parameter(torch.cat([c.bias.detach() for c in convs]))  # [W * F], width-major

    def features(self, batch: Batch) -> torch.Tensor:
        time = time_one_hot(batch.hist_time, ONE_HOT_SLOTS, self.input.weight.dtype)  # [B, L, 12]
        x = self.input(torch.cat([self.emb(batch.hist), time], dim=-1))  # [B, L, hidden]
        return x.masked_fill(~batch.mask[..., None], 0.0)  # the reference masks after the dense layer

    def conv_weight(self, width: int) -> torch.Tensor:
        """Width `width`'s convolution kernel [F, hidden, width] (a view of `taps`' columns, autograd-tracked)."""
        F = self.n_filters
        return torch.stack([self.taps[:, lo + (width - j - 1) * F: lo + (width - j) * F].t()
                            for j, (lo, _) in enumerate(tap_columns(F, self.max_width)[:width])], dim=-1)

    def pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x [B, L, hidden] zero on padding, lengths [B] -> max-pooled filters [B, n_filters * max_width]."""
        if x.shape[1] == 0:
            x = x.new_zeros(x.shape[0], 1, x.shape[2])
        B, L, _ = x.shape
        W, F = self.max_width, self.n_filters
        h = torch.relu(WindowSums.apply(x @ self.taps, self.conv_bias, F, W))  # [B, L, W * F]: window starts
        widths = torch.arange(1, W + 1, device=x.device)  # [W]
        keep = self.window_kept(torch.arange(L, device=x.device)[None, :, None], lengths[:, None, None], widths)
        h = h.view(B, L, W, F).masked_fill(~keep[..., None], float("-inf")).amax(dim=1)  # [B, W, F]
        floor_widths = widths[:, None]  # [W, 1]
        return self.reference_floor(h, lengths[:, None, None], floor_widths, self.conv_bias.view(W, F)).reshape(B, -1)

    def window_kept(self, start: torch.Tensor, lengths: torch.Tensor, width) -> torch.Tensor:
        """Which window starts take part in the max for histories of `lengths` (broadcast)."""
        if self.padding_mode == "valid":
            return start <= (lengths - width).clamp(min=0)  # inside the history, else the one at 0
        return start <= lengths.clamp(min=self.ref_len) - width  # the reference's VALID positions

    def reference_floor(self, h: torch.Tensor, lengths: torch.Tensor, width, bias: torch.Tensor) -> torch.Tensor:
        """Reference mode: the max also sees ReLU(b) where a window lies wholly in the padding to ref_len."""
        if self.padding_mode != "reference":
            return h
        return torch.where(lengths <= self.ref_len - width, torch.maximum(h, torch.relu(bias)), h)

    def user_vector(self, batch: Batch) -> torch.Tensor:
        return self.dense(self.dropout(self.pool(self.features(batch), batch.lengths)))  # [B, 128]
