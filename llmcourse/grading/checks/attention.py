"""Hidden tests of the `attention` assignment (solutions/attention/attention.ipynb).

Paper: Vaswani et al. (2017), "Attention Is All You Need", arXiv:1706.03762, section 3.2.
The learner writes ``scaled_dot_product_attention(q, k, v, mask=None) -> (output, weights)``,
``split_heads(x, n_heads)``, ``merge_heads(x)`` and ``MultiHeadAttention(d_model, n_heads)``
(``w_q``, ``w_k``, ``w_v``, ``w_o``; ``forward(query, key, value, mask=None)``).

References are independent of ``llmcourse.attention``: PyTorch's
``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``, explicit loops, and an
explicit softmax. When a value check fails, the learner's result is compared with a
catalogue of known-wrong variants and the message names the one it matches.
Masks are boolean, ``True`` = may attend.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..common import LLMCOURSE, TORCH_MHA, TORCH_SDPA, call_learner, close, diagnose, graded, require_tensor

NO_LIBRARY = TORCH_SDPA | TORCH_MHA | LLMCOURSE

# Sizes chosen pairwise different so that a wrong size in a formula shows.
LQ, LK, DK, DV = 3, 6, 8, 5
BATCHES = [(), (2,), (2, 3)]

# ----------------------------------------------------------------------------- references


def _attention_variant(q, k, v, mask=None, *, scale=None, softmax_dim=-1, mask_fill=float("-inf"),
                       mask_mode="before", invert_mask=False, weights="softmax"):
    """Attention with one knob turned: the correct result when every knob has its default."""
    dk = q.size(-1)
    scale = 1 / math.sqrt(dk) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None and invert_mask:
        mask = ~mask
    if mask is not None and mask_mode == "before":
        scores = scores.masked_fill(~mask, mask_fill)
    w = torch.softmax(scores, dim=softmax_dim)
    if mask is not None and mask_mode == "after":
        w = w * mask
    if weights == "scores":
        return scores @ v, scores
    return w @ v, w


def _sdpa_variants(q, k, v, mask):
    """Known mistakes: explanation -> (output, weights) it would produce."""
    dk, lq, lk, dv = q.size(-1), q.size(-2), k.size(-2), v.size(-1)
    v_ = {
        "you did not scale the scores: divide q kᵀ by √d_k before the softmax":
            dict(scale=1.0),
        "you divided the scores by d_k instead of √d_k":
            dict(scale=1 / dk),
        "you multiplied the scores by √d_k instead of dividing":
            dict(scale=math.sqrt(dk)),
        "you divided by the square root of the number of keys, not of d_k (q.size(-1))":
            dict(scale=1 / math.sqrt(lk)),
        "you divided by the square root of the number of queries, not of d_k (q.size(-1))":
            dict(scale=1 / math.sqrt(lq)),
        "you divided by the square root of v's feature size, not of d_k (q.size(-1))":
            dict(scale=1 / math.sqrt(dv)),
        "the softmax is taken over the wrong dimension (the query axis, dim -2): take it over the keys, dim -1":
            dict(softmax_dim=-2),
        "the weights are the scores before the softmax: apply softmax over the keys":
            dict(weights="scores"),
    }
    if mask is not None:
        v_.update({
            "the mask is inverted: True means 'may attend', so fill the scores where the mask is False":
                dict(invert_mask=True),
            "the masked scores were filled with 0, which still gets weight after the softmax: "
            "fill them with -inf (float('-inf'))":
                dict(mask_fill=0.0),
            "the mask is ignored: fill the scores with -inf where the mask is False, before the softmax":
                dict(mask_mode="none"),
            "the mask is applied after the softmax, so the weights no longer sum to one: "
            "mask the scores before the softmax":
                dict(mask_mode="after"),
        })
    return {msg: (lambda kw=kw: _attention_variant(q, k, v, mask, **kw)) for msg, kw in v_.items()}


def _reference_sdpa(q, k, v, mask=None):
    """PyTorch's own attention for the output, an explicit softmax for the weights."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return out, torch.softmax(scores, dim=-1)


def _random_mask(shape, g):
    """A boolean mask with at least one True and one False in every row of keys."""
    m = torch.rand(shape, generator=g) < 0.5
    m[..., 0] = True
    m[..., -1] = False
    return m


