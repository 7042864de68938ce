"""Fast, in-process proof of the `flash_attention` autograder, and tests of its recorder.

Every entry of the catalogue in ``tests/test_autograder_flash_attention.py`` runs here without
nbgrader: the notebook's cells with the entry's sources, then the hidden test cells, in one
namespace (as a kernel would). Wrong entries lose their named tests with a message naming the
mistake and nothing outside the parts they touch; correct ones get every point; library
calls, whole-row softmaxes and autograd get no credit for their part. The package's own
``llmcourse.flash``, pasted in place of the learner's cells, passes the hidden tests too.
The recorder's measures (largest tensor created, matrix-multiply work, whole-row reductions)
are checked against operations of known size.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import test_autograder_flash_attention as T
from llmcourse import flash
from llmcourse.grading.checks import flash_attention as G


def test_catalogue_is_large_enough_and_consistent():
    assert sum(T.POINTS.values()) == T.TOTAL and set(T.POINTS) == set(T.HIDDEN)
    assert len(T.WRONG) >= 15 and len(T.CORRECT) >= 4
    for name, (src, must_fail, words) in {**T.WRONG, **T.FORBIDDEN}.items():
        assert set(src) <= set(T.SOL) and set(must_fail) <= set(T.HIDDEN) and words, name
    parts = {p for src, _, _ in T.WRONG.values() for p in src}
    assert parts == set(T.PART_TESTS)                               # every part has wrong entries


def test_solution_full_marks():
    res = T.run({})
    assert all(r.passed for r in res.values()), {k: r.text for k, r in res.items() if not r.passed}
    assert all(r.stdout.startswith("ok: ") for r in res.values()), {k: r.stdout for k, r in res.items()}


def test_release_gets_nothing():
    res = T.run(T.release_sources())
    assert not any(r.passed for r in res.values()), [k for k, r in res.items() if r.passed]
    assert all("replace it with your code" in r.error for r in res.values()), res


@pytest.mark.parametrize("name", list(T.WRONG))
def test_wrong_loses_its_points_with_its_words(name):
    src, must_fail, words = T.WRONG[name]
    res = T.run(src, tests=must_fail)          # the other tests of the part: by nbgrader, one entry per part
    lost = {k for k, r in res.items() if not r.passed}
    assert set(must_fail) <= lost, (must_fail, {k: res[k].text[:300] for k in res})
    first = res[must_fail[0]].error
    assert first.startswith("AssertionError") and words in first, first


@pytest.mark.parametrize("name", list(T.CORRECT))
def test_correct_gets_full_marks(name):
    res = T.run(T.CORRECT[name])
    assert all(r.passed for r in res.values()), {k: r.text for k, r in res.items() if not r.passed}


@pytest.mark.parametrize("name", list(T.FORBIDDEN))
def test_forbidden_gets_no_credit_for_its_part(name):
    src, must_fail, words = T.FORBIDDEN[name]
    res = T.run(src, tests=T.touched(src))
    assert {k for k, r in res.items() if not r.passed} == set(must_fail), {
        k: r.text[:300] for k, r in res.items() if not r.passed}
    assert all("gets no credit" in res[k].error and words in res[k].error for k in must_fail), {
        k: res[k].error for k in must_fail}


def test_untiled_forward_loses_exactly_the_tiling_points():
    src, _, _ = T.WRONG["forward_untiled_full_matrix"]
    res = T.run(src, tests=T.FWD)
    assert {k for k, r in res.items() if not r.passed} == {"test_forward_tiled", "test_forward_skips"}
    assert "Only the tiling points are lost" in res["test_forward_tiled"].error


def test_the_package_meets_the_graders():
    """llmcourse.flash, pasted as a learner who copied it would, with the contract's names."""
    src = Path(flash.__file__).read_text() + "\n\n" + T.code("""
        flash_attention_forward = flash_forward
        flash_attention_backward = flash_backward""")
    res = T.run({"merge": src, "forward": "", "backward": ""})
    assert all(r.passed for r in res.values()), {k: r.text for k, r in res.items() if not r.passed}


# ----------------------------------------------------------------------------- the recorder itself


def test_recorder_sees_the_largest_new_tensor_not_views():
    x = torch.randn(100, 100)
    with G.Recorder() as rec:
        y = x[:, :50].t()                   # views of x: nothing new
        x.add_(1.0)                         # in place: nothing new
        torch.zeros(30, 40, dtype=torch.bool)
        y.contiguous()                      # 5,000 new elements
    assert rec.largest[0] == 5000 and "(50, 100)" in rec.largest[1]


def test_recorder_counts_matrix_multiply_work():
    a, b = torch.randn(3, 8, 5), torch.randn(3, 5, 7)
    with G.Recorder() as rec:
        a @ b                                # bmm: 2 * 3 * 8 * 5 * 7
        a[0] @ b[0]                          # mm: 2 * 8 * 5 * 7
        torch.einsum("bij,bjk->bik", a, b)   # bmm again
        a[0, 0] @ b[0]                       # mv-like: 2 * 5 * 7
    assert rec.matmul_flops == 2 * (3 * 8 * 5 * 7) * 2 + 2 * 8 * 5 * 7 + 2 * 5 * 7


def test_recorder_flags_reductions_over_whole_rows():
    s = torch.randn(16, 150)
    for reduce in (lambda: torch.softmax(s, -1), lambda: s.max(-1), lambda: s.amax(dim=1), lambda: s.exp().sum(-1),
                   lambda: torch.logsumexp(s, -1), lambda: s[0].sum()):
        with G.Recorder(row_len=150) as rec:
            reduce()
        assert rec.whole_row, reduce
    with G.Recorder(row_len=150) as rec:
        s[:, :32].amax(-1), torch.softmax(s[:, 32:64], -1), s.sum(0), (s > 0).all(-1)
    assert rec.whole_row is None


def test_recorder_leaves_the_guarded_modules_alone():
    from llmcourse.grading import guard

    guard.install()
    guard.check_and_restore("before")
    with G.Recorder():
        torch.randn(4, 4).exp().sum()
    assert guard.check_and_restore("after a recorded call") == []


def test_tiling_bound_is_met_by_the_package_with_room_to_spare():
    q, k, v = (torch.randn(1, 1024, 32) for _ in range(3))
    with G.Recorder() as fwd:
        out, lse = flash.flash_forward(q, k, v, False, 64, 64)
    with G.Recorder() as bwd:
        flash.flash_backward(q, k, v, out, lse, torch.randn_like(out), False, 64, 64)
    assert fwd.largest[0] <= 1024 * 32 and bwd.largest[0] <= 1024 * 32 < G.BOUND
    with G.Recorder() as causal:
        flash.flash_forward(q, k, v, True, 64, 64)
    assert causal.matmul_flops / fwd.matmul_flops == pytest.approx(136 / 256)   # 136 of 16 x 16 tiles
    assert fwd.matmul_flops == 2 * (2 * 1024 * 1024 * 32)
    assert math.isclose(G.BOUND, 1024 * 1024 / 8)
