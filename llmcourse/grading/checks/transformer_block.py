"""Hidden tests of the `transformer_block` assignment (solutions/transformer_block/transformer_block.ipynb).

Papers: Ba, Kiros, Hinton (2016), "Layer Normalization", arXiv:1607.06450 (equations 3-4);
Vaswani et al. (2017), "Attention Is All You Need", arXiv:1706.03762, sections 3.1 (residual
and LayerNorm around each sublayer), 3.3 (the feed-forward network) and 3.5 (sinusoidal
positions); Xiong et al. (2020), "On Layer Normalization in the Transformer Architecture",
arXiv:2002.04745 (Pre-LN).

The learner writes ``LayerNorm(d_model, eps=1e-5)`` (parameters ``weight``, ``bias``),
``sinusoidal_positions(n_positions, d_model)``, ``FeedForward(d_model, d_ff)`` (``linear1``,
``linear2``) and ``TransformerBlock(d_model, n_heads, d_ff, norm_position="pre")``
(``self_attn``, ``linear1``, ``linear2``, ``norm1``, ``norm2``; ``forward(x, mask=None)``, the
mask ``True`` where a query may attend). References are independent of the learner and of
``llmcourse``: ``F.layer_norm``, an explicit loop over positions and frequencies, and
``nn.TransformerEncoderLayer`` with the same state dict. When a value check fails, the
learner's result is compared with a catalogue of known-wrong variants and the message
names the one it matches.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..common import Forbidden, _module_file, call_learner, close, diagnose, graded, require_tensor

_COURSE = Forbidden(files={path: f"the course's own {mod}" for mod in
                           ("llmcourse.transformer", "llmcourse.prenorm", "llmcourse.gpt", "llmcourse.mlm",
                            "llmcourse.bert") if (path := _module_file(mod))})
NO_LAYER_NORM = _COURSE | Forbidden(
    builtins={getattr(torch, n): f"torch.{n} (PyTorch's layer norm)" for n in ("layer_norm", "native_layer_norm")
              if hasattr(torch, n)},
    codes={F.layer_norm.__code__: "torch.nn.functional.layer_norm",
           nn.LayerNorm.forward.__code__: "torch.nn.LayerNorm"})
NO_ENCODER_LAYER = _COURSE | Forbidden(
    builtins={getattr(torch, n): "nn.TransformerEncoderLayer's fused kernel"
              for n in ("_transformer_encoder_layer_fwd",) if hasattr(torch, n)},
    codes={nn.TransformerEncoderLayer.forward.__code__: "torch.nn.TransformerEncoderLayer",
           nn.TransformerEncoder.forward.__code__: "torch.nn.TransformerEncoder",
           nn.Transformer.forward.__code__: "torch.nn.Transformer"})

# Sizes chosen pairwise different so that a wrong size in a formula shows.
D, H, DFF, L, B = 12, 3, 20, 5, 2
EPS = 1e-5

# ----------------------------------------------------------------------------- LayerNorm


def _ln_variant(x, w, b, eps, *, dims=(-1,), unbiased=False, center=True, eps_mode="inside", affine="ok"):
    """Layer norm with one knob turned: the correct result when every knob has its default."""
    mu = x.mean(dim=dims, keepdim=True) if center else torch.zeros_like(x)
    var = ((x - mu) ** 2).sum(dim=dims, keepdim=True)
    n = math.prod(x.shape[d] for d in dims)
    var = var / (n - 1 if unbiased else n)
    if eps_mode == "inside":
        y = (x - mu) / torch.sqrt(var + eps)
    elif eps_mode == "outside":
        y = (x - mu) / (torch.sqrt(var) + eps)
    elif eps_mode == "no_sqrt":
        y = (x - mu) / (var + eps)
    else:                                                            # eps ignored
        y = (x - mu) / torch.sqrt(var)
    if affine == "none":
        return y
    if affine == "swapped":
        return y * b + w
    return y * w + b


def _ln_variants(x, w, b, eps, learner_eps=EPS):
    """Known mistakes: explanation -> what it would output (``learner_eps``: the eps the learner was given)."""
    v = {
        "the variance is the unbiased one (divided by d - 1; torch.var and torch.std do that by default): "
        "layer norm divides by d, use unbiased=False": dict(unbiased=True),
        "the mean is not subtracted (that is RMSNorm): normalise x - mean": dict(center=False),
        "eps is added outside the square root: divide by sqrt(var + eps), not sqrt(var) + eps":
            dict(eps_mode="outside"),
        "the division is by var + eps without the square root: divide by sqrt(var + eps)": dict(eps_mode="no_sqrt"),
        "eps is not used: divide by sqrt(var + eps)": dict(eps_mode="none"),
        "weight and bias are not applied: return normalised * weight + bias": dict(affine="none"),
        "weight and bias are swapped: return normalised * weight + bias": dict(affine="swapped"),
    }
    if x.dim() >= 2:
        v["the statistics are taken over the first dimension (the batch): take them over the last one, "
          "dim=-1"] = dict(dims=(0,))
        v["the statistics are taken over the whole tensor: take them over the last dimension only, "
          "dim=-1, one mean and variance per position"] = dict(dims=tuple(range(x.dim())))
        v["the statistics are taken over dim -2: take them over the last dimension, dim=-1"] = dict(dims=(-2,))
    out = {}
    if learner_eps != EPS:                                           # first: a fixed 1e-5 also looks like "no eps"
        out["the eps given to __init__ is not used (the default 1e-5 is): store it and use it"] = (
            lambda: _ln_variant(x, w, b, EPS))
    out.update({msg: (lambda kw=kw: _ln_variant(x, w, b, eps, **kw)) for msg, kw in v.items()})
    return out


def _make_ln(cls, d, **kw):
    m = call_learner(cls, d, **kw, what=f"LayerNorm({d}{''.join(f', {k}={v}' for k, v in kw.items())})",
                     forbid=NO_LAYER_NORM)
    assert isinstance(m, nn.Module), "LayerNorm must be an nn.Module (class LayerNorm(nn.Module))"
    for name in ("weight", "bias"):
        assert isinstance(getattr(m, name, None), torch.Tensor), (
            f"LayerNorm({d}) has no tensor attribute `{name}`: the contract asks for parameters `weight` "
            f"(ones) and `bias` (zeros) of shape (d_model,)")
    return m


def _set_affine(m, g):
    d = m.weight.shape[-1]
    w, b = torch.randn(d, generator=g) * 0.5 + 1, torch.randn(d, generator=g) * 0.5
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
    return w, b


def _check_ln_output(m, x, w, b, eps, desc, learner_eps=EPS):
    out = call_learner(m, x.clone(), what="LayerNorm.forward", forbid=NO_LAYER_NORM)   # a copy: in-place is fine
    require_tensor(out, f"the output ({desc})", tuple(x.shape))
    ref = F.layer_norm(x, (x.shape[-1],), w, b, eps)
    if not close(out, ref, atol=1e-5, rtol=1e-4):
        why = diagnose(out, _ln_variants(x, w, b, eps, learner_eps),
                       "it matches none of the usual mistakes: compute (x - mean) / sqrt(var + eps) * weight + bias "
                       "over the last dimension, with the biased variance")
        raise AssertionError(f"LayerNorm's output differs from nn.LayerNorm's ({desc}): {why}")


@graded("LayerNorm has parameters weight (ones) and bias (zeros) of shape (d_model,)")
def check_layernorm_parameters(cls):
    for d in (8, 5):
        m = _make_ln(cls, d)
        params = {id(p) for p in m.parameters()}
        for name, fill in (("weight", 1.0), ("bias", 0.0)):
            p = getattr(m, name)
            assert isinstance(p, nn.Parameter) and id(p) in params, (
                f"`{name}` is a plain tensor, not a parameter of the module: wrap it in nn.Parameter, so that "
                f"the optimizer trains it and the state dict holds it")
            require_tensor(p, f"LayerNorm({d}).{name}", (d,))
            assert torch.equal(p.detach(), torch.full((d,), fill)), (
                f"LayerNorm({d}).{name} should start at all {'ones' if fill else 'zeros'}, "
                f"so that a new layer norm only normalises")
        call_learner(cls, d, eps=0.1, what=f"LayerNorm({d}, eps=0.1)", forbid=NO_LAYER_NORM)


@graded("LayerNorm equals nn.LayerNorm on inputs of several shapes")
def check_layernorm_values(cls):
    g = torch.Generator().manual_seed(1)
    for shape in [(4, 8), (2, 3, 8), (2, 2, 3, 5), (7,)]:
        m = _make_ln(cls, shape[-1])
        w, b = _set_affine(m, g)
        x = torch.randn(*shape, generator=g) * 3 + torch.randn(*shape[:-1], 1, generator=g) * 2
        _check_ln_output(m, x, w, b, EPS, f"input of shape {shape}, random weight and bias")


@graded("LayerNorm puts eps inside the square root and uses the eps it is given")
def check_layernorm_eps(cls):
    g = torch.Generator().manual_seed(2)
    for eps in (0.5, 0.05):
        m = _make_ln(cls, 6, eps=eps)
        w, b = _set_affine(m, g)
        x = torch.randn(3, 6, generator=g) * 0.3                        # small variance: eps matters
        _check_ln_output(m, x, w, b, eps, f"LayerNorm(6, eps={eps}) on inputs of small variance", learner_eps=eps)


@graded("gradients flow through LayerNorm to the input, weight and bias as through nn.LayerNorm")
def check_layernorm_grad(cls):
    g = torch.Generator().manual_seed(3)
    m = _make_ln(cls, 8)
    w, b = _set_affine(m, g)
    x = (torch.randn(2, 3, 8, generator=g) * 2).requires_grad_()
    r = torch.randn(2, 3, 8, generator=g)
    out = call_learner(m, x, what="LayerNorm.forward", forbid=NO_LAYER_NORM)
    require_tensor(out, "the output", (2, 3, 8))
    assert out.requires_grad, ("the output does not require grad: did you use .detach(), .item(), "
                               "torch.no_grad() or torch.tensor(...) on the way?")
    params = [m.weight, m.bias]
    for name, p in zip(("weight", "bias"), params):
        assert p.requires_grad, f"`{name}` does not require grad: make it an nn.Parameter"
    grads = call_learner(torch.autograd.grad, (out * r).sum(), (x, *params), allow_unused=True,
                         what="backpropagating through your LayerNorm")
    wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    want = torch.autograd.grad((F.layer_norm(xr, (8,), wr, br, EPS) * r).sum(), (xr, wr, br))
    for name, got, ref in zip(("the input", "weight", "bias"), grads, want):
        assert got is not None, f"no gradient reaches {name}: compute the output from it with tensor operations"
        assert close(got, ref, atol=1e-4, rtol=1e-3), (
            f"the gradient with respect to {name} differs from nn.LayerNorm's: is the mean or the variance "
            f"detached, or taken over the wrong dimension?")


# ----------------------------------------------------------------------------- sinusoidal positions


def _positions_reference(n, d):
    """Explicit loops in float64: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(the same)."""
    pe = torch.empty(n, d, dtype=torch.float64)
    for p in range(n):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            pe[p, 2 * i], pe[p, 2 * i + 1] = math.sin(angle), math.cos(angle)
    return pe.float()


def _positions_variant(n, d, *, swap=False, halves=False, exponent="2i", start=0, base=10000.0):
    p = torch.arange(start, start + n, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)
    e = {"2i": 2 * i / d, "i": i / d}[exponent]
    ang = p / base ** e                                                  # (n, d/2)
    first, second = (torch.cos(ang), torch.sin(ang)) if swap else (torch.sin(ang), torch.cos(ang))
    if halves:
        return torch.cat([first, second], dim=1).float()
    return torch.stack([first, second], dim=2).reshape(n, d).float()


def _positions_variants(n, d):
    v = {
        "sin and cos are swapped: sin goes in the even columns 2i, cos in the odd ones 2i + 1": dict(swap=True),
        "the sines fill the first half of the columns and the cosines the second: interleave them, sin in "
        "column 2i and cos in column 2i + 1": dict(halves=True),
        "the frequencies use 10000^(i/d_model): the exponent is 2i/d_model, where 2i is the even column": dict(
            exponent="i"),
        "the positions count from 1: the first position is p = 0": dict(start=1),
        "sin and cos are swapped and in halves": dict(swap=True, halves=True),
    }
    out = {msg: (lambda kw=kw: _positions_variant(n, d, **kw)) for msg, kw in v.items()}
    j = torch.arange(d, dtype=torch.float64)
    p = torch.arange(n, dtype=torch.float64)[:, None]
    col = p / 10000 ** (j / d)                                           # exponent j/d for every column j
    out["column j uses the exponent j/d_model: both columns of a pair (2i and 2i + 1) share 2i/d_model"] = (
        lambda: torch.where(j.long() % 2 == 0, torch.sin(col), torch.cos(col)).float())
    return out


@graded("sinusoidal_positions returns a float32 tensor of shape (n_positions, d_model)")
def check_positions_shape(fn):
    for n, d in [(7, 8), (1, 4), (50, 16), (3, 2)]:
        pe = call_learner(fn, n, d, what=f"sinusoidal_positions({n}, {d})", forbid=_COURSE)
        require_tensor(pe, f"sinusoidal_positions({n}, {d})")
        if tuple(pe.shape) == (d, n) and n != d:
            raise AssertionError(f"sinusoidal_positions({n}, {d}) has shape {(d, n)}: it is transposed, rows are "
                                 f"positions, columns features: (n_positions, d_model)")
        require_tensor(pe, f"sinusoidal_positions({n}, {d})", (n, d))
        assert pe.dtype == torch.float32, (
            f"sinusoidal_positions({n}, {d}) has dtype {pe.dtype}: return float32 (torch.arange gives int64 and "
            f"numpy float64: convert with .float() or dtype=torch.float32)")


@graded("sinusoidal_positions has PE[p, 2i] = sin(p / 10000^(2i/d)) and PE[p, 2i+1] = cos(p / 10000^(2i/d))")
def check_positions_values(fn):
    for n, d in [(7, 8), (50, 16), (3, 2), (20, 6)]:
        pe = call_learner(fn, n, d, what=f"sinusoidal_positions({n}, {d})", forbid=_COURSE)
        require_tensor(pe, f"sinusoidal_positions({n}, {d})", (n, d))
        ref = _positions_reference(n, d)
        if not close(pe, ref, atol=1e-4, rtol=1e-4):
            why = diagnose(pe.float(), _positions_variants(n, d),
                           "it matches none of the usual mistakes: check PE[0] = [0, 1, 0, 1, ...] and "
                           "PE[p, 0] = sin(p)")
            raise AssertionError(f"sinusoidal_positions({n}, {d}) has wrong values: {why}")


# ----------------------------------------------------------------------------- the feed-forward network


def _make_ffn(cls, d, dff):
    m = call_learner(cls, d, dff, what=f"FeedForward({d}, {dff})", forbid=_COURSE)
    assert isinstance(m, nn.Module), "FeedForward must be an nn.Module"
    for name, (i, o) in (("linear1", (d, dff)), ("linear2", (dff, d))):
        lin = getattr(m, name, None)
        assert isinstance(lin, nn.Linear), (
            f"FeedForward({d}, {dff}) has no nn.Linear attribute `{name}`: the contract asks for linear1 "
            f"(d_model -> d_ff) and linear2 (d_ff -> d_model)")
        assert (lin.in_features, lin.out_features) == (i, o), (
            f"{name} is nn.Linear({lin.in_features}, {lin.out_features}); it should be nn.Linear({i}, {o}): "
            f"linear1 widens d_model to d_ff, linear2 brings it back")
        assert lin.bias is not None, f"{name} has no bias: use nn.Linear with its bias, as the paper's FFN has"
    return m


@graded("FeedForward has linear1 = nn.Linear(d_model, d_ff) and linear2 = nn.Linear(d_ff, d_model)")
def check_ffn_structure(cls):
    for d, dff in [(8, 12), (5, 3)]:
        _make_ffn(cls, d, dff)


@graded("FeedForward computes linear2(relu(linear1(x)))")
def check_ffn_values(cls):
    g = torch.Generator().manual_seed(4)
    m = _make_ffn(cls, D, DFF)
    x = torch.randn(B, L, D, generator=g)
    out = call_learner(m, x.clone(), what="FeedForward.forward", forbid=_COURSE)
    require_tensor(out, "FeedForward's output", (B, L, D))
    again = call_learner(m, x.clone(), what="FeedForward.forward", forbid=_COURSE)
    assert close(out, again, atol=0, rtol=0), (
        "FeedForward gives different outputs for the same input: is there dropout? The contract has none")
    l1, l2 = m.linear1, m.linear2
    ref = l2(F.relu(l1(x)))
    if not close(out, ref):
        why = diagnose(out, {
            "the activation is GELU: the paper's FFN (and the contract) uses ReLU, max(0, x)": lambda: l2(F.gelu(l1(x))),
            "there is no activation between the two linear layers: apply ReLU to linear1's output":
                lambda: l2(l1(x)),
            "ReLU is also applied after linear2: only between the layers": lambda: F.relu(l2(F.relu(l1(x)))),
            "the activation is tanh: use ReLU": lambda: l2(torch.tanh(l1(x))),
        }, "it should be linear2(relu(linear1(x)))")
        raise AssertionError(f"FeedForward's output is wrong: {why}")


# ----------------------------------------------------------------------------- the Transformer block


def _reference_layer(pre: bool, g) -> nn.TransformerEncoderLayer:
    """PyTorch's encoder layer with random weights (norm gains and biases too), no dropout."""
    ref = nn.TransformerEncoderLayer(D, H, DFF, dropout=0.0, batch_first=True, norm_first=pre)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.startswith("norm") and name.endswith("weight"):
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() == 1 else 0.4))
    return ref


