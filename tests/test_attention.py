"""llmcourse.attention against independent references.

References: PyTorch's ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``
(with our weights copied in), and plain Python loops for the masks. Float64 throughout,
so the tolerances are tight.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.attention import (MultiHeadAttention, causal_mask, merge_heads, padding_mask,
                                 scaled_dot_product_attention, split_heads)

torch.set_num_threads(1)
TOL = dict(rtol=1e-10, atol=1e-10)


def _qkv(batch_shape, Lq, Lk, dk, dv, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch_shape, Lq, dk, generator=g, dtype=torch.float64)
    k = torch.randn(*batch_shape, Lk, dk, generator=g, dtype=torch.float64)
    v = torch.randn(*batch_shape, Lk, dv, generator=g, dtype=torch.float64)
    return q, k, v


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 4), (2, 3, 2)])
def test_sdpa_matches_pytorch_without_mask(batch_shape):
    q, k, v = _qkv(batch_shape, 5, 7, 8, 6)
    out, weights = scaled_dot_product_attention(q, k, v)
    assert out.shape == (*batch_shape, 5, 6) and weights.shape == (*batch_shape, 5, 7)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), **TOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(*batch_shape, 5, dtype=torch.float64), **TOL)
    # the weights are softmax(q k^T / sqrt(dk)) exactly
    ref_w = torch.softmax(torch.einsum("...id,...jd->...ij", q, k) / 8 ** 0.5, dim=-1)
    torch.testing.assert_close(weights, ref_w, **TOL)


@pytest.mark.parametrize("mask_shape", [(5, 7), (1, 5, 7), (2, 1, 5, 7), (2, 4, 5, 7), (2, 1, 1, 7)])
def test_sdpa_matches_pytorch_with_broadcast_boolean_mask(mask_shape):
    q, k, v = _qkv((2, 4), 5, 7, 8, 6, seed=1)
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(mask_shape, generator=g) > 0.4
    mask[..., 0] = True                                   # every query sees at least one key
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL)
    assert torch.all(weights[~mask.expand_as(weights)] == 0)


def test_sdpa_causal_mask_matches_is_causal():
    q, k, v = _qkv((2, 3), 6, 6, 4, 4, seed=3)
    out, _ = scaled_dot_product_attention(q, k, v, causal_mask(6))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL)


def test_causal_mask_against_loop():
    for T in (1, 2, 5, 9):
        m = causal_mask(T)
        assert m.dtype == torch.bool and m.shape == (T, T)
        for i in range(T):
            for j in range(T):
                assert bool(m[i, j]) == (j <= i)


def test_padding_mask_against_loop():
    lengths = [3, 1, 5, 0]
    for max_len in (None, 7):
        m = padding_mask(lengths, max_len)
        L = max_len or max(lengths)
        assert m.dtype == torch.bool and m.shape == (len(lengths), L)
        for b, n in enumerate(lengths):
            for t in range(L):
                assert bool(m[b, t]) == (t < n)


def test_split_heads_layout_and_merge_is_inverse():
    B, L, H, Dh = 2, 5, 3, 4
    x = torch.randn(B, L, H * Dh, dtype=torch.float64)
    s = split_heads(x, H)
    assert s.shape == (B, H, L, Dh)
    for h in range(H):                                    # head h holds features h*Dh .. (h+1)*Dh - 1
        torch.testing.assert_close(s[:, h], x[..., h * Dh:(h + 1) * Dh], rtol=0, atol=0)
    torch.testing.assert_close(merge_heads(s), x, rtol=0, atol=0)
    y = torch.randn(B, H, L, Dh, dtype=torch.float64)
    torch.testing.assert_close(split_heads(merge_heads(y), H), y, rtol=0, atol=0)


def _torch_mha_like(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(mha.d_model, mha.n_heads, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.w_q.weight, mha.w_k.weight, mha.w_v.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.w_q.bias, mha.w_k.bias, mha.w_v.bias]))
        ref.out_proj.weight.copy_(mha.w_o.weight)
        ref.out_proj.bias.copy_(mha.w_o.bias)
    return ref.eval()


@pytest.mark.parametrize("which_mask", ["none", "causal", "padding"])
def test_multihead_attention_matches_nn_multiheadattention(which_mask):
    torch.manual_seed(0)
    B, Lq, Lk, D, H = 3, 6, 6, 16, 4
    mha = MultiHeadAttention(D, H).double().eval()
    ref = _torch_mha_like(mha)
    q = torch.randn(B, Lq, D, dtype=torch.float64)
    kv = torch.randn(B, Lk, D, dtype=torch.float64)
    if which_mask == "none":
        ours_mask, ref_kwargs = None, {}
    elif which_mask == "causal":
        ours_mask = causal_mask(Lq)                                  # (Lq, Lk), True = may attend
        ref_kwargs = {"attn_mask": ~ours_mask}                       # PyTorch MHA: True = masked
    else:
        keep = padding_mask([6, 2, 4])                               # (B, Lk)
        ours_mask = keep[:, None, None, :]                           # (B, 1, 1, Lk)
        ref_kwargs = {"key_padding_mask": ~keep}
    out, w = mha(q, kv, kv, ours_mask)
    ref_out, ref_w = ref(q, kv, kv, need_weights=True, average_attn_weights=False, **ref_kwargs)
    assert out.shape == (B, Lq, D) and w.shape == (B, H, Lq, Lk)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(w, ref_w, **TOL)


def test_multihead_attention_rejects_indivisible_width():
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 4)
