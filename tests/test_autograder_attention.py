"""The `attention` assignment's autograder: its catalogue, proven in-process and by nbgrader.

The catalogue: the solution, the untouched release, wrong implementations (each must lose
the points of the named test cells, with a message naming the mistake, and nothing in the
parts it does not touch), several correct ones (full marks), parts that call the library
(no credit) and broken submissions. Every entry is proven in-process in the fast tier
(``test_catalogue_in_process``, see :class:`nbgrader_harness.Catalogue`); one real
``nbgrader autograde`` batch (slow) grades the solution, the release, one wrong entry per
part, one library call, the noisy correct entry and the broken submissions, and checks that
nbgrader's verdicts equal the in-process ones.
"""
from __future__ import annotations

import textwrap

import pytest

from nbgrader_harness import Catalogue, grade_id, hidden, solution_sources

ASSIGNMENT = "attention"
SOL = solution_sources(ASSIGNMENT)
SDPA_TESTS = ["test_sdpa_shapes", "test_sdpa_values", "test_sdpa_masks", "test_sdpa_weights_sum", "test_sdpa_grad"]
HEAD_TESTS = ["test_split_heads", "test_merge_heads", "test_split_merge_inverse"]
MHA_TESTS = ["test_mha_shapes", "test_mha_values", "test_mha_masks"]