def _block_variant(ref, x, mask, *, pre, residual_norm=False, attn_res=True, ffn_res=True, act=F.relu,
                   final_norm=False, swap_norms=False, mask_mode="ok"):
    """The block written out with one mistake switched on (the correct block with the defaults)."""
    n1, n2 = (ref.norm2, ref.norm1) if swap_norms else (ref.norm1, ref.norm2)
    am = None if mask is None or mask_mode == "ignore" else (mask if mask_mode == "not_inverted" else ~mask)

    def attn(h):
        return ref.self_attn(h, h, h, attn_mask=am, need_weights=False)[0]

    def ffn(h):
        return ref.linear2(act(ref.linear1(h)))

    if pre:
        h = n1(x)
        x = (h if residual_norm else x) * attn_res + attn(h)
        h = n2(x)
        x = (h if residual_norm else x) * ffn_res + ffn(h)
        return n2(x) if final_norm else x
    x = n1(x * attn_res + attn(x))
    return n2(x * ffn_res + ffn(x))


def _block_variants(ref, x, mask, pre):
    other = "post" if pre else "pre"
    v = {
        f"the placement is ignored: with norm_position={'pre' if pre else 'post'!r} your block computes the "
        f"{other}-LN block": dict(pre=not pre),
        "the feed-forward uses GELU: the contract (and nn.TransformerEncoderLayer's default) is ReLU": dict(
            pre=pre, act=F.gelu),
        "the residual around the attention is missing: add the sublayer's input back": dict(pre=pre, attn_res=False),
        "the residual around the feed-forward is missing: add the sublayer's input back": dict(pre=pre, ffn_res=False),
        "norm1 and norm2 are swapped: norm1 goes with the attention, norm2 with the feed-forward": dict(
            pre=pre, swap_norms=True),
    }
    if pre:
        v["the residual stream is normalised: Pre-LN adds the sublayer to x itself, x + attn(norm1(x)), not to "
          "norm1(x)"] = dict(pre=True, residual_norm=True)
        v["there is a LayerNorm after the block: nn.TransformerEncoderLayer(norm_first=True) ends with the "
          "residual sum (a Pre-LN model puts one final norm after its last block, outside the blocks)"] = dict(
            pre=True, final_norm=True)
    if mask is not None:
        v["the mask is not inverted: the contract's mask is True where a query may attend, "
          "nn.MultiheadAttention's boolean attn_mask is True where it may NOT: pass ~mask"] = dict(
            pre=pre, mask_mode="not_inverted")
        v["the mask is ignored: pass it (inverted) to self_attn as attn_mask"] = dict(pre=pre, mask_mode="ignore")
    return {msg: (lambda kw=kw: _block_variant(ref, x, mask, **kw)) for msg, kw in v.items()}


