"""Fast tests of llmcourse.grading.common, without nbgrader: what every check relies on.

The catalogues of the assignments are proven in-process in their
``tests/test_autograder_<assignment>.py`` (:class:`nbgrader_harness.Catalogue`).
"""
from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.grading import common
from llmcourse.grading.common import LLMCOURSE, TORCH_MHA, TORCH_SDPA, call_learner, seeded

# ----------------------------------------------------------------------------- common


def test_call_learner_swallows_prints_and_warnings(capsys):
    def noisy(x):
        print("hello")
        print("oops", file=sys.stderr)
        warnings.warn("careful")
        return x + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # a leaked warning would raise here
        assert call_learner(noisy, 1) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_call_learner_reraises_as_assertion_and_restores_profiler():
    def boom():
        raise ValueError("bad shape")

    def stub():
        raise NotImplementedError()

    sentinel = sys.getprofile()
    with pytest.raises(AssertionError, match=r"your function raised ValueError: bad shape"):
        call_learner(boom)
    with pytest.raises(AssertionError, match="replace it with your code"):
        call_learner(stub, what="split_heads")
    assert sys.getprofile() is sentinel

    def interrupted():
        raise KeyboardInterrupt                                  # what nbgrader's per-cell timeout does
    with pytest.raises(AssertionError, match="interrupted.*infinite loop"):
        call_learner(interrupted)
    assert sys.getprofile() is sentinel


def test_forbidden_calls_are_seen_through_aliases():
    from torch.nn.functional import scaled_dot_product_attention as fast
    from llmcourse.attention import split_heads as theirs
    q = torch.randn(1, 2, 4)
    with pytest.raises(AssertionError, match="scaled_dot_product_attention.*no credit"):
        call_learner(lambda: fast(q, q, q), forbid=TORCH_SDPA)
    with pytest.raises(AssertionError, match="llmcourse.attention"):
        call_learner(lambda: theirs(torch.randn(1, 2, 4), 2), forbid=LLMCOURSE)
    with pytest.raises(AssertionError, match="fused attention"):
        call_learner(lambda: torch._scaled_dot_product_attention_math(q, q, q), forbid=TORCH_SDPA)
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    with pytest.raises(AssertionError, match="MultiheadAttention"):
        call_learner(lambda: mha(q, q, q), forbid=TORCH_MHA)
    with pytest.raises(AssertionError, match="multi_head_attention_forward|MultiheadAttention"):
        call_learner(lambda: F.multi_head_attention_forward(
            q.transpose(0, 1), q.transpose(0, 1), q.transpose(0, 1), 4, 2, mha.in_proj_weight, mha.in_proj_bias,
            None, None, False, 0.0, mha.out_proj.weight, mha.out_proj.bias), forbid=TORCH_MHA)
    # ordinary tensor operations and calls outside the watched block are fine
    everything = TORCH_SDPA | TORCH_MHA | LLMCOURSE
    assert call_learner(lambda: torch.softmax(q @ q.transpose(-2, -1), -1).sum(), forbid=everything) > 0
    fast(q, q, q)


def test_seeded_is_deterministic_and_restores_the_global_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7) as g:
        a = torch.randn(4, generator=g)
        inside = torch.rand(1)
    with seeded(7) as g:
        assert torch.equal(a, torch.randn(4, generator=g)) and torch.equal(inside, torch.rand(1))
    assert torch.equal(torch.rand(3), expected_next)


def test_diagnose_names_the_matching_variant():
    x = torch.randn(3)
    assert common.diagnose(x * 2, {"doubled": lambda: x * 2, "tripled": lambda: x * 3}, "?") == "doubled"
    assert common.diagnose(x * 5, {"doubled": lambda: x * 2, "broken": lambda: 1 / 0}, "?") == "?"
