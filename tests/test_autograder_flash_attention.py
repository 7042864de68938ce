"""The `flash_attention` assignment's autograder: its catalogue, proven in-process and by nbgrader.

The catalogue: the solution, the untouched release, wrong implementations (name -> (cell
sources, hidden tests that must fail, words the first failure's message must contain); nothing
outside the parts touched may lose points, and a wrong ``softmax_merge`` may also cost the
forward, which calls it), correct implementations written differently from the contract (the
paper's loop order, FlashAttention-2's with einsum and split, float64 inside, one that prints
and warns, a finite mask value, in-place edits and a Python batch loop: full marks), and
submissions that call what the part replaces (PyTorch's fused attention, ``llmcourse.flash``,
a softmax over whole rows, autograd in the backward: no credit for that part).

Every entry is proven in-process in the fast tier (``test_catalogue_in_process``, see
:class:`nbgrader_harness.Catalogue`); one real ``nbgrader autograde`` batch (slow) grades the
solution, the release, one wrong entry per part (the untiled forward among them), the call of
PyTorch's fused attention and the noisy correct entry, and checks that nbgrader's verdicts
equal the in-process ones. ``llmcourse grade`` grades the solution once. The recorder the
checks measure tiling with is tested in ``tests/test_flash_grading.py``.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmcourse import flash
from nbgrader_harness import REPO, Catalogue, course_with_submission, grade_id, solution_sources

ASSIGNMENT = "flash_attention"
SOL = solution_sources(ASSIGNMENT)
PART_TESTS = {
    "merge": ["test_merge_values", "test_merge_empty"],
    "forward": ["test_forward_output", "test_forward_lse", "test_forward_causal", "test_forward_tiled",
                "test_forward_skips"],
    "backward": ["test_backward_values", "test_backward_causal", "test_backward_tiled"],
}
USES = {"merge": ["forward"]}           # the solution's forward calls softmax_merge
TOTAL = 21
TIMEOUT = 60                            # nbgrader's per-cell limit; the slowest check takes ~2 s


def code(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


def edit(part: str, old: str, new: str, count: int = 1) -> dict[str, str]:
    """The solution's cell ``part`` with ``old`` replaced by ``new`` (which must occur ``count`` times)."""
    src = SOL[part]
    assert src.count(old) == count, (part, old, src.count(old))
    return {part: src.replace(old, new)}


FWD, BWD = PART_TESTS["forward"], PART_TESTS["backward"]

# ----------------------------------------------------------------------------- wrong implementations