REFERENCE_KEYS = sorted(nn.TransformerEncoderLayer(D, H, DFF, dropout=0.0, batch_first=True).state_dict())


def _make_block(cls, norm_position=None):
    args = (D, H, DFF) if norm_position is None else (D, H, DFF, norm_position)
    shown = f"TransformerBlock({D}, {H}, {DFF}{'' if norm_position is None else f', {norm_position!r}'})"
    m = call_learner(cls, *args, what=shown, forbid=NO_ENCODER_LAYER)
    assert isinstance(m, nn.Module), "TransformerBlock must be an nn.Module"
    return m


def _load(m, ref):
    """Copy the reference's state dict into the learner's block; every key of the contract must be there."""
    own = m.state_dict()
    missing = [k for k in REFERENCE_KEYS if k not in own]
    assert not missing, (
        f"your block has no parameter named {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}: with "
        f"the contract's attributes (self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True), "
        f"linear1, linear2, norm1, norm2 with weight and bias) its state dict has nn.TransformerEncoderLayer's "
        f"names")
    for k in REFERENCE_KEYS:
        assert tuple(own[k].shape) == tuple(ref.state_dict()[k].shape), (
            f"your block's {k} has shape {tuple(own[k].shape)}, nn.TransformerEncoderLayer's "
            f"{tuple(ref.state_dict()[k].shape)}")
    call_learner(m.load_state_dict, ref.state_dict(), strict=False, what="load_state_dict on your block")


