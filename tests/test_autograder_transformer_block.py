"""The `transformer_block` assignment's autograder: its catalogue, proven in-process and by nbgrader.

The catalogue: the solution, the untouched release, wrong implementations (each must lose
the points of the named test cells, with a message naming the mistake, and nothing in the
parts it does not touch), several correct ones written from the contract alone (full marks,
one of them printing and warning), parts that call the library routine they ask for or wrap
``nn.TransformerEncoderLayer`` (no credit) and broken submissions. Every entry is proven
in-process in the fast tier (:class:`nbgrader_harness.Catalogue`); one real ``nbgrader
autograde`` batch (slow) grades the solution, the release, one wrong entry per part, the
library calls, the noisy correct entry and a broken submission, and checks that nbgrader's
verdicts equal the in-process ones; ``llmcourse grade`` grades the solution once.
"""
from __future__ import annotations

import textwrap

import pytest

from nbgrader_harness import REPO, Catalogue, solution_sources

ASSIGNMENT = "transformer_block"
SOL = solution_sources(ASSIGNMENT)
LN_TESTS = ["test_layernorm_parameters", "test_layernorm_values", "test_layernorm_eps", "test_layernorm_grad"]
POS_TESTS = ["test_positions_shape", "test_positions_values"]
FFN_TESTS = ["test_ffn_structure", "test_ffn_values"]
BLOCK_TESTS = ["test_block_structure", "test_block_post", "test_block_pre", "test_block_mask",
               "test_block_norm_position"]