def _qkv(batch, g, lq=LQ, lk=LK, dk=DK, dv=DV, requires_grad=False):
    q = torch.randn(*batch, lq, dk, generator=g, requires_grad=requires_grad)
    k = torch.randn(*batch, lk, dk, generator=g, requires_grad=requires_grad)
    v = torch.randn(*batch, lk, dv, generator=g, requires_grad=requires_grad)
    return q, k, v


def _sdpa_cases(g):
    """(description, q, k, v, mask) with several batch shapes and masks."""
    cases = []
    for batch in BATCHES:
        q, k, v = _qkv(batch, g)
        cases.append((f"batch shape {batch}, no mask", q, k, v, None))
    return cases


def _mask_cases(g):
    """Masks with at least one True and one False per row come first: an inverted mask then
    still has an allowed key in every row, so the mistake can be named."""
    cases = []
    q, k, v = _qkv((2, 3), g)
    cases.append(("random (Lq, Lk) mask broadcast over batch (2, 3)", q, k, v, _random_mask((LQ, LK), g)))
    pad = torch.arange(LK) < torch.tensor([4, 2]).view(2, 1, 1)          # (2, 1, LK): padding
    q, k, v = _qkv((2,), g)
    cases.append(("padding mask of shape (2, 1, Lk)", q, k, v, pad))
    q, k, v = _qkv((2,), g)
    cases.append(("full (2, Lq, Lk) mask", q, k, v, _random_mask((2, LQ, LK), g)))
    q, k, v = _qkv((2,), g, lq=5, lk=5)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    cases.append(("causal (5, 5) mask", q, k, v, causal))
    return cases


def _call_sdpa(fn, q, k, v, mask, what="scaled_dot_product_attention"):
    args = (q, k, v) if mask is None else (q, k, v, mask)
    result = call_learner(fn, *args, what=what, forbid=NO_LIBRARY)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"{what} should return a pair (output, weights), got {type(result).__name__}")
    return result


def _compare_sdpa(fn, case):
    desc, q, k, v, mask = case
    out, w = _call_sdpa(fn, q, k, v, mask)
    ref_out, ref_w = _reference_sdpa(q, k, v, mask)
    require_tensor(out, f"output ({desc})", ref_out.shape)
    require_tensor(w, f"weights ({desc})", ref_w.shape)
    variants = _sdpa_variants(q, k, v, mask)
    if not close(w, ref_w):
        why = diagnose(w, {m: (lambda f=f: f()[1]) for m, f in variants.items()},
                       "they match none of the usual mistakes: compare with softmax(q kᵀ / √d_k) step by step")
        raise AssertionError(f"the attention weights are wrong ({desc}): {why}")
    if not close(out, ref_out):
        why = diagnose(out, {m: (lambda f=f: f()[0]) for m, f in variants.items()},
                       "the weights are right, so check the product weights @ v")
        raise AssertionError(f"the attention output is wrong ({desc}): {why}")


# ----------------------------------------------------------------------------- scaled dot-product attention


@graded("scaled_dot_product_attention returns outputs and weights of the right shapes")
def check_sdpa_shapes(fn):
    g = torch.Generator().manual_seed(1)
    for batch in BATCHES + [(1, 2, 3)]:
        q, k, v = _qkv(batch, g)
        out, w = _call_sdpa(fn, q, k, v, None)
        require_tensor(out, f"the output for q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}",
                       (*batch, LQ, DV))
        require_tensor(w, f"the weights for q {tuple(q.shape)}, k {tuple(k.shape)}",
                       (*batch, LQ, LK))


@graded("scaled_dot_product_attention matches PyTorch on random inputs (several batch shapes)")
def check_sdpa_values(fn):
    g = torch.Generator().manual_seed(2)
    for case in _sdpa_cases(g):
        _compare_sdpa(fn, case)


@graded("scaled_dot_product_attention applies boolean masks (True = may attend)")
def check_sdpa_masks(fn):
    g = torch.Generator().manual_seed(3)
    for case in _mask_cases(g):
        _compare_sdpa(fn, case)