WRONG = {
    # softmax_merge
    "merge_not_rescaled": ({"merge": code("""
        def softmax_merge(m_a, l_a, m_b, l_b):
            return torch.maximum(m_a, m_b), l_a + l_b""")}, ["test_merge_values"], "l_a + l_b"),
    "merge_nan_on_empty": ({"merge": code("""
        def softmax_merge(m_a, l_a, m_b, l_b):
            m = torch.maximum(m_a, m_b)
            return m, l_a * torch.exp(m_a - m) + l_b * torch.exp(m_b - m)""")}, ["test_merge_empty"], "NaN"),
    "merge_inverted": ({"merge": code("""
        def softmax_merge(m_a, l_a, m_b, l_b):
            m = torch.maximum(m_a, m_b)
            shift = torch.nan_to_num(m, neginf=0.0)
            return m, l_a * torch.exp(shift - m_a.clamp(min=-1e30)) + l_b * torch.exp(shift - m_b.clamp(min=-1e30))""")},
        ["test_merge_values"], "inverted"),
    "merge_min": ({"merge": code("""
        def softmax_merge(m_a, l_a, m_b, l_b):
            m = torch.minimum(m_a, m_b)
            shift = torch.nan_to_num(torch.maximum(m_a, m_b), neginf=0.0)
            return m, l_a * torch.exp(m_a - shift) + l_b * torch.exp(m_b - shift)""")},
        ["test_merge_values"], "minimum"),
    "merge_m_not_minus_inf": ({"merge": code("""
        def softmax_merge(m_a, l_a, m_b, l_b):
            m = torch.nan_to_num(torch.maximum(m_a, m_b), neginf=0.0)
            return m, l_a * torch.exp(m_a - m) + l_b * torch.exp(m_b - m)""")},
        ["test_merge_empty"], "m = -inf"),
    # the forward pass
    "forward_accumulator_not_rescaled": (edit("forward", "acc = acc * torch.exp(m - shift)[..., None] + ", "acc = acc + "),
                                         ["test_forward_output"], "accumulated output is not rescaled"),
    "forward_l_not_rescaled": (edit("forward", """            m_new, l = softmax_merge(m, l, m_blk, p.sum(dim=-1))
            shift = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)""",
                                    """            m_new = torch.maximum(m, m_blk)
            shift = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            l = l + p.sum(dim=-1) * torch.exp(m_blk - shift)"""),
                               ["test_forward_output"], "running sum l is not rescaled"),
    "forward_not_normalised": (edit("forward", "out[..., q0:q1, :] = acc / l[..., None]", "out[..., q0:q1, :] = acc"),
                               ["test_forward_output"], "not divided by l"),
    "forward_not_scaled": (edit("forward", "qi = q[..., q0:q1, :] * scale", "qi = q[..., q0:q1, :]"),
                           ["test_forward_output"], "not scaled"),
    "forward_lse_without_max": (edit("forward", "lse[..., q0:q1] = m + torch.log(l)", "lse[..., q0:q1] = torch.log(l)"),
                                ["test_forward_lse"], "without the maximum"),
    "forward_causal_off_by_one": (edit("forward", "<= torch.arange(q0, q1)[:, None]", "< torch.arange(q0, q1)[:, None]"),
                                  ["test_forward_causal"], "excludes the diagonal"),
    "forward_no_tiles_skipped": (edit("forward", """            if causal and k0 > q1 - 1:                   # the rest of the row is above the diagonal
                break
""", ""), ["test_forward_skips"], "no blocks are skipped"),
    "forward_untiled_full_matrix": ({"forward": code("""
        def flash_attention_forward(q, k, v, causal=False, block_q=64, block_k=64):
            # the online softmax over key blocks, but of a score matrix built whole: correct, not tiled
            *batch, Lq, d = q.shape
            Lk = k.shape[-2]
            s = q @ k.transpose(-2, -1) / math.sqrt(d)
            if causal:
                s = s.masked_fill(torch.ones(Lq, Lk, dtype=torch.bool).triu(1), float("-inf"))
            m = q.new_full((*batch, Lq), float("-inf"))
            l = q.new_zeros(*batch, Lq)
            acc = q.new_zeros(*batch, Lq, v.shape[-1])
            for k0 in range(0, Lk, block_k):
                blk = s[..., k0:k0 + block_k]
                m_new = torch.maximum(m, blk.amax(-1))
                shift = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
                p = torch.exp(blk - shift[..., None])
                alpha = torch.exp(m - shift)
                l = l * alpha + p.sum(-1)
                acc = acc * alpha[..., None] + p @ v[..., k0:k0 + block_k, :]
                m = m_new
            return acc / l[..., None], m + torch.log(l)""")}, ["test_forward_tiled"], "is not tiled"),
    "forward_tail_dropped": (edit("forward", "for k0 in range(0, Lk, block_k):", "for k0 in range(0, Lk - block_k + 1, block_k):"),
                             ["test_forward_output"], "last, shorter block of keys is dropped"),
    "forward_nan_on_empty_tiles": (edit("forward", """            p = torch.exp(s - torch.where(torch.isneginf(m_blk), torch.zeros_like(m_blk), m_blk)[..., None])
            m_new, l = softmax_merge(m, l, m_blk, p.sum(dim=-1))
            shift = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)""",
                                        """            p = torch.exp(s - m_blk[..., None])
            m_new, l = softmax_merge(m, l, m_blk, p.sum(dim=-1))
            shift = m_new"""), ["test_forward_causal"], "NaN"),
    "forward_block_local_mask": (edit("forward", "allowed = torch.arange(k0, k1)[None, :] <= torch.arange(q0, q1)[:, None]",
                                      "allowed = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool).tril()"),
                                 ["test_forward_causal"], "tiles' positions"),
    "forward_float32_output": ({"forward": SOL["forward"].replace("out = q.new_empty(*batch, Lq, dv)",
                                                                  "out = torch.empty(*batch, Lq, dv)")
                                .replace("lse = q.new_empty(*batch, Lq)", "lse = torch.empty(*batch, Lq)")},
                               ["test_forward_output"], "dtype"),
    "forward_no_running_max": (edit("forward", "m_blk = s.amax(dim=-1)", "m_blk = torch.zeros_like(s.amax(dim=-1))"),
                               ["test_forward_output"], "overflows"),
    "forward_causal_ignored": (edit("forward", "if causal and", "if False and", count=2),
                               ["test_forward_causal"], "causal=True is ignored"),
    "forward_diagonal_not_masked": (edit("forward", """            if causal and k1 - 1 > q0:                   # the tile crosses the diagonal
                allowed = torch.arange(k0, k1)[None, :] <= torch.arange(q0, q1)[:, None]
                s = s.masked_fill(~allowed, float("-inf"))
""", ""), ["test_forward_causal"], "diagonal are not masked"),
    # the backward pass
    "backward_no_D": (edit("backward", "D = (grad_out * out).sum(dim=-1)", "D = torch.zeros_like(lse)"),
                      ["test_backward_values"], "D term is missing"),
    "backward_not_scaled": ({"backward": SOL["backward"].replace("@ kj * scale", "@ kj").replace("@ qi * scale", "@ qi")},
                            ["test_backward_values"], "scale is missing"),
    "backward_causal_ignored": (edit("backward", "if causal and", "if False and", count=2),
                                ["test_backward_causal"], "ignores causal=True"),
    "backward_dq_overwritten": (edit("backward", "grad_q[..., q0:q1, :] += ds @ kj * scale",
                                     "grad_q[..., q0:q1, :] = ds @ kj * scale"),
                                ["test_backward_values"], "overwritten"),
    "backward_untiled_full_matrix": ({"backward": code("""
        def flash_attention_backward(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
            # recomputed from lse, but the whole matrix at once: correct, not tiled
            scale = 1.0 / math.sqrt(q.shape[-1])
            s = q @ k.transpose(-2, -1) * scale
            if causal:
                s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
            p = torch.exp(s - lse[..., None])
            ds = p * (grad_out @ v.transpose(-2, -1) - (grad_out * out).sum(-1, keepdim=True))
            return ds @ k * scale, ds.transpose(-2, -1) @ q * scale, p.transpose(-2, -1) @ grad_out""")},
        ["test_backward_tiled"], "is not tiled"),
    "backward_p_without_lse": (edit("backward", "p = torch.exp(s - lse[..., q0:q1, None])", "p = torch.exp(s)"),
                               ["test_backward_values"], "without subtracting lse"),
    "backward_tail_dropped": (edit("backward", "for k0 in range(0, Lk, block_k):",
                                   "for k0 in range(0, Lk - block_k + 1, block_k):"),
                              ["test_backward_values"], "last, shorter block of keys is dropped"),
    "backward_diagonal_not_masked": (edit("backward", """            if causal and k1 - 1 > q0:
                allowed = torch.arange(k0, k1)[None, :] <= torch.arange(q0, q1)[:, None]
                s = s.masked_fill(~allowed, float("-inf"))
""", ""), ["test_backward_causal"], "diagonal tiles are not masked"),
}

