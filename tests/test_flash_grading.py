"""The recorder behind the `flash_attention` autograder's tiling checks.

The hidden checks (``llmcourse/grading/checks/flash_attention.py``) run every learner call
under :class:`~llmcourse.grading.checks.flash_attention.Recorder`, a ``TorchDispatchMode`` that
records the largest tensor created, the matrix-multiply work and reductions over whole rows.
Its measures are checked here against operations of known size; the assignment's catalogue
is proven in ``tests/test_autograder_flash_attention.py``.
"""
from __future__ import annotations

import math

import pytest
import torch

from llmcourse import flash
from llmcourse.grading.checks import flash_attention as G


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
    from llmcourse.grading import common, guard

    before = common._GUARD, guard._G
    try:
        guard.install()
        guard.check_and_restore("before")
        with G.Recorder():
            torch.randn(4, 4).exp().sum()
        assert guard.check_and_restore("after a recorded call") == []
    finally:
        # uninstalled again: a guard left installed in pytest's process would compare every later
        # test's honest changes (a warning's registry, a deepcopy's slot names) with this snapshot
        common.__dict__["_GUARD"], guard.__dict__["_G"] = before


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