@graded("the attention weights sum to one over the keys")
def check_sdpa_weights_sum(fn):
    g = torch.Generator().manual_seed(4)
    cases = _sdpa_cases(g) + _mask_cases(g)
    for desc, q, k, v, mask in cases:
        _, w = _call_sdpa(fn, q, k, v, mask)
        require_tensor(w, f"weights ({desc})", (*q.shape[:-1], k.size(-2)))
        w = w.detach().double()
        if not torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5):
            if torch.allclose(w.sum(-2), torch.ones_like(w.sum(-2)), atol=1e-5):
                raise AssertionError(
                    f"the weights sum to one over the query axis ({desc}): "
                    f"softmax is taken over the wrong dimension, take it over the keys (dim=-1)")
            if mask is not None:
                why = diagnose(w, {m: (lambda f=f: f()[1]) for m, f in _sdpa_variants(q, k, v, mask).items()},
                               "mask the scores with -inf before the softmax, do not zero the weights after it")
                raise AssertionError(f"the weights do not sum to one over the keys ({desc}): {why}")
            raise AssertionError(
                f"the weights do not sum to one over the keys ({desc}): they should be a softmax over dim -1 "
                f"(are you returning the scores before the softmax?)")
        assert (w >= 0).all(), f"some weights are negative ({desc}): they should come out of a softmax"


@graded("gradients flow through scaled_dot_product_attention to q, k and v")
def check_sdpa_grad(fn):
    g = torch.Generator().manual_seed(5)
    for batch, with_mask in [((2,), False), ((2, 3), True)]:
        q, k, v = _qkv(batch, g, requires_grad=True)
        mask = _random_mask((LQ, LK), g) if with_mask else None
        r_out = torch.randn(*batch, LQ, DV, generator=g)
        r_w = torch.randn(*batch, LQ, LK, generator=g)
        out, w = _call_sdpa(fn, q, k, v, mask)
        require_tensor(out, "output", (*batch, LQ, DV))
        require_tensor(w, "weights", (*batch, LQ, LK))
        assert out.requires_grad and w.requires_grad, (
            "the output or the weights do not require grad: did you use .detach(), .item(), .numpy(), "
            "torch.tensor(...) or torch.no_grad() on the way?")
        loss = (out * r_out).sum() + (w * r_w).sum()
        grads = call_learner(torch.autograd.grad, loss, (q, k, v), allow_unused=True,
                             what="backpropagating through your function")
        for name, got in zip("qkv", grads):
            assert got is not None, (
                f"no gradient reaches {name}: the result must be computed from {name} with differentiable "
                f"tensor operations (no .detach(), .item(), .numpy(), torch.tensor(...))")
            assert torch.isfinite(got).all(), f"the gradient with respect to {name} has inf or nan entries"
            assert got.abs().max() > 0, f"the gradient with respect to {name} is zero everywhere"


# ----------------------------------------------------------------------------- split and merge heads


def _split_reference(x, n_heads):
    """Explicit loop: head h holds features h*Dh .. (h+1)*Dh - 1 of every position."""
    B, L, D = x.shape
    Dh = D // n_heads
    out = torch.empty(B, n_heads, L, Dh, dtype=x.dtype)
    for h in range(n_heads):
        out[:, h] = x[:, :, h * Dh:(h + 1) * Dh]
    return out


def _merge_reference(y):
    B, H, L, Dh = y.shape
    out = torch.empty(B, L, H * Dh, dtype=y.dtype)
    for h in range(H):
        out[:, :, h * Dh:(h + 1) * Dh] = y[:, h]
    return out


@graded("split_heads puts features h*Dh .. (h+1)*Dh - 1 in head h")
def check_split_heads(split_heads):
    g = torch.Generator().manual_seed(6)
    for B, L, D, H in [(2, 3, 12, 4), (1, 5, 8, 2), (2, 4, 6, 1), (3, 2, 6, 6)]:
        x = torch.randn(B, L, D, generator=g)
        got = call_learner(split_heads, x, H, what="split_heads", forbid=LLMCOURSE)
        Dh = D // H
        require_tensor(got, f"split_heads(x of shape {(B, L, D)}, n_heads={H})", (B, H, L, Dh))
        want = _split_reference(x, H)
        if not close(got, want, atol=0, rtol=0):
            why = diagnose(got, {
                "you reshaped (B, L, D) straight to (B, n_heads, L, Dh): reshape to (B, L, n_heads, Dh) "
                "first, then transpose(1, 2)": lambda: x.reshape(B, H, L, Dh),
                "head h takes every n_heads-th feature (interleaved): head h must hold the contiguous "
                "block h*Dh .. (h+1)*Dh - 1, so view as (B, L, n_heads, Dh)":
                    lambda: x.view(B, L, Dh, H).permute(0, 3, 1, 2),
            }, "head h of position l must hold x[b, l, h*Dh:(h+1)*Dh]")
            raise AssertionError(f"split_heads puts the wrong features in the heads "
                                 f"(x of shape {(B, L, D)}, n_heads={H}): {why}")