# ----------------------------------------------------------------------------- correct implementations

PAPER_ORDER = {
    "merge": code("""
        def softmax_merge(m_a, l_a, m_b, l_b):
            m = torch.max(m_a, m_b)
            safe = m.masked_fill(m == float("-inf"), 0.0)
            return m, l_a * (m_a - safe).exp() + l_b * (m_b - safe).exp()"""),
    # Algorithm 1: key blocks outside, O, l, m of every row in "HBM", O renormalised at every step (line 12)
    "forward": code("""
        def flash_attention_forward(q, k, v, causal=False, block_q=64, block_k=64):
            Lq, d = q.shape[-2:]
            Lk = k.shape[-2]
            tau = 1 / math.sqrt(d)
            O = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
            l = torch.zeros(q.shape[:-1], dtype=q.dtype)
            m = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)
            for j0 in range(0, Lk, block_k):
                Kj, Vj = k[..., j0:j0 + block_k, :], v[..., j0:j0 + block_k, :]
                j1 = j0 + Kj.shape[-2]
                for i0 in range(0, Lq, block_q):
                    i1 = min(i0 + block_q, Lq)
                    if causal and j0 >= i1:
                        continue
                    S = tau * q[..., i0:i1, :] @ Kj.transpose(-1, -2)
                    if causal:
                        rows = torch.arange(i0, i1).unsqueeze(-1)
                        cols = torch.arange(j0, j1).unsqueeze(0)
                        S = S.masked_fill(cols > rows, float("-inf"))
                    mij = S.max(dim=-1).values
                    Pij = torch.exp(S - mij.masked_fill(mij == float("-inf"), 0.0).unsqueeze(-1))
                    mi, li = m[..., i0:i1], l[..., i0:i1]
                    m_new, l_new = softmax_merge(mi, li, mij, Pij.sum(-1))
                    safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
                    denom = torch.where(l_new > 0, l_new, torch.ones_like(l_new))
                    O[..., i0:i1, :] = ((li * torch.exp(mi - safe) / denom).unsqueeze(-1) * O[..., i0:i1, :]
                                        + (torch.exp(mij - safe) / denom).unsqueeze(-1) * (Pij @ Vj))
                    m[..., i0:i1] = m_new
                    l[..., i0:i1] = l_new
            return O, m + torch.log(l)"""),
    # Algorithm 4, with D_i computed inside the loop as the paper does (line 19)
    "backward": code("""
        def flash_attention_backward(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
            Lq, d = q.shape[-2:]
            Lk = k.shape[-2]
            tau = 1 / math.sqrt(d)
            dQ = torch.zeros_like(q)
            dK = torch.zeros_like(k)
            dV = torch.zeros_like(v)
            for j0 in range(0, Lk, block_k):
                Kj, Vj = k[..., j0:j0 + block_k, :], v[..., j0:j0 + block_k, :]
                j1 = j0 + Kj.shape[-2]
                dKj, dVj = torch.zeros_like(Kj), torch.zeros_like(Vj)
                for i0 in range(0, Lq, block_q):
                    i1 = min(i0 + block_q, Lq)
                    if causal and j0 >= i1:
                        continue
                    Qi, Oi, dOi = q[..., i0:i1, :], out[..., i0:i1, :], grad_out[..., i0:i1, :]
                    S = tau * Qi @ Kj.transpose(-1, -2)
                    if causal:
                        S = S.masked_fill(torch.arange(j0, j1)[None, :] > torch.arange(i0, i1)[:, None], float("-inf"))
                    P = torch.exp(S - lse[..., i0:i1].unsqueeze(-1))
                    dVj = dVj + P.transpose(-1, -2) @ dOi
                    dP = dOi @ Vj.transpose(-1, -2)
                    Di = (dOi * Oi).sum(-1, keepdim=True)
                    dS = P * (dP - Di)
                    dQ[..., i0:i1, :] = dQ[..., i0:i1, :] + tau * dS @ Kj
                    dKj = dKj + tau * dS.transpose(-1, -2) @ Qi
                dK[..., j0:j1, :] = dKj
                dV[..., j0:j1, :] = dVj
            return dQ, dK, dV"""),
}