def _check_norms(m, ref, x):
    """A wrong block output may come from a wrong layer norm (part 1): say so first."""
    for name in ("norm1", "norm2"):
        got = call_learner(getattr(m, name), x.clone(), what=f"the block's {name}", forbid=NO_ENCODER_LAYER)
        want = getattr(ref, name)(x)
        assert close(got, want, atol=1e-4, rtol=1e-3), (
            f"the block's {name} differs from nn.LayerNorm with the same weight and bias: the block's output "
            f"cannot match until it does (fix LayerNorm, part 1, or use it with its default eps)")


def _compare_block(m, ref, x, mask, pre, desc):
    def args():                                                  # copies: a learner may add in place
        return (x.clone(),) if mask is None else (x.clone(), mask.clone())

    out = call_learner(m, *args(), what="TransformerBlock.forward", forbid=NO_ENCODER_LAYER)
    if isinstance(out, (tuple, list)):
        raise AssertionError(f"TransformerBlock.forward returned a {type(out).__name__}: return the tensor "
                             f"(nn.MultiheadAttention returns (output, weights): keep the output)")
    require_tensor(out, f"the output ({desc})", tuple(x.shape))
    again = call_learner(m, *args(), what="TransformerBlock.forward", forbid=NO_ENCODER_LAYER)
    assert close(out, again, atol=0, rtol=0), (
        "your block gives different outputs for the same input: is there dropout? The contract has none")
    want = ref(x) if mask is None else ref(x, src_mask=~mask)
    if not close(out, want, atol=1e-4, rtol=1e-3):
        _check_norms(m, ref, x)
        why = diagnose(out, _block_variants(ref, x, mask, pre),
                       "it matches none of the usual mistakes: check the order norm -> sublayer -> residual "
                       "for the placement, and that self_attn gets (h, h, h)")
        if not torch.isfinite(out).all() and mask is not None:
            why += " (your output has NaN: a row of the mask passed to self_attn allows no key at all)"
        raise AssertionError(f"the block's output differs from nn.TransformerEncoderLayer's ({desc}): {why}")