@graded("merge_heads concatenates the heads back to (B, L, n_heads * Dh)")
def check_merge_heads(merge_heads):
    g = torch.Generator().manual_seed(7)
    for B, H, L, Dh in [(2, 4, 3, 3), (1, 2, 5, 4), (2, 1, 4, 6), (3, 6, 2, 1)]:
        y = torch.randn(B, H, L, Dh, generator=g)
        got = call_learner(merge_heads, y, what="merge_heads", forbid=LLMCOURSE)
        require_tensor(got, f"merge_heads(x of shape {(B, H, L, Dh)})", (B, L, H * Dh))
        want = _merge_reference(y)
        if not close(got, want, atol=0, rtol=0):
            why = diagnose(got, {
                "you reshaped (B, n_heads, L, Dh) straight to (B, L, D): transpose(1, 2) first, "
                "then reshape": lambda: y.reshape(B, L, H * Dh),
                "the heads are interleaved feature by feature: position l must be the concatenation "
                "head 0, head 1, ... (transpose(1, 2) then reshape)":
                    lambda: y.permute(0, 2, 3, 1).reshape(B, L, H * Dh),
            }, "position l must be the concatenation of y[b, 0, l], y[b, 1, l], ...")
            raise AssertionError(f"merge_heads puts the features in the wrong place "
                                 f"(input of shape {(B, H, L, Dh)}): {why}")


