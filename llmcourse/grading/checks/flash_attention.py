"""Hidden tests of the `flash_attention` assignment (solutions/flash_attention/flash_attention.ipynb).

Papers: Dao, Fu, Ermon, Rudra, Ré (2022), "FlashAttention", arXiv:2205.14135 (section 3.1,
Algorithms 1 and 4); Milakov and Gimelshein (2018), "Online normalizer calculation for
softmax", arXiv:1805.02867. The learner writes ``softmax_merge(m_a, l_a, m_b, l_b) -> (m, l)``,
``flash_attention_forward(q, k, v, causal=False, block_q=64, block_k=64) -> (out, lse)`` and
``flash_attention_backward(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64)
-> (grad_q, grad_k, grad_v)`` (contract in ``COURSE.md`` and issue 18).

References are independent of ``llmcourse.flash``: float64 attention with the whole matrix,
autograd through it for the gradients. A failing value is compared with a catalogue of
known-wrong variants (a float64 tiled forward and backward with one knob turned each) and
the message names the one it matches.

The tiling is *measured*: every learner call runs under a ``TorchDispatchMode`` that sees each
ATen operation the learner's code performs, with its inputs and outputs. From it the checks
read (1) the largest tensor created during the call (the contract: at most Lq·Lk/8 elements
per batch index at Lq = Lk = 1024, d = 32, blocks of 64), (2) the work done by matrix
products (and, for code without them, by element-wise operations), to compare causal with
non-causal work, and (3) any reduction over a whole row of Lk keys: a softmax over whole
rows, which gets no credit. The mode only records; it changes nothing, and it runs inside
:func:`~llmcourse.grading.common.call_learner`'s forbidden-call watcher and tamper guard.
The learner's functions get copies of the inputs, so editing an input in place costs nothing.
"""
from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..common import LLMCOURSE, TORCH_SDPA, Forbidden, _module_file, call_learner, close, graded, require_tensor


def _files(*modules, what):
    return {p: what.format(m) for m in modules if (p := _module_file(m))}


NO_LIBRARY = TORCH_SDPA | LLMCOURSE | Forbidden(files=_files("llmcourse.flash", what="the course's own {}"))
_engine = torch.autograd.Variable._execution_engine
NO_AUTOGRAD = NO_LIBRARY | Forbidden(
    builtins={_engine.run_backward: "autograd (the backward engine)"},
    codes={torch.autograd.grad.__code__: "torch.autograd.grad", torch.autograd.backward.__code__:
           "torch.autograd.backward", torch.Tensor.backward.__code__: "Tensor.backward"},
    files=_files("torch.autograd.functional", "torch._functorch.eager_transforms", "torch._functorch.apis",
                 what="autograd ({})"))
INF = float("-inf")

# ----------------------------------------------------------------------------- recording the learner's operations

_MATMUL = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot"}
_ROW_REDUCTIONS = {"_softmax", "_log_softmax", "_safe_softmax", "softmax", "logsumexp", "amax", "max", "sum",
                   "mean", "amin", "min"}


class Recorder(TorchDispatchMode):
    """Sees every ATen operation run inside it; records, never changes.

    ``largest``: (elements, description) of the largest tensor an operation created (the outputs
    of views and in-place operations, which alias an input by their schema, are not new);
    ``matmul_flops`` and ``elementwise``: the work of matrix products (2mnk) and of everything
    else (output elements); ``whole_row``: the first reduction over a dimension of size
    ``row_len`` (when given).
    """

    def __init__(self, row_len: int | None = None):
        super().__init__()
        self.row_len = row_len
        self.largest, self.matmul_flops, self.elementwise, self.whole_row = (0, ""), 0, 0, None
        self._ops: dict = {}        # per recorder: a module-level cache would change a guarded module in place

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # No torch._dynamo wrapper around __torch_dispatch__: it would import torch._dynamo inside the
        # learner's call (a second of start-up, and it rebinds torch.manual_seed, which the tamper
        # guard would rightly report).
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        info = self._ops.get(func)
        if info is None:                                  # (name, whether its outputs alias an input)
            info = self._ops[func] = (func._opname, any(r.alias_info is not None for r in func._schema.returns))
        name, aliases = info
        outs = (out,) if isinstance(out, torch.Tensor) else \
            [t for t in out if isinstance(t, torch.Tensor)] if isinstance(out, (list, tuple)) else ()
        if not aliases:                                   # views and in-place results are not new tensors
            for t in outs:
                if t.numel() > self.largest[0]:
                    self.largest = (t.numel(), f"shape {tuple(t.shape)} ({str(t.dtype).replace('torch.', '')}, "
                                               f"made by aten.{name})")
        if name in _MATMUL:
            a, b = args[-2], args[-1]
            m = a.shape[-2] if a.dim() >= 2 else 1
            n = b.shape[-1] if b.dim() >= 2 else 1
            self.matmul_flops += 2 * a.shape[:-2].numel() * m * a.shape[-1] * n
        else:
            self.elementwise += sum(t.numel() for t in outs)
        if self.row_len and self.whole_row is None and name in _ROW_REDUCTIONS and isinstance(args[0], torch.Tensor):
            x = args[0]
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            if not isinstance(dims, torch.Tensor):                     # (max.other, min.other: element-wise)
                dims = list(range(x.dim())) if dims is None or dims == [] else \
                    ([dims] if isinstance(dims, int) else list(dims))
                if x.is_floating_point() and x.dim() and any(x.shape[d % x.dim()] == self.row_len for d in dims):
                    self.whole_row = (f"aten.{name} over a dimension of size {self.row_len} of a {tuple(x.shape)} "
                                      f"tensor")
        return out