@graded("TransformerBlock has self_attn, linear1, linear2, norm1, norm2 with nn.TransformerEncoderLayer's state dict")
def check_block_structure(cls):
    for pos in ("pre", "post"):
        m = _make_block(cls, pos)
        attn = getattr(m, "self_attn", None)
        assert isinstance(attn, nn.MultiheadAttention), (
            "self_attn should be nn.MultiheadAttention(d_model, n_heads, batch_first=True)")
        assert attn.batch_first, ("self_attn was made without batch_first=True: the block's inputs are "
                                  "(B, L, d_model)")
        assert (attn.embed_dim, attn.num_heads) == (D, H), (
            f"self_attn is nn.MultiheadAttention({attn.embed_dim}, {attn.num_heads}); expected ({D}, {H})")
        for name, (i, o) in (("linear1", (D, DFF)), ("linear2", (DFF, D))):
            lin = getattr(m, name, None)
            assert lin is not None, (
                f"the block has no attribute `{name}`: the contract puts linear1 and linear2 on the block itself "
                f"(not inside a FeedForward), so that its state dict has nn.TransformerEncoderLayer's names")
            assert isinstance(lin, nn.Linear) and (lin.in_features, lin.out_features) == (i, o), (
                f"the block's `{name}` should be nn.Linear({i}, {o}) (d_model={D}, d_ff={DFF})")
        for name in ("norm1", "norm2"):
            norm = getattr(m, name, None)
            assert isinstance(norm, nn.Module) and isinstance(getattr(norm, "weight", None), nn.Parameter) \
                and isinstance(getattr(norm, "bias", None), nn.Parameter), (
                    f"the block's `{name}` should be a layer norm module with parameters weight and bias "
                    f"(your LayerNorm(d_model))")
        ref = _reference_layer(pos == "pre", torch.Generator().manual_seed(5))
        _load(m, ref)
        out = call_learner(m, torch.randn(B, L, D), what="TransformerBlock.forward", forbid=NO_ENCODER_LAYER)
        if isinstance(out, (tuple, list)):
            raise AssertionError(f"TransformerBlock.forward returned a {type(out).__name__}: return the tensor "
                                 f"(nn.MultiheadAttention returns (output, weights): keep the output)")
        require_tensor(out, "the block's output for x of shape (B, L, d_model)", (B, L, D))