FA2_ORDER = {
    "merge": code("""
        def softmax_merge(m_a, l_a, m_b, l_b):
            m = torch.where(m_a > m_b, m_a, m_b)
            wa = torch.where(l_a > 0, torch.exp(m_a - m), torch.zeros_like(m_a))
            wb = torch.where(l_b > 0, torch.exp(m_b - m), torch.zeros_like(m_b))
            return m, l_a * wa + l_b * wb"""),
    # queries outside (FlashAttention-2), torch.split and einsum, results concatenated
    "forward": code("""
        def flash_attention_forward(q, k, v, causal=False, block_q=64, block_k=64):
            d = q.shape[-1]
            outs, lses, i0 = [], [], 0
            for qi in q.split(block_q, dim=-2):
                i1 = i0 + qi.shape[-2]
                m = torch.full(qi.shape[:-1], -math.inf, dtype=q.dtype)
                l = torch.zeros(qi.shape[:-1], dtype=q.dtype)
                acc = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype)
                j0 = 0
                for kj, vj in zip(k.split(block_k, dim=-2), v.split(block_k, dim=-2)):
                    j1 = j0 + kj.shape[-2]
                    if not causal or j0 < i1:
                        s = torch.einsum("...id,...jd->...ij", qi, kj) / math.sqrt(d)
                        if causal and j1 > i0 + 1:
                            s = torch.where(torch.arange(j0, j1) <= torch.arange(i0, i1)[:, None], s, -math.inf)
                        m_new = torch.maximum(m, s.amax(-1))
                        base = torch.where(m_new == -math.inf, 0.0, m_new)
                        p = torch.exp(s - base[..., None])
                        corr = torch.exp(m - base)
                        l = l * corr + p.sum(-1)
                        acc = acc * corr[..., None] + torch.einsum("...ij,...jd->...id", p, vj)
                        m = m_new
                    j0 = j1
                outs.append(acc / l[..., None])
                lses.append(m + l.log())
                i0 = i1
            return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)"""),
    # queries outside here too: dQ_i finished per query block, dK and dV accumulated
    "backward": code("""
        def flash_attention_backward(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
            scale = q.shape[-1] ** -0.5
            Lq, Lk = q.shape[-2], k.shape[-2]
            dq = torch.empty_like(q)
            dk = torch.zeros_like(k)
            dv = torch.zeros_like(v)
            for i0 in range(0, Lq, block_q):
                i1 = min(Lq, i0 + block_q)
                qi, doi, oi = q[..., i0:i1, :], grad_out[..., i0:i1, :], out[..., i0:i1, :]
                Di = (doi * oi).sum(-1, keepdim=True)
                dqi = torch.zeros_like(qi)
                for j0 in range(0, min(Lk, i1) if causal else Lk, block_k):
                    j1 = min(Lk, j0 + block_k)
                    kj, vj = k[..., j0:j1, :], v[..., j0:j1, :]
                    s = qi @ kj.mT * scale
                    if causal:
                        s = s.masked_fill(torch.arange(j0, j1)[None] > torch.arange(i0, i1)[:, None], -math.inf)
                    p = (s - lse[..., i0:i1].unsqueeze(-1)).exp()
                    dv[..., j0:j1, :] += p.mT @ doi
                    ds = p * (doi @ vj.mT - Di)
                    dqi += ds @ kj
                    dk[..., j0:j1, :] += ds.mT @ qi
                dq[..., i0:i1, :] = dqi * scale
            return dq, dk * scale, dv"""),
}