def _call(fn, *args, what: str, forbid: Forbidden, row_len: int | None = None, **kwargs):
    """``call_learner`` under a :class:`Recorder`; returns (result, recorder)."""
    rec = Recorder(row_len)
    with rec:
        result = call_learner(fn, *args, what=what, forbid=forbid, **kwargs)
    return result, rec


def _whole_row_len(batch, Lq, Lk, d, dv, bq, bk) -> int | None:
    """Lk, when a reduction over a dimension of size Lk can only be one over all the keys."""
    return Lk if bk < Lk and Lk not in {Lq, d, dv, bq, bk, *batch} else None


def _no_whole_rows(rec: Recorder, what: str, Lk: int, bk: int) -> None:
    if rec.whole_row:
        raise AssertionError(
            f"{what} reduces over all Lk = {Lk} keys of a row at once ({rec.whole_row}, with block_k = {bk}): "
            f"that is a softmax over whole rows, the very thing this part replaces by the online softmax over key "
            f"blocks, so this part gets no credit. Visit the keys block by block and merge the statistics.")


# ----------------------------------------------------------------------------- references


def _ref_forward(q, k, v, causal):
    """float64 attention with the whole matrix: (out, lse)."""
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), INF)
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


def _ref_backward(q, k, v, grad_out, causal):
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    with torch.enable_grad():
        out, _ = _ref_forward(q, k, v, causal)
        return torch.autograd.grad(out, (q, k, v), grad_out.double())


def _tiles(n, b):
    return [(i, min(i + b, n)) for i in range(0, n, b)]


def _tile_scores(q, k, causal, q0, q1, k0, k1, scale, mask_mode):
    s = (q[..., q0:q1, :] @ k[..., k0:k1, :].transpose(-2, -1)) * scale
    if causal and mask_mode != "none" and (mask_mode != "local" or k1 - 1 > q0):   # local: diagonal tiles only
        i = torch.arange(q0, q1)[:, None]
        j = torch.arange(k0, k1)[None, :]
        allowed = {"le": j <= i, "lt": j < i, "local": (j - k0) <= (i - q0)}[mask_mode]
        s = s.masked_fill(~allowed, INF)
    return s