@graded("merge_heads undoes split_heads and split_heads undoes merge_heads")
def check_split_merge_inverse(split_heads, merge_heads):
    g = torch.Generator().manual_seed(8)
    for B, L, D, H in [(2, 3, 12, 4), (1, 5, 8, 2)]:
        x = torch.randn(B, L, D, generator=g)
        s = call_learner(split_heads, x, H, what="split_heads", forbid=LLMCOURSE)
        back = call_learner(merge_heads, s, what="merge_heads", forbid=LLMCOURSE)
        assert close(back, x, atol=0, rtol=0), (
            f"merge_heads(split_heads(x, {H})) is not x for x of shape {(B, L, D)}: "
            f"the two must transpose the same axes (1 and 2) in opposite directions")
        y = torch.randn(B, H, L, D // H, generator=g)
        m = call_learner(merge_heads, y, what="merge_heads", forbid=LLMCOURSE)
        again = call_learner(split_heads, m, H, what="split_heads", forbid=LLMCOURSE)
        assert close(again, y, atol=0, rtol=0), (
            f"split_heads(merge_heads(y), {H}) is not y for y of shape {(B, H, L, D // H)}")


# ----------------------------------------------------------------------------- multi-head attention


def _make_mha(cls, d_model, n_heads):
    m = call_learner(cls, d_model, n_heads, what=f"MultiHeadAttention({d_model}, {n_heads})", forbid=NO_LIBRARY)
    assert isinstance(m, nn.Module), "MultiHeadAttention must be an nn.Module"
    for name in ("w_q", "w_k", "w_v", "w_o"):
        lin = getattr(m, name, None)
        assert isinstance(lin, nn.Linear), (
            f"MultiHeadAttention({d_model}, {n_heads}) has no nn.Linear attribute `{name}`: the contract asks for "
            f"w_q, w_k, w_v, w_o, each nn.Linear(d_model, d_model)")
        assert (lin.in_features, lin.out_features) == (d_model, d_model), (
            f"{name} is nn.Linear({lin.in_features}, {lin.out_features}); it should be "
            f"nn.Linear(d_model, d_model) = nn.Linear({d_model}, {d_model}): one projection for all heads, "
            f"split into heads after projecting")
        assert lin.bias is not None, (
            f"{name} has no bias: the contract (and nn.MultiheadAttention) uses nn.Linear(d_model, d_model) "
            f"with bias=True")
    return m


def _torch_twin(m, d_model, n_heads, g):
    """An nn.MultiheadAttention with random weights, copied into the learner's module."""
    ref = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        W, b = ref.in_proj_weight, ref.in_proj_bias
        for i, name in enumerate(("w_q", "w_k", "w_v")):
            getattr(m, name).weight.copy_(W[i * d_model:(i + 1) * d_model])
            getattr(m, name).bias.copy_(b[i * d_model:(i + 1) * d_model])
        m.w_o.weight.copy_(ref.out_proj.weight)
        m.w_o.bias.copy_(ref.out_proj.bias)
    return ref


def _mha_variant(m, H, query, key, value, mask=None, *, qk=("w_q", "w_k", "w_v"), split="ok", merge="ok",
                 out_proj=True, scale=None, invert_mask=False, ignore_mask=False):
    """Multi-head attention written out, with one mistake switched on."""
    lin = {n: getattr(m, n) for n in ("w_q", "w_k", "w_v")}
    B, Lq, D = query.shape
    Dh = D // H

    def sp(x):
        if split == "no_transpose":
            return x.reshape(x.size(0), H, x.size(1), Dh)
        return x.view(x.size(0), x.size(1), H, Dh).transpose(1, 2)

    q, k, v = sp(lin[qk[0]](query)), sp(lin[qk[1]](key)), sp(lin[qk[2]](value))
    scale = 1 / math.sqrt(Dh) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None and not ignore_mask:
        scores = scores.masked_fill(mask if invert_mask else ~mask, float("-inf"))
    w = torch.softmax(scores, -1)
    o = w @ v                                                    # (B, H, Lq, Dh)
    o = o.reshape(B, Lq, D) if merge == "no_transpose" else o.transpose(1, 2).reshape(B, Lq, D)
    return (m.w_o(o) if out_proj else o), w


def _mha_variants(m, H, query, key, value, mask):
    D = query.size(-1)
    v_ = {
        "there is no output projection: return w_o(merge_heads(...))": dict(out_proj=False),
        "the heads are split by a reshape without a transpose: view as (B, L, n_heads, Dh), then transpose(1, 2)":
            dict(split="no_transpose"),
        "the heads are merged by a reshape without a transpose: transpose(1, 2) back before reshaping to "
        "(B, L, d_model)": dict(merge="no_transpose"),
        "the heads are split and merged without transposes": dict(split="no_transpose", merge="no_transpose"),
        "w_q is used for the keys: project keys with w_k": dict(qk=("w_q", "w_q", "w_v")),
        "w_k is used for the queries: project queries with w_q": dict(qk=("w_k", "w_k", "w_v")),
        "w_k and w_v are swapped": dict(qk=("w_q", "w_v", "w_k")),
        "w_q and w_k are swapped": dict(qk=("w_k", "w_q", "w_v")),
        "w_v is not used for the values: project values with w_v": dict(qk=("w_q", "w_k", "w_k")),
        "the scores are scaled by √d_model: scale by √d_head = √(d_model / n_heads), the size of one head":
            dict(scale=1 / math.sqrt(D)),
        "the scores are not scaled: divide by √d_head": dict(scale=1.0),
    }
    if mask is not None:
        v_.update({"the mask is inverted: True means 'may attend'": dict(invert_mask=True),
                   "the mask is ignored: pass it on to the attention of every head": dict(ignore_mask=True)})
    return {msg: (lambda kw=kw: _mha_variant(m, H, query, key, value, mask, **kw)) for msg, kw in v_.items()}


def _compare_mha(m, ref, H, query, key, value, mask, desc):
    args = (query, key, value) if mask is None else (query, key, value, mask)
    result = call_learner(m, *args, what="MultiHeadAttention.forward", forbid=NO_LIBRARY)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"MultiHeadAttention.forward should return a pair (output, weights), got {type(result).__name__}")
    out, w = result
    B, Lq, D = query.shape
    Lk = key.size(1)
    require_tensor(out, f"the output ({desc})", (B, Lq, D))
    if isinstance(w, torch.Tensor) and tuple(w.shape) == (B, Lq, Lk):
        raise AssertionError(f"the weights have shape {(B, Lq, Lk)} ({desc}): it looks like you averaged "
                             f"them over the heads; return one map per head, shape (B, n_heads, Lq, Lk)")
    require_tensor(w, f"the weights ({desc})", (B, H, Lq, Lk))
    torch_mask = None
    if mask is not None:                                         # torch: True = NOT allowed
        torch_mask = (~mask).expand(B, H, Lq, Lk).reshape(B * H, Lq, Lk)
    ref_out, ref_w = ref(query, key, value, attn_mask=torch_mask, need_weights=True,
                         average_attn_weights=False)
    variants = _mha_variants(m, H, query, key, value, mask)
    if not close(w, ref_w):
        why = diagnose(w, {k: (lambda f=f: f()[1]) for k, f in variants.items()},
                       "they match none of the usual mistakes: check the projections, the head split and the "
                       "scaling by √d_head")
        raise AssertionError(f"the attention weights differ from nn.MultiheadAttention's ({desc}): {why}")
    if not close(out, ref_out):
        why = diagnose(out, {k: (lambda f=f: f()[0]) for k, f in variants.items()},
                       "the weights are right, so check the merge of the heads and the output projection w_o")
        raise AssertionError(f"the output differs from nn.MultiheadAttention's ({desc}): {why}")