def code(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


def layernorm(forward: str, init: str | None = None) -> str:
    """A LayerNorm whose forward body is ``forward`` (and __init__ body ``init``)."""
    init = init or """
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
    """
    return ("class LayerNorm(nn.Module):\n"
            "    def __init__(self, d_model, eps=1e-5):\n"
            "        super().__init__()\n" + textwrap.indent(code(init), "        ") + "\n\n"
            "    def forward(self, x):\n" + textwrap.indent(code(forward), "        "))


def positions(body: str) -> str:
    return "def sinusoidal_positions(n_positions, d_model):\n" + textwrap.indent(code(body), "    ")


def ffn(forward: str) -> str:
    return ("class FeedForward(nn.Module):\n"
            "    def __init__(self, d_model, d_ff):\n"
            "        super().__init__()\n"
            "        self.linear1 = nn.Linear(d_model, d_ff)\n"
            "        self.linear2 = nn.Linear(d_ff, d_model)\n\n"
            "    def forward(self, x):\n" + textwrap.indent(code(forward), "        "))


BLOCK_INIT = """
if norm_position not in ("pre", "post"):
    raise ValueError(norm_position)
self.norm_position = norm_position
self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
self.linear1 = nn.Linear(d_model, d_ff)
self.linear2 = nn.Linear(d_ff, d_model)
self.norm1 = LayerNorm(d_model)
self.norm2 = LayerNorm(d_model)
"""
HELPERS = """
am = None if mask is None else ~mask
attn = lambda h: self.self_attn(h, h, h, attn_mask=am, need_weights=False)[0]
ffn = lambda h: self.linear2(torch.relu(self.linear1(h)))
"""
POST = """
x = self.norm1(x + attn(x))
return self.norm2(x + ffn(x))
"""


def block(forward: str, init: str = BLOCK_INIT, default: str = '"pre"') -> str:
    return ("class TransformerBlock(nn.Module):\n"
            f"    def __init__(self, d_model, n_heads, d_ff, norm_position={default}):\n"
            "        super().__init__()\n" + textwrap.indent(code(init), "        ") + "\n\n"
            "    def forward(self, x, mask=None):\n" + textwrap.indent(code(forward), "        "))


def pre_post(pre: str, post: str = POST, helpers: str = HELPERS) -> str:
    """A block forward: the helpers, then ``pre`` under norm_position == 'pre', else ``post``."""
    return (code(helpers) + '\nif self.norm_position == "pre":\n' + textwrap.indent(code(pre), "    ")
            + "\n" + code(post))


PRE = """
x = x + attn(self.norm1(x))
return x + ffn(self.norm2(x))
"""

# name -> (cell sources replacing the solution's, test cells that must lose points, words the
# message of the first of them must contain)
WRONG = {
    # --- LayerNorm
    "ln_unbiased_variance": ({"layernorm": layernorm("""
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias""")},
        ["test_layernorm_values", "test_layernorm_eps"], "unbiased"),
    "ln_std_unbiased": ({"layernorm": layernorm("""
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + self.eps) * self.weight + self.bias""")},
        ["test_layernorm_values", "test_layernorm_eps"], "unbiased"),
    "ln_eps_outside_sqrt": ({"layernorm": layernorm("""
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / (torch.sqrt(var) + self.eps) * self.weight + self.bias""")},
        ["test_layernorm_eps"], "outside the square root"),
    "ln_eps_argument_ignored": ({"layernorm": layernorm("""
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias""")},
        ["test_layernorm_eps"], "eps given to __init__ is not used"),
    "ln_wrong_axis": ({"layernorm": layernorm("""
        mean = x.mean(0, keepdim=True)
        var = ((x - mean) ** 2).mean(0, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias""")},
        ["test_layernorm_values"], "first dimension"),
    "ln_whole_tensor": ({"layernorm": layernorm("""
        mean = x.mean()
        var = ((x - mean) ** 2).mean()
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias""")},
        ["test_layernorm_values"], "whole tensor"),
    "ln_rmsnorm": ({"layernorm": layernorm("""
        rms = torch.sqrt((x ** 2).mean(-1, keepdim=True) + self.eps)
        return x / rms * self.weight + self.bias""")},
        ["test_layernorm_values"], "RMSNorm"),
    "ln_not_parameters": ({"layernorm": layernorm("""
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias""", init="""
        self.eps = eps
        self.weight = torch.ones(d_model)
        self.bias = torch.zeros(d_model)""")},
        ["test_layernorm_parameters", "test_layernorm_grad", "test_block_structure"], "not a parameter"),
    "ln_no_affine": ({"layernorm": layernorm("""
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)""")},
        ["test_layernorm_values", "test_layernorm_eps", "test_layernorm_grad"], "not applied"),
    # --- sinusoidal positions
    "pos_sin_cos_swapped": ({"positions": positions("""
        pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
        angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)
        pe = torch.zeros(n_positions, d_model)
        pe[:, 0::2] = torch.cos(angle)
        pe[:, 1::2] = torch.sin(angle)
        return pe""")}, ["test_positions_values"], "swapped"),
    "pos_halves_concatenated": ({"positions": positions("""
        pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
        angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)""")}, ["test_positions_values"], "interleave"),
    "pos_exponent_i_over_d": ({"positions": positions("""
        pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
        angle = pos / 10000 ** (torch.arange(d_model // 2) / d_model)
        pe = torch.zeros(n_positions, d_model)
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle)
        return pe""")}, ["test_positions_values"], "10000^(i/d_model)"),
    "pos_exponent_per_column": ({"positions": positions("""
        pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
        angle = pos / 10000 ** (torch.arange(d_model) / d_model)
        pe = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle[:, 1::2])
        return pe""")}, ["test_positions_values"], "exponent j/d_model"),
    "pos_from_one": ({"positions": positions("""
        pos = torch.arange(1, n_positions + 1, dtype=torch.float32)[:, None]
        angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)
        pe = torch.zeros(n_positions, d_model)
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle)
        return pe""")}, ["test_positions_values"], "count from 1"),
    "pos_float64": ({"positions": positions("""
        import numpy as np
        pos = np.arange(n_positions)[:, None]
        angle = pos / 10000 ** (np.arange(0, d_model, 2) / d_model)
        pe = np.zeros((n_positions, d_model))
        pe[:, 0::2] = np.sin(angle)
        pe[:, 1::2] = np.cos(angle)
        return torch.from_numpy(pe)""")}, ["test_positions_shape"], "float32"),
    # --- feed-forward
    "ffn_gelu": ({"ffn": ffn("return self.linear2(torch.nn.functional.gelu(self.linear1(x)))")},
                 ["test_ffn_values"], "GELU"),
    "ffn_no_activation": ({"ffn": ffn("return self.linear2(self.linear1(x))")},
                          ["test_ffn_values"], "no activation"),
    "ffn_relu_after_output": ({"ffn": ffn("return torch.relu(self.linear2(torch.relu(self.linear1(x))))")},
                              ["test_ffn_values"], "after linear2"),
    # --- the block
    "block_mask_not_inverted": ({"block": block(pre_post(PRE, helpers=HELPERS.replace("~mask", "mask")))},
                                ["test_block_mask"], "mask is not inverted"),
    "block_mask_ignored": ({"block": block(pre_post(PRE, helpers=HELPERS.replace("~mask", "None")))},
                           ["test_block_mask"], "mask is ignored"),
    "block_placement_ignored": ({"block": block(code(HELPERS) + "\n" + code(POST))},
                                ["test_block_pre", "test_block_mask"], "placement is ignored"),
    "block_default_post": ({"block": block(pre_post(PRE), default='"post"')},
                           ["test_block_pre"], "placement is ignored"),
    "block_residual_normalised": ({"block": block(pre_post("""
        h = self.norm1(x)
        x = h + attn(h)
        h = self.norm2(x)
        return h + ffn(h)"""))}, ["test_block_pre", "test_block_mask"], "residual stream is normalised"),
    "block_ffn_residual_missing": ({"block": block(pre_post("""
        x = x + attn(self.norm1(x))
        return ffn(self.norm2(x))""", post="""
        x = self.norm1(x + attn(x))
        return self.norm2(ffn(x))"""))}, ["test_block_post", "test_block_pre", "test_block_mask"],
        "residual around the feed-forward is missing"),
    "block_attention_residual_missing": ({"block": block(pre_post("""
        x = attn(self.norm1(x))
        return x + ffn(self.norm2(x))"""))}, ["test_block_pre", "test_block_mask"],
        "residual around the attention is missing"),
    "block_gelu": ({"block": block(pre_post(PRE, helpers=HELPERS.replace("torch.relu", "torch.nn.functional.gelu")))},
                   ["test_block_post", "test_block_pre", "test_block_mask"], "GELU"),
    "block_final_norm": ({"block": block(pre_post("""
        x = x + attn(self.norm1(x))
        x = x + ffn(self.norm2(x))
        return self.norm2(x)"""))}, ["test_block_pre", "test_block_mask"], "LayerNorm after the block"),
    "block_norms_swapped": ({"block": block(pre_post("""
        x = x + attn(self.norm2(x))
        return x + ffn(self.norm1(x))""", post="""
        x = self.norm2(x + attn(x))
        return self.norm1(x + ffn(x))"""))}, ["test_block_post", "test_block_pre", "test_block_mask"], "swapped"),
    "block_no_value_error": ({"block": block(pre_post(PRE), init=BLOCK_INIT.replace(
        'if norm_position not in ("pre", "post"):\n    raise ValueError(norm_position)\n', ""))},
        ["test_block_norm_position"], "raised nothing"),
    "block_feed_forward_submodule": ({"block": block(code(HELPERS).replace(
        "self.linear2(torch.relu(self.linear1(h)))", "self.ff(h)") + "\n" + code(POST), init="""
        self.norm_position = norm_position
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.ff = FeedForward(d_model, d_ff)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)""")},
        ["test_block_structure", "test_block_post", "test_block_pre", "test_block_mask"], "linear1"),
    "block_returns_attention_tuple": ({"block": block("""
        am = None if mask is None else ~mask
        ffn = lambda h: self.linear2(torch.relu(self.linear1(h)))
        if self.norm_position == "pre":
            h = self.norm1(x)
            x = x + self.self_attn(h, h, h, attn_mask=am)[0]
            return x + ffn(self.norm2(x)), None
        x = self.norm1(x + self.self_attn(x, x, x, attn_mask=am)[0])
        return self.norm2(x + ffn(x)), None""")},
        ["test_block_structure", "test_block_post", "test_block_pre", "test_block_mask"], "return the tensor"),
    "block_dropout": ({"block": block(pre_post(PRE, helpers=HELPERS.replace(
        "torch.relu(self.linear1(h))", "torch.nn.functional.dropout(torch.relu(self.linear1(h)), 0.1)")))},
        ["test_block_post", "test_block_pre", "test_block_mask"], "dropout"),
}

NOISY = {
    "layernorm": layernorm("""
        import warnings
        print("debug: normalising", tuple(x.shape))
        warnings.warn("a harmless learner warning")
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias"""),
    "block": block(code(HELPERS) + '\nprint("block input", x.shape)\nimport sys\n'
                   'print("to stderr", file=sys.stderr)\nif self.norm_position == "pre":\n'
                   + textwrap.indent(code(PRE), "    ") + "\n" + code(POST)),
}

# Written from the contract alone, each differently from the solution.
CORRECT = {
    "var_rsqrt_and_loops": {
        "layernorm": layernorm("""
            var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
            return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias""", init="""
            self.weight = nn.Parameter(torch.ones(d_model))
            self.bias = nn.Parameter(torch.zeros(d_model))
            self.register_buffer("eps_buffer", torch.tensor(eps))
            self.eps = eps"""),
        "positions": positions("""
            pe = torch.empty(n_positions, d_model)
            for p in range(n_positions):
                for i in range(0, d_model, 2):
                    pe[p, i] = math.sin(p / 10000 ** (i / d_model))
                    pe[p, i + 1] = math.cos(p / 10000 ** (i / d_model))
            return pe"""),
        "ffn": ffn("return self.linear2(self.linear1(x).clamp(min=0))"),
        "block": block("""
            h = x if self.norm_position == "post" else self.norm1(x)
            a = self.self_attn(h, h, h, attn_mask=None if mask is None else mask.logical_not())[0]
            x = self.norm1(x + a) if self.norm_position == "post" else x + a
            h = x if self.norm_position == "post" else self.norm2(x)
            f = self.linear2(torch.nn.functional.relu(self.linear1(h)))
            return self.norm2(x + f) if self.norm_position == "post" else x + f""", init="""
            assert_ok = {"pre": True, "post": False}
            if norm_position not in assert_ok:
                raise ValueError("norm_position must be 'pre' or 'post'")
            self.norm_position = norm_position
            self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
            self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
            self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)"""),
    },
    "float64_exp_log_and_float_mask": {
        "layernorm": layernorm("""
            xd = x.double()
            c = xd - xd.mean(dim=-1, keepdim=True)
            y = c / (c.pow(2).sum(-1, keepdim=True) / x.shape[-1] + self.eps).sqrt()
            return (y * self.weight.double() + self.bias.double()).to(x.dtype)"""),
        "positions": positions("""
            pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
            inv = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
            ang = pos * inv
            return torch.stack([ang.sin(), ang.cos()], dim=-1).reshape(n_positions, d_model).float()"""),
        "ffn": ffn("return torch.nn.functional.linear(torch.maximum(self.linear1(x), torch.zeros(())), "
                   "self.linear2.weight, self.linear2.bias)"),
        "block": block("""
            add = None
            if mask is not None:
                add = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))   # float mask: added to the scores
            def attn(h):
                out, _ = self.self_attn(h, h, h, attn_mask=add)
                return out
            def sub_ffn(h):
                return self.linear2(torch.relu(self.linear1(h)))
            if self.norm_position == "post":
                x = self.norm1(x + attn(x))
                x = self.norm2(x + sub_ffn(x))
                return x
            y = x + attn(self.norm1(x))
            return y + sub_ffn(self.norm2(y))"""),
    },
    "einsum_and_modules": {
        "layernorm": layernorm("""
            d = x.shape[-1]
            mean = torch.einsum("...d->...", x)[..., None] / d
            c = x - mean
            var = torch.einsum("...d,...d->...", c, c)[..., None] / d
            return torch.addcmul(self.bias, c / torch.sqrt(var + self.eps), self.weight)""", init="""
            self.eps = eps
            self.weight = nn.Parameter(torch.empty(d_model).fill_(1.0))
            self.bias = nn.Parameter(torch.empty(d_model).zero_())"""),
        "positions": positions("""
            half = torch.outer(torch.arange(n_positions).float(),
                               1.0 / torch.pow(10000.0, torch.arange(0, d_model, 2).float() / d_model))
            out = torch.zeros(n_positions, d_model, dtype=torch.float32)
            out[:, ::2], out[:, 1::2] = half.sin(), half.cos()
            return out"""),
        "ffn": code("""
            class FeedForward(nn.Module):
                def __init__(self, d_model, d_ff):
                    super().__init__()
                    self.linear1 = nn.Linear(d_model, d_ff)
                    self.act = nn.ReLU()
                    self.linear2 = nn.Linear(d_ff, d_model)

                def forward(self, x):
                    return self.linear2(self.act(self.linear1(x)))"""),
        "block": block("""
            if mask is not None:
                mask = ~mask.bool()
            if self.pre:
                h = self.norm1(x)
                x = x + self.self_attn(h, h, h, attn_mask=mask, need_weights=False)[0]
                return x + self.linear2(self.relu(self.linear1(self.norm2(x))))
            x = self.norm1(x + self.self_attn(x, x, x, attn_mask=mask, need_weights=False)[0])
            return self.norm2(x + self.linear2(self.relu(self.linear1(x))))""", init="""
            if norm_position == "pre":
                self.pre = True
            elif norm_position == "post":
                self.pre = False
            else:
                raise ValueError(f"unknown norm_position {norm_position!r}")
            self.self_attn = nn.MultiheadAttention(embed_dim=d_model, num_heads=n_heads, batch_first=True)
            self.linear1 = nn.Linear(d_model, d_ff)
            self.relu = nn.ReLU()
            self.linear2 = nn.Linear(d_ff, d_model)
            self.norm1 = LayerNorm(d_model)
            self.norm2 = LayerNorm(d_model)"""),
    },
    "value_error_in_forward_and_in_place": {
        "block": block("""
            if self.norm_position not in ("pre", "post"):
                raise ValueError(f"norm_position must be 'pre' or 'post', not {self.norm_position!r}")
            m = None if mask is None else ~mask
            if self.norm_position == "pre":
                n = self.norm1(x)
                x += self.self_attn(n, n, n, attn_mask=m)[0]            # in place, on the caller's tensor
                n = self.norm2(x)
                return x + self.linear2(torch.relu(self.linear1(n)))
            x = self.norm1(x + self.self_attn(x, x, x, attn_mask=m)[0])
            return self.norm2(x + self.linear2(torch.relu(self.linear1(x))))""", init="""
            self.norm_position = norm_position
            self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
            self.linear1 = nn.Linear(d_model, d_ff)
            self.linear2 = nn.Linear(d_ff, d_model)
            self.norm1 = LayerNorm(d_model)
            self.norm2 = LayerNorm(d_model)"""),
    },
    "prints_and_warns": NOISY,
}

FORBIDDEN = {
    "layernorm_by_F_layer_norm": ({"layernorm": layernorm("""
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)""")},
        LN_TESTS[1:], "torch.nn.functional.layer_norm"),
    "layernorm_by_nn_LayerNorm": ({"layernorm": code("""
        class LayerNorm(nn.Module):
            def __init__(self, d_model, eps=1e-5):
                super().__init__()
                self.inner = nn.LayerNorm(d_model, eps=eps)
                self.weight, self.bias = self.inner.weight, self.inner.bias

            def forward(self, x):
                return self.inner(x)""")}, LN_TESTS[1:], "torch.nn.LayerNorm"),
    "block_wraps_encoder_layer": ({"block": block("return self.inner(x, src_mask=None if mask is None else ~mask)",
                                                  init="""
        if norm_position not in ("pre", "post"):
            raise ValueError(norm_position)
        self.inner = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True,
                                                norm_first=norm_position == "pre")
        self.self_attn, self.linear1, self.linear2 = self.inner.self_attn, self.inner.linear1, self.inner.linear2
        self.norm1, self.norm2 = self.inner.norm1, self.inner.norm2""")},
        BLOCK_TESTS, "nn.TransformerEncoderLayer"),
    "positions_from_llmcourse": ({"positions": positions("""
        from llmcourse.transformer import sinusoidal_encoding
        return sinusoidal_encoding(n_positions, d_model)""")}, POS_TESTS, "llmcourse.transformer"),
}

BAD = {
    "syntax_error": ({**SOL, "block": "class TransformerBlock(nn.Module):\n    def __init__(self, d_model, n_heads, d_ff"},
                     []),
}

CAT = Catalogue(ASSIGNMENT, {"layernorm": LN_TESTS, "positions": POS_TESTS, "ffn": FFN_TESTS, "block": BLOCK_TESTS},
                wrong=WRONG, correct=CORRECT, forbidden=FORBIDDEN, bad=BAD,
                uses={"layernorm": ["block"], "ffn": ["block"]}, timeout=60, total=24,
                nbgrader_forbidden=["layernorm_by_nn_LayerNorm", "block_wraps_encoder_layer"],
                nbgrader_correct=["prints_and_warns"])


def test_catalogue_sizes():
    assert len(WRONG) >= 15 and len(CORRECT) >= 4
    assert set(SOL) == {"layernorm", "positions", "ffn", "block"}


@pytest.mark.parametrize("kind,name", CAT.entries())
def test_catalogue_in_process(kind, name):
    CAT.prove(kind, name)


# ----------------------------------------------------------------------------- slow: one nbgrader batch


@pytest.fixture(scope="module")
def graded():
    return CAT.grade()


@pytest.mark.slow
def test_nbgrader_grades_as_in_process(graded):
    CAT.assert_graded(graded)


@pytest.mark.slow
def test_learner_prints_and_warnings_cost_nothing(graded):
    r = graded["correct_prints_and_warns"]
    assert r.total == r.max_total, r.lost()
    assert "debug: normalising" in r.text and "to stderr" in r.text


@pytest.mark.slow
def test_syntax_error_is_graded_without_credit_for_the_block(graded):
    r = graded["bad_syntax_error"]
    assert set(r.lost()) == set(BLOCK_TESTS), r.lost()
    assert r.total == r.max_total - sum(r.scores[k][1] for k in BLOCK_TESTS)


@pytest.mark.slow
def test_llmcourse_grade_gives_the_solution_full_marks(tmp_path):
    """The solution, graded once by ``llmcourse grade`` (nbgrader's own Autograde in a boxed worker)."""
    from llmcourse.grading import batch
    from nbgrader_harness import Course

    course = Course.create(ASSIGNMENT, timeout=60, root=tmp_path)
    course.submit({"alice": course.submission(SOL)})
    results = {r.student: r for r in batch.grade(course.root, ASSIGNMENT, workers=1, progress=False)}
    assert results["alice"].status == "graded", results["alice"]
    assert results["alice"].score == results["alice"].max_score == 24, results["alice"]