def _variant_forward(q, k, v, causal, bq, bk, *, scale=None, rescale_acc=True, rescale_l=True, normalise=True,
                     lse="m+log l", mask="le", skip=True, drop_tail=False, stable=True):
    """A float64 tiled forward with one knob turned: the correct result when every knob has its default."""
    q, k, v = q.double(), k.double(), v.double()
    Lq, Lk = q.size(-2), k.size(-2)
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    out = torch.zeros(*q.shape[:-1], v.size(-1), dtype=torch.float64)
    lse_out = torch.zeros(q.shape[:-1], dtype=torch.float64)
    key_tiles = _tiles(Lk, bk)[: Lk // bk] if drop_tail else _tiles(Lk, bk)
    for q0, q1 in _tiles(Lq, bq):
        acc = torch.zeros(*q.shape[:-2], q1 - q0, v.size(-1), dtype=torch.float64)
        m = torch.full(q.shape[:-2] + (q1 - q0,), INF, dtype=torch.float64)
        l = torch.zeros_like(m)
        for k0, k1 in key_tiles:
            if causal and skip and k0 > q1 - 1:
                continue
            s = _tile_scores(q, k, causal, q0, q1, k0, k1, scale, mask)
            m_new = torch.maximum(m, s.amax(-1)) if stable else torch.zeros_like(m)
            shift = torch.nan_to_num(m_new, neginf=0.0)
            p = torch.exp(s - shift[..., None])
            alpha = torch.exp(m - shift) if stable else torch.ones_like(m)
            l = (l * alpha if rescale_l else l) + p.sum(-1)
            acc = (acc * alpha[..., None] if rescale_acc else acc) + p @ v[..., k0:k1, :]
            m = m_new
        out[..., q0:q1, :] = acc / l[..., None] if normalise else acc
        lse_out[..., q0:q1] = {"m+log l": m + torch.log(l), "log l": torch.log(l), "m": m,
                               "log2": (m + torch.log(l)) / math.log(2)}[lse]
    return out, lse_out


def _forward_variants(q, k, v, causal, bq, bk):
    """Known mistakes: explanation -> (out, lse) they produce."""
    d = q.size(-1)
    knobs = {
        "the accumulated output is not rescaled when the running maximum grows: multiply it by "
        "exp(m_old - m_new) before adding the new tile's P V": dict(rescale_acc=False),
        "the running sum l is not rescaled when the running maximum grows (l = l·exp(m_old - m_new) + rowsum(P))":
            dict(rescale_l=False),
        "the output is not divided by l at the end: out = acc / l": dict(normalise=False),
        "the scores are not scaled: multiply q kᵀ by 1/√d": dict(scale=1.0),
        "the scores are divided by d instead of √d": dict(scale=1.0 / d),
        "the scores are multiplied by √d instead of divided": dict(scale=math.sqrt(d)),
        "the last, shorter block of keys is dropped: when block_k does not divide Lk, the final block holds the "
        "remaining keys (range(0, Lk, block_k) and slices that stop at Lk)": dict(drop_tail=True),
        "lse is log(l) without the maximum: the statistics are relative to m, so lse = m + log(l)": dict(lse="log l"),
        "lse is the row maximum only: add log(l)": dict(lse="m"),
        "lse is in base 2: use the natural logarithm (torch.log)": dict(lse="log2"),
    }
    if causal:
        knobs.update({
            "the causal mask excludes the diagonal: query i may attend to key j when j <= i": dict(mask="lt"),
            "the causal mask ignores the tiles' positions: build it from global indices, query q0 + r may see "
            "key k0 + c when k0 + c <= q0 + r (a block-local tril is only right when the tiles are square and "
            "aligned)": dict(mask="local"),
            "the tiles on the diagonal are not masked: skipping the tiles above it is not enough, the keys after "
            "each query inside a diagonal tile must be masked too": dict(mask="none"),
            "causal=True is ignored: query i may only attend keys j <= i": dict(mask="none", skip=False),
        })
    return {msg: (lambda kw=kw: _variant_forward(q, k, v, causal, bq, bk, **kw)) for msg, kw in knobs.items()}


def _variant_backward(q, k, v, grad_out, causal, bq, bk, *, D="rowsum(dO*O)", scale_grads=True, mask="le", skip=True,
                      accumulate_dq=True, accumulate_dkv=True, drop_tail=False, p_from="lse"):
    """A float64 tiled backward with one knob turned (the forward's out and lse are exact)."""
    q, k, v, do = q.double(), k.double(), v.double(), grad_out.double()
    out, lse = _ref_forward(q, k, v, causal)
    scale = 1 / math.sqrt(q.size(-1))
    Dv = {"rowsum(dO*O)": (do * out).sum(-1), "zero": torch.zeros_like(lse)}[D]
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    Lq, Lk = q.size(-2), k.size(-2)
    for k0, k1 in (_tiles(Lk, bk)[: Lk // bk] if drop_tail else _tiles(Lk, bk)):
        for q0, q1 in _tiles(Lq, bq):
            if causal and skip and k0 > q1 - 1:
                continue
            s = _tile_scores(q, k, causal, q0, q1, k0, k1, scale, mask)
            p = torch.exp(s - lse[..., q0:q1, None]) if p_from == "lse" else torch.exp(s)
            dp = do[..., q0:q1, :] @ v[..., k0:k1, :].transpose(-2, -1)
            ds = p * (dp - Dv[..., q0:q1, None])
            c = scale if scale_grads else 1.0
            tile_dq = ds @ k[..., k0:k1, :] * c
            dq[..., q0:q1, :] = dq[..., q0:q1, :] + tile_dq if accumulate_dq else tile_dq
            tile_dk, tile_dv = ds.transpose(-2, -1) @ q[..., q0:q1, :] * c, p.transpose(-2, -1) @ do[..., q0:q1, :]
            if accumulate_dkv:
                dk[..., k0:k1, :] += tile_dk
                dv[..., k0:k1, :] += tile_dv
            else:
                dk[..., k0:k1, :], dv[..., k0:k1, :] = tile_dk, tile_dv
    return dq, dk, dv


def _backward_variants(q, k, v, grad_out, causal, bq, bk):
    knobs = {
        "the D term is missing: dS = P ∘ (dP - D) with D_i = rowsum(dO_i ∘ O_i), the derivative of the "
        "softmax's normalisation": dict(D="zero"),
        "the 1/√d scale is missing from grad_q and grad_k: the scores are (q kᵀ)/√d, so dQ = dS K/√d and "
        "dK = dSᵀ Q/√d": dict(scale_grads=False),
        "grad_q is overwritten by each key block instead of accumulated (+=)": dict(accumulate_dq=False),
        "grad_k and grad_v are overwritten by each query block instead of accumulated (+=)":
            dict(accumulate_dkv=False),
        "the probabilities are recomputed as exp(S) without subtracting lse: P_ij = exp(S_ij - lse_i)":
            dict(p_from="exp(S)"),
        "the last, shorter block of keys is dropped: when block_k does not divide Lk, the final block holds the "
        "remaining keys": dict(drop_tail=True),
    }
    if causal:
        knobs.update({
            "the backward ignores causal=True: recompute P with the same causal mask as the forward (and skip "
            "the tiles above the diagonal)": dict(mask="none", skip=False),
            "the backward's diagonal tiles are not masked: skipping the tiles above the diagonal is not enough, "
            "P must be recomputed with the causal mask inside the diagonal tiles": dict(mask="none"),
            "the causal mask of the backward excludes the diagonal: key j is allowed for query i when j <= i":
                dict(mask="lt"),
            "the backward's causal mask ignores the tiles' positions: use global indices (a block-local tril "
            "is only right for square, aligned tiles)": dict(mask="local"),
        })
    return {msg: (lambda kw=kw: _variant_backward(q, k, v, grad_out, causal, bq, bk, **kw)) for msg, kw in knobs.items()}


def _same(got, want) -> bool:
    """Close, with NaN and inf in the same places (a known mistake may produce them too)."""
    if not (isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(want.shape)):
        return False
    got, want = got.detach().double(), want.detach().double()
    if not torch.equal(torch.isfinite(got), torch.isfinite(want)):
        return False
    return close(torch.nan_to_num(got, 0.0, 0.0, 0.0), torch.nan_to_num(want, 0.0, 0.0, 0.0), atol=1e-4, rtol=1e-3)


def _match(got, variants: dict, pick, default: str | None) -> str | None:
    """The first variant whose ``pick(result)`` matches ``got``; else ``default``."""
    for message, make in variants.items():
        try:
            want = pick(make())
        except Exception:                                    # noqa: BLE001 (a variant may not apply)
            continue
        if _same(got, want):
            return message
    return default


# ----------------------------------------------------------------------------- cases


def _qkv(g, batch, Lq, Lk, d, dv, dtype=torch.float32, spread=1.0):
    q = torch.randn(*batch, Lq, d, generator=g, dtype=torch.float64) * spread
    k = torch.randn(*batch, Lk, d, generator=g, dtype=torch.float64) * spread
    v = torch.randn(*batch, Lk, dv, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


# (batch, Lq, Lk, d, dv, block_q, block_k, dtype, spread); block None = the defaults
FULL_CASES = [
    ((), 5, 7, 8, 6, None, None, torch.float32, 1.0),
    ((2,), 50, 37, 8, 6, 16, 10, torch.float32, 1.0),
    ((2, 3), 20, 45, 16, 4, 7, 16, torch.float32, 1.0),
    ((1,), 40, 150, 24, 20, 16, 32, torch.float32, 1.0),
    ((2,), 33, 70, 8, 5, 16, 16, torch.float32, 6.0),         # large scores: needs the running maximum
    ((2,), 50, 37, 8, 6, 16, 10, torch.float64, 1.0),
]
CAUSAL_CASES = [
    ((2,), 50, 50, 8, 8, 16, 16, torch.float32, 1.0),
    ((2,), 45, 45, 8, 6, 16, 7, torch.float32, 1.0),          # block_q > block_k: rows with no key in a tile
    ((), 37, 37, 8, 8, 5, 16, torch.float32, 1.0),            # block_q < block_k
    ((1, 2), 64, 64, 16, 16, None, None, torch.float32, 1.0),
    ((2,), 40, 40, 8, 8, 12, 9, torch.float64, 3.0),
]
DETECT = ((1,), 40, 150, 24, 20, 16, 32)                    # Lk = 150 is unlike every other size


def _describe(batch, Lq, Lk, d, dv, bq, bk, dtype, causal):
    blocks = "default blocks" if bq is None else f"block_q={bq}, block_k={bk}"
    return (f"q {(*batch, Lq, d)}, k {(*batch, Lk, d)}, v {(*batch, Lk, dv)}, {str(dtype).replace('torch.', '')}, "
            f"{blocks}{', causal=True' if causal else ''}")


def _tol(dtype):
    return (1e-9, 1e-9) if dtype == torch.float64 else (1e-4, 1e-3)


def _run_forward(fn, case, causal, g):
    batch, Lq, Lk, d, dv, bq, bk, dtype, spread = case
    q, k, v = _qkv(g, batch, Lq, Lk, d, dv, dtype, spread)
    kwargs = {} if bq is None else {"block_q": bq, "block_k": bk}
    if causal:
        kwargs["causal"] = True
    eff_bq, eff_bk = (64, 64) if bq is None else (bq, bk)
    row = _whole_row_len(batch, Lq, Lk, d, dv, eff_bq, eff_bk)
    result, rec = _call(fn, q.clone(), k.clone(), v.clone(), what="flash_attention_forward", forbid=NO_LIBRARY,
                        row_len=row, **kwargs)
    if row:
        _no_whole_rows(rec, "flash_attention_forward", Lk, eff_bk)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"flash_attention_forward should return a pair (out, lse), got {type(result).__name__}")
    desc = _describe(batch, Lq, Lk, d, dv, bq, bk, dtype, causal)
    out, lse = result
    require_tensor(out, f"out ({desc})", (*batch, Lq, dv))
    require_tensor(lse, f"lse ({desc})", (*batch, Lq))
    for name, t in (("out", out), ("lse", lse)):
        assert t.dtype == dtype, f"{name} has dtype {t.dtype} for {str(dtype).replace('torch.', '')} inputs: keep " \
                                 f"the inputs' dtype (create accumulators with dtype=q.dtype)"
    return (q, k, v, eff_bq, eff_bk, desc, spread), out, lse, rec


def _nonfinite_message(name, t, desc, spread, causal):
    bad = "NaN" if torch.isnan(t).any() else "inf"
    bad_rows = ~torch.isfinite(t)
    if name != "lse":                                     # (..., L, features): a row is bad if any entry is
        bad_rows = bad_rows.any(-1)
    rows = bad_rows.reshape(-1, bad_rows.shape[-1]).any(0).nonzero().flatten().tolist()
    if causal and rows == [0]:
        return (f"{name} has {bad} in row 0 only ({desc}): query 0 has no allowed key, so the causal mask excludes "
                f"the diagonal; query i may attend to key j when j <= i")
    if spread > 1:
        return (f"{name} has {bad} ({desc}, scores of a few hundred): exp of large scores overflows; subtract "
                f"the running row maximum before exp, as the online softmax does")
    if causal:
        return (f"{name} has {bad} ({desc}): a row with no allowed key in a tile has row maximum -inf, and "
                f"exp(-inf - (-inf)) is NaN. Treat such a tile as empty, (m, l) = (-inf, 0), and shift by 0 where "
                f"the maximum is -inf (softmax_merge does exactly this)")
    return f"{name} has {bad} ({desc})"


def _check_forward_values(fn, cases, causal, what):
    g = torch.Generator().manual_seed(11 if causal else 7)
    for case in cases:
        (q, k, v, bq, bk, desc, spread), out, lse, _ = _run_forward(fn, case, causal, g)
        want_out, want_lse = _ref_forward(q, k, v, causal)
        atol, rtol = _tol(q.dtype)
        for name, got, want, pick in (("out", out, want_out, lambda r: r[0]), ("lse", lse, want_lse, lambda r: r[1])):
            if name not in what:
                continue
            if close(got, want, atol=atol, rtol=rtol):
                continue
            if q.dtype == torch.float64 and close(got, want, atol=1e-4, rtol=1e-3):
                raise AssertionError(f"{name} ({desc}) has only float32 precision: with float64 inputs, compute in "
                                     f"float64 (create every accumulator with dtype=q.dtype)")
            why = _match(got, _forward_variants(q, k, v, causal, bq, bk), pick, None)
            if why is None and not torch.isfinite(got).all():
                raise AssertionError(_nonfinite_message(name, got, desc, spread, causal))
            raise AssertionError(f"{name} is wrong ({desc}): " + (why or (
                "it matches none of the usual mistakes: compare a single tile (blocks larger than the lengths) "
                "with softmax(q kᵀ/√d) v, then two tiles")))


def _preflight(fn, kind: str):
    """A call where Lk is unlike every other size, to see a reduction over whole rows (no credit)."""
    g = torch.Generator().manual_seed(99)
    batch, Lq, Lk, d, dv, bq, bk = DETECT
    q, k, v = _qkv(g, batch, Lq, Lk, d, dv)
    if kind == "forward":
        _, rec = _call(fn, q, k, v, block_q=bq, block_k=bk, what="flash_attention_forward", forbid=NO_LIBRARY,
                       row_len=Lk)
        _no_whole_rows(rec, "flash_attention_forward", Lk, bk)
    else:
        out, lse = (t.float() for t in _ref_forward(q, k, v, False))
        _, rec = _call(fn, q, k, v, out, lse, torch.randn(out.shape, generator=g), block_q=bq, block_k=bk,
                       what="flash_attention_backward", forbid=NO_AUTOGRAD, row_len=Lk)
        _no_whole_rows(rec, "flash_attention_backward", Lk, bk)


# ----------------------------------------------------------------------------- softmax_merge


def _stats(s):
    """(m, l) of a block of scores along the last axis; (-inf, 0) for an empty block."""
    m = s.amax(-1) if s.size(-1) else torch.full(s.shape[:-1], INF, dtype=s.dtype)
    return m, torch.exp(s - torch.nan_to_num(m, neginf=0.0)[..., None]).sum(-1)


def _call_merge(fn, m_a, l_a, m_b, l_b, desc):
    result = call_learner(fn, m_a.clone(), l_a.clone(), m_b.clone(), l_b.clone(), what="softmax_merge",
                          forbid=NO_LIBRARY)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"softmax_merge should return a pair (m, l), got {type(result).__name__}")
    m, l = result
    require_tensor(m, f"m ({desc})", tuple(m_a.shape))
    require_tensor(l, f"l ({desc})", tuple(m_a.shape))
    for name, t in (("m", m), ("l", l)):
        assert t.dtype == m_a.dtype, f"{name} has dtype {t.dtype} for {str(m_a.dtype).replace('torch.', '')} inputs: " \
                                     f"keep the inputs' dtype"
    return m, l


@graded("softmax_merge combines two blocks' (m, l) into the statistics of their union")
def check_merge_values(fn):
    g = torch.Generator().manual_seed(3)
    for shape, (na, nb), dtype, spread in [((5,), (4, 6), torch.float32, 1.0), ((2, 3), (7, 3), torch.float64, 4.0),
                                           ((), (5, 5), torch.float32, 10.0), ((4,), (1, 9), torch.float64, 30.0)]:
        a = torch.randn(*shape, na, generator=g, dtype=dtype) * spread
        b = torch.randn(*shape, nb, generator=g, dtype=dtype) * spread
        (m_a, l_a), (m_b, l_b) = _stats(a), _stats(b)
        desc = f"blocks of {na} and {nb} scores, shape {shape}, {str(dtype).replace('torch.', '')}"
        m, l = _call_merge(fn, m_a, l_a, m_b, l_b, desc)
        want_m = torch.maximum(m_a, m_b)
        want_l = torch.exp(torch.cat([a, b], -1) - want_m[..., None]).sum(-1)
        if not close(m, want_m, atol=1e-6, rtol=1e-6):
            why = "m is the row maximum of the union: m = max(m_a, m_b)"
            if close(m, torch.minimum(m_a, m_b), atol=1e-6, rtol=1e-6):
                why = "m is the minimum of m_a and m_b: the union's maximum is max(m_a, m_b)"
            raise AssertionError(f"m is wrong ({desc}): {why}")
        if not close(l, want_l, atol=1e-6, rtol=1e-5):
            variants = {
                "l_a + l_b: the two sums are relative to different maxima; rescale each to the new one, "
                "l = l_a·exp(m_a - m) + l_b·exp(m_b - m)": lambda: l_a + l_b,
                "the rescaling is inverted: multiply by exp(m_a - m), which is <= 1, not exp(m - m_a)":
                    lambda: l_a * torch.exp(want_m - m_a) + l_b * torch.exp(want_m - m_b),
                "only l_b is rescaled: l_a needs exp(m_a - m) too": lambda: l_a + l_b * torch.exp(m_b - want_m),
                "only l_a is rescaled: l_b needs exp(m_b - m) too": lambda: l_a * torch.exp(m_a - want_m) + l_b,
            }
            why = _match(l, {k_: (lambda f=f: f()) for k_, f in variants.items()}, lambda r: r,
                         "l = l_a·exp(m_a - m) + l_b·exp(m_b - m) with m = max(m_a, m_b)")
            raise AssertionError(f"l is wrong ({desc}): {why}")


@graded("softmax_merge: an empty block (-inf, 0) changes nothing, two empty blocks give (-inf, 0), never NaN")
def check_merge_empty(fn):
    for dtype in (torch.float32, torch.float64):
        m_a = torch.tensor([INF, INF, 1.5, INF, -2.0], dtype=dtype)
        l_a = torch.tensor([0.0, 0.0, 2.0, 0.0, 1.0], dtype=dtype)
        m_b = torch.tensor([INF, 0.5, INF, INF, 3.0], dtype=dtype)
        l_b = torch.tensor([0.0, 3.0, 0.0, 0.0, 1.5], dtype=dtype)
        want_m = torch.tensor([INF, 0.5, 1.5, INF, 3.0], dtype=dtype)
        want_l = torch.tensor([0.0, 3.0, 2.0, 0.0, 1.0 * math.exp(-5.0) + 1.5], dtype=dtype)
        desc = f"m_a={m_a.tolist()}, l_a={l_a.tolist()}, m_b={m_b.tolist()}, l_b={l_b.tolist()}"
        m, l = _call_merge(fn, m_a, l_a, m_b, l_b, desc)
        if torch.isnan(m).any() or torch.isnan(l).any():
            raise AssertionError(
                f"softmax_merge gives NaN ({desc} -> m={m.tolist()}, l={l.tolist()}): with two empty blocks, "
                f"m = -inf and exp(m_a - m) = exp(-inf - (-inf)) = exp(nan). Shift by 0 where m is -inf "
                f"(torch.where or torch.nan_to_num), so that an empty block contributes 0")
        if not torch.equal(torch.isneginf(m), torch.isneginf(want_m)):
            raise AssertionError(f"m is wrong ({desc} -> m={m.tolist()}): merging two empty blocks gives m = -inf, "
                                 f"and an empty block merged with (m, l) gives m")
        if not (close(torch.nan_to_num(m, neginf=0.0), torch.nan_to_num(want_m, neginf=0.0), atol=1e-6, rtol=1e-6)
                and close(l, want_l, atol=1e-6, rtol=1e-6)):
            raise AssertionError(f"(m, l) is wrong ({desc} -> m={m.tolist()}, l={l.tolist()}; expected "
                                 f"m={want_m.tolist()}, l={want_l.tolist()}): an empty block (-inf, 0) merged with "
                                 f"(m, l) must give (m, l) exactly")


# ----------------------------------------------------------------------------- the forward pass


@graded("flash_attention_forward: out equals softmax attention (several shapes, tail blocks, float32 and float64)")
def check_forward_output(fn):
    _preflight(fn, "forward")
    _check_forward_values(fn, FULL_CASES, False, ("out",))


@graded("flash_attention_forward: lse is the log-sum-exp of each row of scaled scores")
def check_forward_lse(fn):
    _preflight(fn, "forward")
    _check_forward_values(fn, FULL_CASES, False, ("lse",))


@graded("flash_attention_forward with causal=True: query i sees keys j <= i, any block sizes, no NaN")
def check_forward_causal(fn):
    _preflight(fn, "forward")
    _check_forward_values(fn, CAUSAL_CASES, True, ("out", "lse"))


TILED = ((1,), 1024, 1024, 32, 32, 64, 64, torch.float32, 1.0)
BOUND = 1024 * 1024 // 8


def _largest_ok(rec: Recorder, what: str, causal: bool) -> None:
    n, desc = rec.largest
    if n > BOUND:
        raise AssertionError(
            f"{what} is not tiled{' (causal=True)' if causal else ''}: it created a tensor of {n:,} elements, "
            f"{desc}, while with Lq = Lk = 1024, d = 32 and blocks of 64 no tensor may hold more than Lq·Lk/8 = "
            f"{BOUND:,} elements per batch index. Work on one (block_q, block_k) tile at a time, masks included, "
            f"and never build the whole (Lq, Lk) matrix. (Only the tiling points are lost: the values are graded "
            f"by the other tests.)")


def _tiled_forward(fn, causal):
    g = torch.Generator().manual_seed(5)
    (q, k, v, *_), out, lse, rec = _run_forward(fn, TILED, causal, g)
    want_out, want_lse = _ref_forward(q, k, v, causal)
    if not (close(out, want_out, atol=1e-4, rtol=1e-3) and close(lse, want_lse, atol=1e-4, rtol=1e-3)):
        raise AssertionError(f"flash_attention_forward is wrong at Lq = Lk = 1024{' with causal=True' if causal else ''}"
                             f", so its tiling cannot be graded: see the value tests")
    return rec


@graded("flash_attention_forward is tiled: no tensor larger than Lq·Lk/8 at Lq = Lk = 1024 (causal or not)")
def check_forward_tiled(fn):
    _preflight(fn, "forward")
    for causal in (False, True):
        _largest_ok(_tiled_forward(fn, causal), "flash_attention_forward", causal)


@graded("flash_attention_forward with causal=True skips the tiles above the diagonal (<= 0.6 of the work)")
def check_forward_skips(fn):
    _preflight(fn, "forward")
    full, causal = _tiled_forward(fn, False), _tiled_forward(fn, True)
    products = 4 * 1024 * 1024 * 32                      # two products of the whole matrix, 2 flops each
    if full.matmul_flops >= 0.1 * products:
        ratio, kind = causal.matmul_flops / full.matmul_flops, "matrix-multiply"
    else:
        ratio, kind = causal.elementwise / max(full.elementwise, 1), "element-wise"
    if ratio > 0.6:
        raise AssertionError(
            f"with causal=True, flash_attention_forward did {ratio:.0%} of the non-causal {kind} work (measured at "
            f"Lq = Lk = 1024, blocks of 64; the bound is 60%): no blocks are skipped. A tile whose first key comes "
            f"after its last query (k0 > q1 - 1) is entirely masked: skip it instead of computing and masking it")


# ----------------------------------------------------------------------------- the backward pass


def _run_backward(fn, case, causal, g):
    batch, Lq, Lk, d, dv, bq, bk, dtype, spread = case
    q, k, v = _qkv(g, batch, Lq, Lk, d, dv, dtype, spread)
    out, lse = (t.to(dtype) for t in _ref_forward(q, k, v, causal))
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    kwargs = {} if bq is None else {"block_q": bq, "block_k": bk}
    if causal:
        kwargs["causal"] = True
    eff_bq, eff_bk = (64, 64) if bq is None else (bq, bk)
    row = _whole_row_len(batch, Lq, Lk, d, dv, eff_bq, eff_bk)
    result, rec = _call(fn, *(t.clone() for t in (q, k, v, out, lse, grad_out)), what="flash_attention_backward",
                        forbid=NO_AUTOGRAD, row_len=row, **kwargs)
    if row:
        _no_whole_rows(rec, "flash_attention_backward", Lk, eff_bk)
    assert isinstance(result, (tuple, list)) and len(result) == 3, (
        f"flash_attention_backward should return (grad_q, grad_k, grad_v), got {type(result).__name__}"
        + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
    desc = _describe(batch, Lq, Lk, d, dv, bq, bk, dtype, causal)
    for name, t, like in zip(("grad_q", "grad_k", "grad_v"), result, (q, k, v)):
        require_tensor(t, f"{name} ({desc})", tuple(like.shape))
        assert t.dtype == dtype, f"{name} has dtype {t.dtype} for {str(dtype).replace('torch.', '')} inputs: keep " \
                                 f"the inputs' dtype"
    return (q, k, v, grad_out, eff_bq, eff_bk, desc, spread), result, rec


def _check_backward_values(fn, cases, causal):
    _preflight(fn, "backward")
    g = torch.Generator().manual_seed(13 if causal else 17)
    for case in cases:
        (q, k, v, grad_out, bq, bk, desc, spread), grads, _ = _run_backward(fn, case, causal, g)
        want = _ref_backward(q, k, v, grad_out, causal)
        atol, rtol = _tol(q.dtype)
        wrong = [i for i in range(3) if not close(grads[i], want[i], atol=atol, rtol=rtol)]
        if not wrong:
            continue
        names = ("grad_q", "grad_k", "grad_v")
        if q.dtype == torch.float64 and all(close(grads[i], want[i], atol=1e-4, rtol=1e-3) for i in wrong):
            raise AssertionError(f"the gradients ({desc}) have only float32 precision: with float64 inputs, compute "
                                 f"in float64 (dtype=q.dtype)")
        variants = _backward_variants(q, k, v, grad_out, causal, bq, bk)
        why = _match(torch.cat([g_.reshape(-1) for g_ in grads]).detach(), variants,
                     lambda r: torch.cat([t.reshape(-1) for t in r]), None)
        for i in wrong:
            if why is None and not torch.isfinite(grads[i]).all():
                raise AssertionError(_nonfinite_message(names[i], grads[i], desc, spread, causal))
        why = why or ("they match none of the usual mistakes: check one tile (blocks larger than the lengths) "
                      "against autograd through softmax(q kᵀ/√d) v")
        right = [names[i] for i in range(3) if i not in wrong]
        raise AssertionError(f"{', '.join(names[i] for i in wrong)} {'is' if len(wrong) == 1 else 'are'} wrong ({desc})"
                             + (f" while {', '.join(right)} {'is' if len(right) == 1 else 'are'} right" if right else "")
                             + f": {why}")


@graded("flash_attention_backward: gradients equal autograd through naive attention (tail blocks, float64 too)")
def check_backward_values(fn):
    _check_backward_values(fn, FULL_CASES, False)


@graded("flash_attention_backward with causal=True (any block sizes)")
def check_backward_causal(fn):
    _check_backward_values(fn, CAUSAL_CASES, True)


@graded("flash_attention_backward is tiled: no tensor larger than Lq·Lk/8 at Lq = Lk = 1024 (causal or not)")
def check_backward_tiled(fn):
    _preflight(fn, "backward")
    for causal in (False, True):
        g = torch.Generator().manual_seed(23)
        (q, k, v, grad_out, *_), grads, rec = _run_backward(fn, TILED, causal, g)
        want = _ref_backward(q, k, v, grad_out, causal)
        if not all(close(a, b, atol=1e-4, rtol=1e-3) for a, b in zip(grads, want)):
            raise AssertionError(f"flash_attention_backward is wrong at Lq = Lk = 1024"
                                 f"{' with causal=True' if causal else ''}, so its tiling cannot be graded: see the "
                                 f"value tests")
        _largest_ok(rec, "flash_attention_backward", causal)