@graded("TransformerBlock(norm_position='post') equals nn.TransformerEncoderLayer(norm_first=False)")
def check_block_post(cls):
    g = torch.Generator().manual_seed(6)
    for trial in range(2):
        m = _make_block(cls, "post")
        ref = _reference_layer(False, g)
        _load(m, ref)
        x = torch.randn(B, L, D, generator=g) * 2
        _compare_block(m, ref, x, None, False, f"post-LN, no mask, input {tuple(x.shape)}")


@graded("TransformerBlock(norm_position='pre'), the default, equals nn.TransformerEncoderLayer(norm_first=True)")
def check_block_pre(cls):
    g = torch.Generator().manual_seed(7)
    for pos, desc in ((None, "default norm_position"), ("pre", "norm_position='pre'")):
        m = _make_block(cls, pos)
        ref = _reference_layer(True, g)
        _load(m, ref)
        x = torch.randn(B, L, D, generator=g) * 2
        _compare_block(m, ref, x, None, True, f"{desc}, no mask, input {tuple(x.shape)}")


@graded("TransformerBlock applies boolean masks (True = may attend) in both placements")
def check_block_mask(cls):
    g = torch.Generator().manual_seed(8)
    rand = torch.rand(L, L, generator=g) < 0.5
    rand |= torch.eye(L, dtype=torch.bool)                       # each query may attend itself ...
    rand[:, 0] &= torch.arange(L) == 0                           # ... and at least one key is hidden from it
    rand[0, -1] = False
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for pos in ("post", "pre"):
        for name, mask in (("random (L, L) mask", rand), ("causal (L, L) mask", causal)):
            m = _make_block(cls, pos)
            ref = _reference_layer(pos == "pre", g)
            _load(m, ref)
            x = torch.randn(B, L, D, generator=g) * 2
            _compare_block(m, ref, x, mask, pos == "pre", f"norm_position={pos!r}, {name}")


@graded("TransformerBlock raises ValueError for a norm_position other than 'pre' and 'post'")
def check_block_norm_position(cls):
    x = torch.randn(B, L, D)
    for bad in ("middle", "Pre", "post-norm", None):
        def attempt():
            try:
                block = cls(D, H, DFF, bad)
                block(x)
            except Exception as e:                               # noqa: BLE001 (its type is checked below)
                return e
            return None

        err = call_learner(attempt, what=f"TransformerBlock({D}, {H}, {DFF}, {bad!r})", forbid=NO_ENCODER_LAYER)
        assert err is not None, (
            f"TransformerBlock({D}, {H}, {DFF}, norm_position={bad!r}) raised nothing: raise ValueError for "
            f"anything but 'pre' and 'post' (a typo would otherwise silently give one of them)")
        assert isinstance(err, ValueError), (
            f"TransformerBlock({D}, {H}, {DFF}, norm_position={bad!r}) raised {type(err).__name__}: "
            f"raise ValueError")
    for good in ("pre", "post"):
        call_learner(lambda: cls(D, H, DFF, good)(x), what=f"TransformerBlock({D}, {H}, {DFF}, {good!r})",
                     forbid=NO_ENCODER_LAYER)