@graded("MultiHeadAttention has w_q, w_k, w_v, w_o = nn.Linear(d_model, d_model) and returns the right shapes")
def check_mha_shapes(cls):
    g = torch.Generator().manual_seed(9)
    for d_model, H, B, Lq, Lk in [(16, 4, 2, 3, 5), (12, 3, 1, 4, 4)]:
        m = _make_mha(cls, d_model, H)
        query = torch.randn(B, Lq, d_model, generator=g)
        kv = torch.randn(B, Lk, d_model, generator=g)
        result = call_learner(m, query, kv, kv, what="MultiHeadAttention.forward", forbid=NO_LIBRARY)
        assert isinstance(result, (tuple, list)) and len(result) == 2, (
            "MultiHeadAttention.forward should return a pair (output, weights)")
        out, w = result
        require_tensor(out, f"the output for query {(B, Lq, d_model)}", (B, Lq, d_model))
        if isinstance(w, torch.Tensor) and tuple(w.shape) == (B, Lq, Lk):
            raise AssertionError(f"the weights have shape {(B, Lq, Lk)}: it looks like you averaged them over the "
                                 f"heads; return one map per head, shape (B, n_heads, Lq, Lk)")
        require_tensor(w, f"the weights for query {(B, Lq, d_model)}, key {(B, Lk, d_model)}", (B, H, Lq, Lk))


@graded("MultiHeadAttention equals nn.MultiheadAttention with the same weights")
def check_mha_values(cls):
    g = torch.Generator().manual_seed(10)
    for d_model, H, B, Lq, Lk in [(16, 4, 2, 3, 5), (12, 2, 3, 4, 4), (8, 1, 1, 2, 3)]:
        m = _make_mha(cls, d_model, H)
        ref = _torch_twin(m, d_model, H, g)
        x = torch.randn(B, Lq, d_model, generator=g)
        _compare_mha(m, ref, H, x, x, x, None, f"self-attention, d_model={d_model}, n_heads={H}")
        query = torch.randn(B, Lq, d_model, generator=g)
        key = torch.randn(B, Lk, d_model, generator=g)
        value = torch.randn(B, Lk, d_model, generator=g)
        _compare_mha(m, ref, H, query, key, value, None,
                     f"query, key and value all different, d_model={d_model}, n_heads={H}")


@graded("MultiHeadAttention applies causal and padding masks like nn.MultiheadAttention")
def check_mha_masks(cls):
    g = torch.Generator().manual_seed(11)
    d_model, H, B, T = 16, 4, 2, 5
    m = _make_mha(cls, d_model, H)
    ref = _torch_twin(m, d_model, H, g)
    x = torch.randn(B, T, d_model, generator=g)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    _compare_mha(m, ref, H, x, x, x, causal, "causal mask of shape (T, T)")
    pad = (torch.arange(T) < torch.tensor([5, 3]).view(B, 1)).view(B, 1, 1, T)
    _compare_mha(m, ref, H, x, x, x, pad, "padding mask of shape (B, 1, 1, T)")
    _compare_mha(m, ref, H, x, x, x, causal & pad, "causal and padding masks combined, shape (B, 1, T, T)")