def float64_inside() -> dict[str, str]:
    """The solution, computing in float64 whatever the inputs, results cast back."""
    rename = {"merge": "softmax_merge", "forward": "flash_attention_forward", "backward": "flash_attention_backward"}
    out = {}
    for part, name in rename.items():
        inner = SOL[part].replace(f"def {name}(", f"def _{name}64(")
        if part == "merge":
            wrap = f"""
                def {name}(m_a, l_a, m_b, l_b):
                    m, l = _{name}64(m_a.double(), l_a.double(), m_b.double(), l_b.double())
                    return m.to(m_a.dtype), l.to(l_a.dtype)"""
        elif part == "forward":
            wrap = f"""
                def {name}(q, k, v, causal=False, block_q=64, block_k=64):
                    out, lse = _{name}64(q.double(), k.double(), v.double(), causal, block_q, block_k)
                    return out.to(q.dtype), lse.to(q.dtype)"""
        else:
            wrap = f"""
                def {name}(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
                    grads = _{name}64(*(t.double() for t in (q, k, v, out, lse, grad_out)), causal, block_q, block_k)
                    return tuple(g.to(q.dtype) for g in grads)"""
        out[part] = inner + "\n\n\n" + code(wrap)
    return out


def noisy() -> dict[str, str]:
    """The solution with a print, a warning and a line on stderr in every function (they must cost nothing)."""
    shown = {"merge": "m_a.shape", "forward": "q.shape", "backward": "grad_out.shape"}
    out = {}
    for part, src in SOL.items():
        head, _, body = src.partition("\n")
        out[part] = ("import sys\nimport warnings\n\n" + head + "\n"
                     + f"    print('{part} called with', tuple({shown[part]}))\n"
                     + f"    warnings.warn('{part}: this is a harmless learner warning')\n"
                     + f"    print('{part}: a line on stderr', file=sys.stderr)\n" + body)
    return out