def code(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


def sdpa(body: str) -> str:
    """A scaled_dot_product_attention whose body is ``body`` (4-space indented lines)."""
    return "def scaled_dot_product_attention(q, k, v, mask=None):\n" + textwrap.indent(code(body), "    ")


def mha_forward(*body: str, init: str | None = None) -> str:
    """A MultiHeadAttention whose forward is the pieces of ``body`` (and __init__ ``init``)."""
    init = init or """
        self.n_heads = n_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
    """
    return ("class MultiHeadAttention(nn.Module):\n"
            "    def __init__(self, d_model, n_heads):\n"
            "        super().__init__()\n" + textwrap.indent(code(init), "        ") + "\n\n"
            "    def forward(self, query, key, value, mask=None):\n"
            + textwrap.indent("\n".join(code(b) for b in body), "        "))


MHA_SPLIT = """
q = split_heads(self.w_q(query), self.n_heads)
k = split_heads(self.w_k(key), self.n_heads)
v = split_heads(self.w_v(value), self.n_heads)
"""

# name -> (cell sources replacing the solution's, test cells that must lose points, words the
# message of the first of them must contain, or None)
WRONG = {
    "no_scaling": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, -1)
        return w @ v, w""")}, ["test_sdpa_values", "test_sdpa_masks", "test_mha_values"], "did not scale"),
    "scale_by_dk": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1) / q.size(-1)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, -1)
        return w @ v, w""")}, ["test_sdpa_values", "test_sdpa_masks"], "by d_k instead of √d_k"),
    "sqrt_of_wrong_dim": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1) / math.sqrt(k.size(-2))
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, -1)
        return w @ v, w""")}, ["test_sdpa_values", "test_sdpa_masks"], "number of keys"),
    "softmax_over_queries": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, dim=-2)
        return w @ v, w""")}, ["test_sdpa_values", "test_sdpa_weights_sum", "test_mha_values"], "query axis"),
    "mask_inverted": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        w = torch.softmax(s, -1)
        return w @ v, w""")}, ["test_sdpa_masks", "test_mha_masks"], "mask is inverted"),
    "mask_filled_with_zero": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            s = s.masked_fill(~mask, 0.0)
        w = torch.softmax(s, -1)
        return w @ v, w""")}, ["test_sdpa_masks", "test_mha_masks"], "filled with 0"),
    "mask_ignored": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        w = torch.softmax(s, -1)
        return w @ v, w""")}, ["test_sdpa_masks", "test_mha_masks"], "mask is ignored"),
    "mask_after_softmax": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        w = torch.softmax(s, -1)
        if mask is not None:
            w = w * mask
        return w @ v, w""")}, ["test_sdpa_masks", "test_sdpa_weights_sum"], "after the softmax"),
    "weights_before_softmax": ({"sdpa": sdpa("""
        s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, -1) @ v, s""")}, ["test_sdpa_values", "test_sdpa_weights_sum"], "before the softmax"),
    "split_without_transpose": ({"heads": code("""
        def split_heads(x, n_heads):
            B, L, D = x.shape
            return x.reshape(B, n_heads, L, D // n_heads)

        def merge_heads(x):
            B, H, L, Dh = x.shape
            return x.transpose(1, 2).reshape(B, L, H * Dh)""")},
        ["test_split_heads", "test_split_merge_inverse", "test_mha_values"], "straight to"),
    "merge_without_transpose": ({"heads": code("""
        def split_heads(x, n_heads):
            B, L, D = x.shape
            return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)

        def merge_heads(x):
            B, H, L, Dh = x.shape
            return x.reshape(B, L, H * Dh)""")},
        ["test_merge_heads", "test_split_merge_inverse", "test_mha_values"], "straight to"),
    "interleaved_heads": ({"heads": code("""
        def split_heads(x, n_heads):
            B, L, D = x.shape
            return x.view(B, L, D // n_heads, n_heads).permute(0, 3, 1, 2)

        def merge_heads(x):
            B, H, L, Dh = x.shape
            return x.permute(0, 2, 3, 1).reshape(B, L, H * Dh)""")},
        ["test_split_heads", "test_merge_heads"], "interleaved"),
    "no_output_projection": ({"mha": mha_forward(MHA_SPLIT, """
        out, w = scaled_dot_product_attention(q, k, v, mask)
        return merge_heads(out), w""")}, ["test_mha_values", "test_mha_masks"], "no output projection"),
    "w_q_for_keys": ({"mha": mha_forward("""
        q = split_heads(self.w_q(query), self.n_heads)
        k = split_heads(self.w_q(key), self.n_heads)
        v = split_heads(self.w_v(value), self.n_heads)
        out, w = scaled_dot_product_attention(q, k, v, mask)
        return self.w_o(merge_heads(out)), w""")}, ["test_mha_values", "test_mha_masks"], "w_q is used for the keys"),
    "bias_free_linears": ({"mha": mha_forward(MHA_SPLIT, """
        out, w = scaled_dot_product_attention(q, k, v, mask)
        return self.w_o(merge_heads(out)), w""", init="""
        self.n_heads = n_heads
        self.w_q = nn.Linear(d_model, d_model, bias=False)
        self.w_k = nn.Linear(d_model, d_model, bias=False)
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.w_o = nn.Linear(d_model, d_model, bias=False)""")}, MHA_TESTS, "has no bias"),
    "per_head_sized_linears": ({"mha": mha_forward("""
        q = self.w_q(query).unsqueeze(1)
        k = self.w_k(key).unsqueeze(1)
        v = self.w_v(value).unsqueeze(1)
        out, w = scaled_dot_product_attention(q, k, v, mask)
        return self.w_o(out.squeeze(1)), w.expand(-1, self.n_heads, -1, -1)""", init="""
        self.n_heads = n_heads
        self.w_q = nn.Linear(d_model, d_model // n_heads)
        self.w_k = nn.Linear(d_model, d_model // n_heads)
        self.w_v = nn.Linear(d_model, d_model // n_heads)
        self.w_o = nn.Linear(d_model // n_heads, d_model)""")}, MHA_TESTS, "should be nn.Linear(d_model, d_model)"),
    "weights_averaged_over_heads": ({"mha": mha_forward(MHA_SPLIT, """
        out, w = scaled_dot_product_attention(q, k, v, mask)
        return self.w_o(merge_heads(out)), w.mean(1)""")}, MHA_TESTS, "averaged"),
    "mha_mask_ignored": ({"mha": mha_forward(MHA_SPLIT, """
        out, w = scaled_dot_product_attention(q, k, v)
        return self.w_o(merge_heads(out)), w""")}, ["test_mha_masks"], "mask is ignored"),
    "mha_scaled_by_d_model": ({"mha": mha_forward(MHA_SPLIT, """
        s = q @ k.transpose(-2, -1) / math.sqrt(query.size(-1))
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, -1)
        return self.w_o(merge_heads(w @ v)), w""")}, ["test_mha_values", "test_mha_masks"], "√d_model"),
}

NOISY = code('''
import warnings

def scaled_dot_product_attention(q, k, v, mask=None):
    print("debug: q has shape", q.shape)
    warnings.warn("this is a harmless learner warning")
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1)
    return w @ v, w
''')

