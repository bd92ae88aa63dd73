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

Narrow batches (at most `narrow_width` positions) pool through one matrix product over the unfolded windows instead
of the ten convolutions: the same windows and maxima (float summation order aside), cheaper there; 0 = never.

Initialisation as the reference: conv kernels truncated normal (std 0.1), conv biases 0.1, glorot-uniform
embeddings and dense kernels, zero dense biases. Dropout on the pooled 320 values (0 = reference).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.batch import Batch

from models.layers import ItemCategoryEmbedding, UserVectorModel, tf_default_init_
from models.registry import register

ONE_HOT_SLOTS = 12  # the reference's one_hot(bucket, 12): bucket 12 -> all zeros


@register("cnn")
class CNN(UserVectorModel):
    train_format = "pointwise"

    def __init__(self, n_users: int, n_items: int, n_categories: int, item_category: np.ndarray,
                 item_dim: int = 64, cat_dim: int = 64, hidden: int = 128, n_filters: int = 32, max_width: int = 10,
                 l2_reg: float = 5e-5, dropout: float = 0.0, padding_mode: str = "valid", ref_len: int = 500,
                 narrow_width: int = 8):
        super().__init__()
        if padding_mode not in ("valid", "reference"):
            raise ValueError(f"padding_mode must be 'valid' or 'reference', not {padding_mode!r}")
        assert ref_len >= max_width, "the reference's padded length must hold the widest filter"
        self.n_items = n_items
        self.l2_reg = l2_reg
        self.padding_mode = padding_mode
        self.ref_len = ref_len
        self.max_width = max_width
        self.narrow_width = narrow_width
        self.emb = ItemCategoryEmbedding(n_items, n_categories, item_category, item_dim, cat_dim)
        self.input = nn.Linear(self.emb.dim + ONE_HOT_SLOTS, hidden)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, n_filters, width) for width in range(1, max_width + 1))
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(n_filters * max_width, self.emb.dim)
        tf_default_init_(self.input)
        tf_default_init_(self.dense)
        for conv in self.convs:
            nn.init.trunc_normal_(conv.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(conv.bias, 0.1)

    def features(self, batch: Batch) -> torch.Tensor:
        time = nn.functional.one_hot(batch.hist_time, ONE_HOT_SLOTS + 1)[..., :ONE_HOT_SLOTS]  # [B, L, 12]
        x = self.input(torch.cat([self.emb(batch.hist), time.to(self.input.weight.dtype)], dim=-1))  # [B, L, hidden]
        return x.masked_fill(~batch.mask[..., None], 0.0)  # the reference masks after the dense layer

    def pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x [B, L, hidden] zero on padding, lengths [B] -> max-pooled filters [B, n_filters * max_width]
        L = max(x.shape[1], 1)
        if L <= self.narrow_width:
            return self.pool_narrow(x, lengths)
        x = nn.functional.pad(x.transpose(1, 2), (0, L - x.shape[1] + self.max_width - 1))  # [B, hidden, L + W - 1]
        start = torch.arange(L, device=x.device)  # window start positions 0..L-1
        lengths = lengths[:, None]  # [B, 1]
        pooled = []
        for width, conv in enumerate(self.convs, start=1):
            h = torch.relu(conv(x)[:, :, :L])  # [B, F, L]: every window starting inside the padded batch
            keep = self.window_kept(start, lengths, width)  # [B, L]
            h = h.masked_fill(~keep[:, None, :], float("-inf")).amax(dim=-1)  # [B, F]
            pooled.append(self.reference_floor(h, lengths, width, conv.bias))
        return torch.cat(pooled, dim=-1)  # [B, F * W]

    def pool_narrow(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """pool() for a narrow batch: every filter of every width as ONE matrix product over the unfolded windows
        (each window of max_width positions a row; a width-w kernel zero-extended to max_width taps). The same
        windows and maxima; ten convolutions and their backward cost more than the product below ~16 positions."""
        B, L0, D = x.shape
        L, W = max(L0, 1), self.max_width
        windows = nn.functional.pad(x, (0, 0, 0, L - L0 + W - 1)).unfold(1, W, 1)  # [B, L, D, W]
        kernel = torch.cat([nn.functional.pad(c.weight, (0, W - w))  # [W*F, D, W]: taps past w are zeros
                            for w, c in enumerate(self.convs, 1)])
        bias = torch.cat([c.bias for c in self.convs])  # [W*F]
        h = torch.relu(torch.addmm(bias, windows.reshape(B * L, D * W), kernel.view(len(bias), D * W).t()))
        widths = torch.arange(1, W + 1, device=x.device)[:, None]  # [W, 1]
        start = torch.arange(L, device=x.device)[None, None, :]  # [1, 1, L]
        keep = self.window_kept(start, lengths[:, None, None], widths)  # [B, W, L]
        h = h.view(B, L, W, -1).permute(0, 2, 3, 1)  # [B, W, F, L]
        h = h.masked_fill(~keep[:, :, None, :], float("-inf")).amax(dim=-1)  # [B, W, F]
        return self.reference_floor(h, lengths[:, None, None], widths, bias.view(W, -1)).reshape(B, -1)

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