FINITE_MASK = {
    # a large negative number instead of -inf for masked scores: correct, since every row's first key block
    # (key 0) is allowed, so a fully masked tile is always merged into a finite running maximum
    "merge": code("""
        def softmax_merge(m_a, l_a, m_b, l_b):
            m = torch.maximum(m_a, m_b)
            base = torch.nan_to_num(m, neginf=0.0)
            return m, torch.nan_to_num(l_a * torch.exp(m_a - base)) + torch.nan_to_num(l_b * torch.exp(m_b - base))"""),
    "forward": SOL["forward"].replace('s = s.masked_fill(~allowed, float("-inf"))',
                                      "s = s.masked_fill(~allowed, -1e30 if s.dtype == torch.float32 else -1e300)"),
    "backward": SOL["backward"].replace('s = s.masked_fill(~allowed, float("-inf"))',
                                        "s = s.masked_fill(~allowed, torch.finfo(s.dtype).min)"),
}

INPLACE = {   # edits its inputs in place (the contract does not forbid it) and loops over the batch in Python
    "forward": SOL["forward"].replace("    out = q.new_empty(*batch, Lq, dv)\n",
                                      "    q.mul_(scale)                                   # in place\n"
                                      "    out = q.new_empty(*batch, Lq, dv)\n")
                             .replace("qi = q[..., q0:q1, :] * scale", "qi = q[..., q0:q1, :]"),
    "backward": code("""
        def flash_attention_backward(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
            if q.dim() > 2:                       # one batch element at a time
                grads = [flash_attention_backward(*(t[i] for t in (q, k, v, out, lse, grad_out)), causal,
                                                  block_q, block_k) for i in range(q.shape[0])]
                return tuple(torch.stack(g) for g in zip(*grads))
            lse.sub_(0.0)
            grad_out.mul_(1.0 / math.sqrt(q.shape[-1]))   # the 1/sqrt(d) of dQ and dK, folded into dO in place
            Lq, Lk = q.shape[0], k.shape[0]
            D = (grad_out * out).sum(-1)
            dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
            for k0 in range(0, Lk, block_k):
                for q0 in range(0, Lq, block_q):
                    q1, k1 = min(q0 + block_q, Lq), min(k0 + block_k, Lk)
                    if causal and k0 > q1 - 1:
                        continue
                    s = q[q0:q1] @ k[k0:k1].T / math.sqrt(q.shape[-1])
                    if causal:
                        s = s.masked_fill(torch.arange(k0, k1)[None] > torch.arange(q0, q1)[:, None], float("-inf"))
                    p = torch.exp(s - lse[q0:q1, None])
                    dv[k0:k1] += p.T @ grad_out[q0:q1] * math.sqrt(q.shape[-1])
                    ds = p * (grad_out[q0:q1] @ v[k0:k1].T - D[q0:q1, None])
                    dq[q0:q1] += ds @ k[k0:k1]
                    dk[k0:k1] += ds.T @ q[q0:q1]
            return dq, dk, dv"""),
}