CORRECT = {
    "einsum": {"sdpa": sdpa("""
        s = torch.einsum("...qd,...kd->...qk", q, k) / q.shape[-1] ** 0.5
        if mask is not None:
            s = torch.where(mask, s, torch.tensor(float("-inf")))
        w = s.softmax(dim=-1)
        return torch.einsum("...qk,...kd->...qd", w, v), w"""),
        "heads": code("""
        def split_heads(x, n_heads):
            B, L, D = x.shape
            return torch.stack(x.chunk(n_heads, dim=-1), dim=1)

        def merge_heads(x):
            return torch.cat(x.unbind(1), dim=-1)""")},
    "python_loops": {"sdpa": sdpa("""
        lead = q.shape[:-2]
        Lq, Lk = q.shape[-2], k.shape[-2]
        full = torch.broadcast_shapes(lead, k.shape[:-2], v.shape[:-2])
        m = None if mask is None else mask.expand(*full, Lq, Lk).reshape(-1, Lq, Lk)
        Q = q.expand(*full, *q.shape[-2:]).reshape(-1, Lq, q.shape[-1])
        K = k.expand(*full, *k.shape[-2:]).reshape(-1, Lk, k.shape[-1])
        V = v.expand(*full, *v.shape[-2:]).reshape(-1, Lk, v.shape[-1])
        outs, ws = [], []
        for b in range(Q.shape[0]):
            rows_o, rows_w = [], []
            for i in range(Lq):
                scores = []
                for j in range(Lk):
                    sc = (Q[b, i] * K[b, j]).sum() / math.sqrt(q.shape[-1])
                    if m is not None and not m[b, i, j]:
                        sc = sc - float("inf")
                    scores.append(sc)
                wi = torch.softmax(torch.stack(scores), 0)
                rows_w.append(wi)
                rows_o.append(sum(wi[j] * V[b, j] for j in range(Lk)))
            outs.append(torch.stack(rows_o))
            ws.append(torch.stack(rows_w))
        return (torch.stack(outs).reshape(*full, Lq, v.shape[-1]),
                torch.stack(ws).reshape(*full, Lq, Lk))""")},
    "float64_inside": {"sdpa": sdpa("""
        qd, kd, vd = q.double(), k.double(), v.double()
        s = qd @ kd.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            s = s.masked_fill(mask.logical_not(), float("-inf"))
        w = torch.softmax(s, -1)
        return (w @ vd).to(q.dtype), w.to(q.dtype)"""),
        "mha": mha_forward("""
        B, Lq, D = query.shape
        H = self.n_heads
        q = self.w_q(query).view(B, Lq, H, D // H).permute(0, 2, 1, 3)
        k = self.w_k(key).view(B, key.size(1), H, D // H).permute(0, 2, 1, 3)
        v = self.w_v(value).view(B, value.size(1), H, D // H).permute(0, 2, 1, 3)
        out, w = scaled_dot_product_attention(q, k, v, mask)
        return self.w_o(out.permute(0, 2, 1, 3).reshape(B, Lq, D)), w""")},
    "prescaled_queries": {"sdpa": sdpa("""
        q = q * q.size(-1) ** -0.5
        s = q @ k.mT
        if mask is not None:
            s = s + torch.zeros_like(s).masked_fill(~mask, float("-inf"))
        s = s - s.amax(-1, keepdim=True)
        e = s.exp()
        w = e / e.sum(-1, keepdim=True)
        return w @ v, w""")},
    "prints_and_warns": {"sdpa": NOISY, "heads": code('''
        import warnings

        def split_heads(x, n_heads):
            print("splitting", tuple(x.shape))
            warnings.warn("split_heads: harmless warning", RuntimeWarning)
            B, L, D = x.shape
            return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)

        def merge_heads(x):
            import sys
            print("merging", file=sys.stderr)
            B, H, L, Dh = x.shape
            return x.transpose(1, 2).reshape(B, L, H * Dh)''')},
}

FORBIDDEN = {
    # aliased at import time: the profiler sees the builtin, not the name
    "calls_torch_sdpa": ({"sdpa": code("""
        from torch.nn.functional import scaled_dot_product_attention as fast_attention

        def scaled_dot_product_attention(q, k, v, mask=None):
            s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            return fast_attention(q, k, v, attn_mask=mask), torch.softmax(s, -1)""")},
        SDPA_TESTS + MHA_TESTS, "torch.nn.functional.scaled_dot_product_attention"),
    "calls_llmcourse": ({"sdpa": "from llmcourse.attention import scaled_dot_product_attention",
                         "heads": "from llmcourse import attention as A\nsplit_heads = A.split_heads\n"
                                  "merge_heads = A.merge_heads"},
                        SDPA_TESTS + HEAD_TESTS + MHA_TESTS, "llmcourse.attention"),
    "wraps_nn_multiheadattention": ({"mha": code("""
        class MultiHeadAttention(nn.Module):
            def __init__(self, d_model, n_heads):
                super().__init__()
                self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d_model, d_model) for _ in range(4))
                self.inner = nn.MultiheadAttention(d_model, n_heads, batch_first=True)

            def forward(self, query, key, value, mask=None):
                with torch.no_grad():
                    self.inner.in_proj_weight.copy_(torch.cat([self.w_q.weight, self.w_k.weight, self.w_v.weight]))
                    self.inner.in_proj_bias.copy_(torch.cat([self.w_q.bias, self.w_k.bias, self.w_v.bias]))
                    self.inner.out_proj.weight.copy_(self.w_o.weight)
                    self.inner.out_proj.bias.copy_(self.w_o.bias)
                B, Lq, Lk, H = query.size(0), query.size(1), key.size(1), self.inner.num_heads
                m = None if mask is None else (~mask).expand(B, H, Lq, Lk).reshape(B * H, Lq, Lk)
                return self.inner(query, key, value, attn_mask=m, average_attn_weights=False)""")},
        MHA_TESTS, "torch.nn.MultiheadAttention"),
}

