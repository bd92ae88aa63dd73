"""The faster formulations compute what the plain ones do (values and gradients, to float tolerance).

- atrank.MultiHeadAttention: fused scaled_dot_product_attention with a key mask, all-padding rows zeroed,
  against the explicit softmax(q k^T / sqrt(d) masked with -inf).nan_to_num(0) @ v;
- sasrec.CausalSelfAttention: fused attention against the explicit masked softmax;
- layers.rnn_over_padded: LSTM / GRU over right-padded batches against the same module on pack_padded_sequence.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.atrank import MultiHeadAttention
from models.layers import reverse_padded, rnn_over_padded, tf_default_init_
from models.sasrec import CausalSelfAttention


def explicit_atrank_attention(att: MultiHeadAttention, queries, keys, key_mask):
    """The original formulation (before the fused kernel)."""
    N, Tq, D = queries.shape
    h = att.n_heads
    q = torch.relu(nn.functional.linear(queries, *att.kernel("q"))).view(N, Tq, h, D // h).transpose(1, 2)
    k = torch.relu(nn.functional.linear(keys, *att.kernel("k"))).view(N, -1, h, D // h).transpose(1, 2)
    v = torch.relu(nn.functional.linear(keys, *att.kernel("v"))).view(N, -1, h, D // h).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / (D // h) ** 0.5
    logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    context = (weights @ v).transpose(1, 2).reshape(N, Tq, D)
    return att.norm(context + queries)


def grads_of(fn, tensors):
    out = fn()
    return out, torch.autograd.grad(out.square().sum(), tensors)


@pytest.mark.parametrize("tq", [1, 2, 7])
@pytest.mark.parametrize("all_padding_row", [False, True])
def test_atrank_attention_equals_the_explicit_formula(tq, all_padding_row):
    torch.manual_seed(0)
    att = MultiHeadAttention(32, n_heads=4)
    lengths = torch.tensor([7, 1, 3, 0 if all_padding_row else 5])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    queries = torch.randn(4, tq, 32, requires_grad=True)
    keys = torch.randn(4, 7, 32, requires_grad=True)
    tensors = [queries, keys, *att.parameters()]
    fast, g_fast = grads_of(lambda: att(queries, keys, mask), tensors)
    slow, g_slow = grads_of(lambda: explicit_atrank_attention(att, queries, keys, mask), tensors)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert all(torch.isfinite(g).all() for g in g_fast)


def test_stacked_self_attention_is_the_three_projections():
    torch.manual_seed(0)
    stacked, separate = MultiHeadAttention(32, n_heads=4, self_attention=True), MultiHeadAttention(32, n_heads=4)
    with torch.no_grad():  # the same Q, K, V kernels, stored stacked three ways and two ways
        for layer, rows in ((separate.q, slice(0, 32)), (separate.kv, slice(32, 96))):
            layer.weight.copy_(stacked.qkv.weight[rows])
            layer.bias.copy_(stacked.qkv.bias[rows])
    x = torch.randn(3, 6, 32)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 1, 0])[:, None]
    torch.testing.assert_close(stacked(x, x, mask), separate(x, x, mask))
    torch.testing.assert_close(stacked(x, x, mask), explicit_atrank_attention(stacked, x, x, mask))
    with pytest.raises(ValueError, match="attends over its own queries"):
        stacked(x, torch.randn(3, 6, 32), mask)


def test_stacked_kernels_start_as_separate_layers_would():
    """tf_default_init_ draws a stacked layer's blocks as it drew the separate layers, in the same order."""
    att = MultiHeadAttention(32, n_heads=4, self_attention=True)
    layers = [nn.Linear(32, 32) for _ in range(3)]
    torch.manual_seed(0)
    tf_default_init_(att)
    torch.manual_seed(0)
    for layer in layers:
        tf_default_init_(layer)
    for name, layer in zip("qkv", layers):
        torch.testing.assert_close(att.kernel(name)[0], layer.weight, rtol=0, atol=0)
    bound = (6 / (32 + 32)) ** 0.5  # Glorot over one [32 x 32] kernel, not over the [96 x 32] stack
    assert att.qkv.weight.abs().max() <= bound and att.qkv.weight.abs().max() > 0.9 * bound


def test_atrank_attention_with_dropout_uses_the_explicit_path_in_training_only():
    torch.manual_seed(0)
    att = MultiHeadAttention(16, n_heads=2, dropout=0.5)
    x, mask = torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool)
    att.eval()
    torch.testing.assert_close(att(x, x, mask), explicit_atrank_attention(att, x, x, mask))
    att.train()
    assert not torch.allclose(att(x, x, mask), att(x, x, mask))  # dropout acts on the weights


def test_sasrec_attention_equals_the_explicit_formula():
    torch.manual_seed(0)
    att = CausalSelfAttention(16, n_heads=2)
    B, W = 3, 6
    mask = torch.arange(W)[None, :] < torch.tensor([6, 2, 4])[:, None]
    causal = torch.arange(W)[None, :] <= torch.arange(W)[:, None]
    allowed = causal[None] & (mask[:, None, :] | torch.eye(W, dtype=torch.bool))
    x = torch.randn(B, W, 16, requires_grad=True)

    def explicit():
        q = att.q(x).view(B, W, 2, 8).transpose(1, 2)
        k = att.k(x).view(B, W, 2, 8).transpose(1, 2)
        v = att.v(x).view(B, W, 2, 8).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~allowed[:, None], float("-inf"))
        return (torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(B, W, 16)

    tensors = [x, *att.parameters()]
    fast, g_fast = grads_of(lambda: att(x, allowed), tensors)
    slow, g_slow = grads_of(explicit, tensors)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def packed_reference(rnn, x, lengths):
    out, h_n = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    h_n = h_n[0] if isinstance(h_n, tuple) else h_n
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, h_n[-(2 if rnn.bidirectional else 1):]


@pytest.mark.parametrize("make", [
    lambda: nn.LSTM(6, 5, batch_first=True, bidirectional=True),
    lambda: nn.LSTM(6, 5, batch_first=True),
    lambda: nn.GRU(6, 5, batch_first=True),
    lambda: nn.GRU(6, 5, num_layers=2, batch_first=True),
    lambda: nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True),  # falls back to packing
], ids=["bilstm", "lstm", "gru", "gru-2-layers", "bilstm-2-layers"])
def test_rnn_over_padded_equals_the_packed_rnn(make):
    torch.manual_seed(0)
    rnn = make()
    lengths = torch.tensor([4, 1, 7, 3, 7])
    x = torch.randn(5, 7, 6, requires_grad=True)
    pad = torch.arange(7)[None, :] >= lengths[:, None]
    with torch.no_grad():
        x[pad] = 100.0  # junk in the padding must not matter
    tensors = [x, *rnn.parameters()]

    def fast():
        out, h = rnn_over_padded(rnn, x, lengths)
        return torch.cat([out.flatten(), h.flatten()])

    def slow():
        out, h = packed_reference(rnn, x, lengths)
        return torch.cat([out.flatten(), h.flatten()])

    a, g_a = grads_of(fast, tensors)
    b, g_b = grads_of(slow, tensors)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for ga, gb in zip(g_a, g_b):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
    assert not g_a[0][pad].any()  # no gradient reaches the padding


def test_reverse_padded_reverses_each_row_in_place_and_is_an_involution():
    x = torch.arange(12.0).view(3, 4, 1)
    lengths = torch.tensor([4, 2, 1])
    r = reverse_padded(x, lengths)
    assert r[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7], [8, 9, 10, 11]]
    assert torch.equal(reverse_padded(r, lengths), x)