CORRECT = {
    "paper_loop_order": PAPER_ORDER,
    "fa2_loop_order_einsum": FA2_ORDER,
    "float64_inside": float64_inside(),
    "noisy_prints_and_warns": noisy(),
    "finite_mask_value": FINITE_MASK,
    "inplace_edits_batch_loop": INPLACE,
}

# ----------------------------------------------------------------------------- calls that get no credit

FORBIDDEN = {
    "forward_torch_sdpa": ({"forward": code("""
        import torch.nn.functional as F


        def flash_attention_forward(q, k, v, causal=False, block_q=64, block_k=64):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if causal:
                s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
            return out, torch.logsumexp(s, dim=-1)""")}, FWD, "scaled_dot_product_attention"),
    "forward_llmcourse_flash": ({"forward": "from llmcourse.flash import flash_forward as flash_attention_forward"},
                                FWD, "llmcourse.flash"),
    "forward_whole_rows": ({"forward": code("""
        def flash_attention_forward(q, k, v, causal=False, block_q=64, block_k=64):
            # strips of block_q queries against ALL the keys: a softmax over whole rows
            outs, lses = [], []
            for q0 in range(0, q.shape[-2], block_q):
                s = q[..., q0:q0 + block_q, :] @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
                if causal:
                    rows = torch.arange(q0, q0 + s.shape[-2])[:, None]
                    s = s.masked_fill(torch.arange(k.shape[-2])[None, :] > rows, float("-inf"))
                outs.append(torch.softmax(s, dim=-1) @ v)
                lses.append(torch.logsumexp(s, dim=-1))
            return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)""")}, FWD, "softmax over whole rows"),
    "backward_autograd": ({"backward": code("""
        def flash_attention_backward(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
            with torch.enable_grad():
                q2, k2, v2 = (t.detach().requires_grad_() for t in (q, k, v))
                o = flash_attention_forward(q2, k2, v2, causal, block_q, block_k)[0]
                return torch.autograd.grad(o, (q2, k2, v2), grad_out)""")}, BWD, "autograd"),
    "backward_whole_rows": ({"backward": code("""
        def flash_attention_backward(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
            scale = 1.0 / math.sqrt(q.shape[-1])
            D = (grad_out * out).sum(-1)
            dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
            for q0 in range(0, q.shape[-2], block_q):
                qi, doi = q[..., q0:q0 + block_q, :], grad_out[..., q0:q0 + block_q, :]
                s = qi @ k.transpose(-2, -1) * scale
                if causal:
                    rows = torch.arange(q0, q0 + s.shape[-2])[:, None]
                    s = s.masked_fill(torch.arange(k.shape[-2])[None, :] > rows, float("-inf"))
                p = torch.softmax(s, dim=-1)                       # recomputed over the whole row
                dv += p.transpose(-2, -1) @ doi
                ds = p * (doi @ v.transpose(-2, -1) - D[..., q0:q0 + block_q, None])
                dq[..., q0:q0 + block_q, :] = ds @ k * scale
                dk += ds.transpose(-2, -1) @ qi * scale
            return dq, dk, dv""")}, BWD, "softmax over whole rows"),
}