BROKEN_SDPA = code("""
def scaled_dot_product_attention(q, k, v, mask=None)
    return q @ k.transpose(-2, -1) @ v
""")
EDITED_TEST = "# I edited this test\nprint('all tests passed')"

# name -> (cell sources, cells to delete); graded by nbgrader only (the infinite loop is proven once, in ppo)
BAD = {
    "syntax_error": ({**SOL, "sdpa": BROKEN_SDPA}, ()),
    "top_level_exception": ({**SOL, "heads": "raise RuntimeError('oops at top level')\n\n" + SOL["heads"]}, ()),
    "edited_test_cells": ({**SOL, **WRONG["no_scaling"][0], "test_sdpa_values": EDITED_TEST,
                           "test_sdpa_masks": EDITED_TEST, "test_split_heads": "pass"}, ()),
    "deleted_test_cells": ({**SOL, **WRONG["no_scaling"][0]}, ("test_sdpa_values", "test_split_heads")),
}
TIMEOUT = 30        # seconds per cell: the slowest honest cell takes about 2 s on an idle machine

CAT = Catalogue(ASSIGNMENT, {"sdpa": SDPA_TESTS, "heads": HEAD_TESTS, "mha": MHA_TESTS},
                wrong=WRONG, correct=CORRECT, forbidden=FORBIDDEN, bad=BAD,
                uses={"sdpa": ["mha"], "heads": ["mha"]}, timeout=TIMEOUT, total=27,
                nbgrader_wrong=["no_scaling", "split_without_transpose", "no_output_projection"],
                nbgrader_correct=["prints_and_warns"])


# ----------------------------------------------------------------------------- fast: the catalogue in-process


@pytest.mark.parametrize("kind,name", CAT.entries())
def test_catalogue_in_process(kind, name):
    CAT.prove(kind, name)


# ----------------------------------------------------------------------------- slow: one nbgrader batch


@pytest.fixture(scope="module")
def graded():
    """The solution, the release, one wrong entry per part, a library call, the noisy correct entry and the
    broken submissions, graded by ONE nbgrader autograde run."""
    return CAT.grade()


@pytest.mark.slow
def test_nbgrader_grades_as_in_process(graded):
    CAT.assert_graded(graded)
    assert "NotImplementedError" in graded["release"].errors["test_sdpa_values"]


@pytest.mark.slow
def test_learner_prints_and_warnings_cost_nothing(graded):
    r = graded["correct_prints_and_warns"]
    # the ungraded visible cells show the learner's own output, the hidden ones stay clean
    assert "harmless" in r.text or "debug" in r.text
    assert not any(r.errors[k] for k in hidden(r))


@pytest.mark.slow
def test_bad_submissions_are_graded_without_extra_credit(graded):
    pts = {k: m for k, (_, m) in graded["solution"].scores.items()}
    sdpa_pts, head_pts = (sum(pts[k] for k in ks) for ks in (SDPA_TESTS, HEAD_TESTS))
    no_scaling = graded["wrong_no_scaling"].total                # what the wrong sdpa earns alone

    r = graded["bad_syntax_error"]                    # sdpa undefined: sdpa and MHA parts lost
    assert r.total == head_pts, r.scores
    assert "NameError" in r.errors["test_sdpa_values"]
    assert "SyntaxError" in r.text

    r = graded["bad_top_level_exception"]             # heads undefined: heads and MHA lost
    assert r.total == sdpa_pts, r.scores
    assert "NameError" in r.errors["test_split_heads"]

    r = graded["bad_edited_test_cells"]               # nbgrader restores the locked test cells
    assert r.scores["test_sdpa_values"][0] == 0 and r.scores["test_sdpa_masks"][0] == 0
    assert "did not scale" in r.errors["test_sdpa_values"]
    assert r.scores["test_split_heads"] == (pts["test_split_heads"],) * 2
    assert r.total == no_scaling
    src = {grade_id(c): c.source for c in r.notebook.cells}
    assert "G.check_sdpa_values" in src["test_sdpa_values"] and "all tests passed" not in src["test_sdpa_values"]

    r = graded["bad_deleted_test_cells"]              # add_missing_cells: re-added and graded
    assert r.scores["test_sdpa_values"][0] == 0 and "did not scale" in r.errors["test_sdpa_values"]
    assert r.scores["test_split_heads"] == (pts["test_split_heads"],) * 2
    assert r.total == no_scaling
    src = {grade_id(c): c.source for c in r.notebook.cells}
    assert "added back by nbgrader" in src["test_sdpa_values"] and "G.check_sdpa_values" in src["test_sdpa_values"]