# ----------------------------------------------------------------------------- the catalogue

CAT = Catalogue(ASSIGNMENT, PART_TESTS, wrong=WRONG, correct=CORRECT, forbidden=FORBIDDEN, uses=USES,
                timeout=TIMEOUT, total=TOTAL,
                nbgrader_wrong=["merge_not_rescaled", "forward_untiled_full_matrix", "backward_no_D"],
                nbgrader_correct=["noisy_prints_and_warns"])


# ----------------------------------------------------------------------------- fast: the catalogue in-process


@pytest.mark.parametrize("kind,name", CAT.entries())
def test_catalogue_in_process(kind, name):
    CAT.prove(kind, name)


def test_catalogue_covers_every_part():
    assert (len(WRONG), len(CORRECT), len(FORBIDDEN)) == (28, 6, 5)
    assert {p for src, _, _ in WRONG.values() for p in src} == set(PART_TESTS)     # every part has wrong entries


def test_release_names_the_stub_in_every_test():
    res = CAT.run(CAT.release_sources())
    assert all("replace it with your code" in r.error for r in res.values()), {k: r.text for k, r in res.items()}


def test_untiled_forward_loses_exactly_the_tiling_points():
    res = CAT.run(WRONG["forward_untiled_full_matrix"][0])
    assert {k for k, r in res.items() if not r.passed} == {"test_forward_tiled", "test_forward_skips"}
    assert "Only the tiling points are lost" in res["test_forward_tiled"].error


def test_the_package_meets_the_graders():
    """llmcourse.flash, pasted as a learner who copied it would, with the contract's names."""
    src = Path(flash.__file__).read_text() + "\n\n" + code("""
        flash_attention_forward = flash_forward
        flash_attention_backward = flash_backward""")
    res = CAT.run({"merge": src, "forward": "", "backward": ""})
    assert all(r.passed for r in res.values()), {k: r.text for k, r in res.items() if not r.passed}


# ----------------------------------------------------------------------------- slow: one nbgrader batch


@pytest.fixture(scope="module")
def graded():
    """The solution, the release, one wrong entry per part, the call of F.sdpa and the noisy correct entry,
    graded by ONE nbgrader autograde run."""
    return CAT.grade()


@pytest.mark.slow
def test_nbgrader_grades_as_in_process(graded):
    CAT.assert_graded(graded)


@pytest.mark.slow
def test_untiled_forward_loses_only_the_tiling_points_in_nbgrader(graded):
    r = graded["wrong_forward_untiled_full_matrix"]
    assert set(r.lost()) == {"test_forward_tiled", "test_forward_skips"}, r.lost()
    assert "Only the tiling points are lost" in r.errors["test_forward_tiled"]


@pytest.mark.slow
def test_prints_and_warnings_cost_nothing(graded):
    r = graded["correct_noisy_prints_and_warns"]
    assert "called with" in r.text
    assert r.total == TOTAL


@pytest.mark.slow
def test_llmcourse_grade_gives_the_solution_full_marks(tmp_path):
    """The same notebook through the course's own grader (workers, sandbox, guard)."""
    from llmcourse.grading import batch, sandbox

    course_with_submission(tmp_path, ASSIGNMENT, SOL)
    limits = sandbox.Limits(cpu_seconds=300, address_space_mb=4096, file_size_mb=64, processes=96, wall_seconds=600)
    (result,) = batch.grade(tmp_path, ASSIGNMENT, workers=1, limits=limits, progress=False)
    assert result.status == "graded", result
    assert result.score == result.max_score == TOTAL, [(p.grade_id, p.score, p.message) for p in result.parts]
