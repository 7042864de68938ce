"""llmcourse.flash against independent references.

Outputs and log-sum-exps against the naive attention and PyTorch's
``F.scaled_dot_product_attention``; gradients against autograd through the naive attention
(float32 to 1e-5, float64 to 1e-10); block sizes that do not divide the lengths, causal or not;
the ``autograd.Function`` by ``gradcheck``. The I/O simulator against the closed forms of
Theorem 2 (exactly, line by line of Algorithm 1, and in order of growth over a grid), and the
peak-memory probe against allocations of known size.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import flash

CASES = [  # (batch, Lq, Lk, d, dv, block_q, block_k)
    ((), 50, 50, 8, 8, 16, 16),
    ((2,), 45, 45, 16, 12, 64, 10),      # one query block, key blocks with a short tail
    ((2, 3), 37, 37, 8, 5, 5, 16),       # more query blocks than key blocks
    ((3,), 20, 33, 8, 6, 7, 9),          # Lq != Lk (non-causal only)
    ((1,), 64, 64, 32, 32, 64, 64),      # exactly one tile
    ((2,), 130, 130, 16, 16, 32, 48),    # block_k not a multiple of block_q
]


def _inputs(batch, Lq, Lk, d, dv, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*batch, Lq, d, generator=g, dtype=dtype), torch.randn(*batch, Lk, d, generator=g, dtype=dtype),
            torch.randn(*batch, Lk, dv, generator=g, dtype=dtype))


def _cases():
    for case in CASES:
        for causal in (False, True):
            if causal and case[1] != case[2]:
                continue
            yield pytest.param(case, causal, id=f"{case}-{'causal' if causal else 'full'}")


@pytest.mark.parametrize("case, causal", list(_cases()))
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_forward_and_backward_equal_naive(case, causal, dtype, tol):
    batch, Lq, Lk, d, dv, bq, bk = case
    q, k, v = (t.requires_grad_() for t in _inputs(batch, Lq, Lk, d, dv, dtype))
    out_ref, lse_ref = flash.naive_attention(q, k, v, causal)
    grad_out = torch.randn_like(out_ref)
    grads_ref = torch.autograd.grad(out_ref, (q, k, v), grad_out)
    with torch.no_grad():
        out, lse = flash.flash_forward(q, k, v, causal, bq, bk)
        grads = flash.flash_backward(q, k, v, out, lse, grad_out, causal, bq, bk)
    torch.testing.assert_close(out, out_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(lse, lse_ref, atol=tol, rtol=tol)
    for got, want in zip(grads, grads_ref):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("causal", [False, True])
def test_naive_and_tiled_equal_pytorch_sdpa(causal):
    q, k, v = _inputs((2, 4), 96, 96, 32, 32)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(flash.naive_attention(q, k, v, causal)[0], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flash.flash_attention(q, k, v, causal, 32, 24), want, atol=1e-5, rtol=1e-5)


def test_autograd_function_gradcheck():
    for causal in (False, True):
        q, k, v = (t.requires_grad_() for t in _inputs((2,), 9, 9, 4, 3, torch.float64, seed=3))
        assert torch.autograd.gradcheck(lambda a, b, c: flash.flash_attention(a, b, c, causal, 4, 3), (q, k, v))


def test_autograd_function_saves_no_probabilities():
    """What the backward keeps: q, k, v, out and lse; nothing of size Lq x Lk."""
    q, k, v = (t.requires_grad_() for t in _inputs((), 256, 256, 16, 16))
    out = flash.flash_attention(q, k, v, False, 32, 32)
    saved = out.grad_fn.saved_tensors
    assert max(t.numel() for t in saved) == 256 * 16
    (out.sum()).backward()
    torch.testing.assert_close(q.grad, torch.autograd.grad(flash.naive_attention(q, k, v)[0].sum(), q)[0],
                               atol=1e-5, rtol=1e-5)


def test_softmax_merge_is_logsumexp_of_the_union():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 30, generator=g, dtype=torch.float64) * 5
    stats = [(b.amax(-1), torch.exp(b - b.amax(-1, keepdim=True)).sum(-1)) for b in s.split(7, dim=-1)]
    m, l = stats[0]
    for mb, lb in stats[1:]:
        m, l = flash.softmax_merge(m, l, mb, lb)
    torch.testing.assert_close(m, s.amax(-1))
    torch.testing.assert_close(m + torch.log(l), torch.logsumexp(s, -1))
    # order does not matter
    m2, l2 = flash.softmax_merge(*flash.softmax_merge(stats[2][0], stats[2][1], *stats[0]), *stats[1])
    m3, l3 = flash.softmax_merge(stats[3][0], stats[3][1], *flash.softmax_merge(*stats[4], m2, l2))
    torch.testing.assert_close(m3 + torch.log(l3), torch.logsumexp(s, -1))


def test_softmax_merge_empty_blocks():
    inf = float("-inf")
    m_a, l_a = torch.tensor([inf, inf, 1.5]), torch.tensor([0.0, 0.0, 2.0])
    m_b, l_b = torch.tensor([inf, 0.5, inf]), torch.tensor([0.0, 3.0, 0.0])
    m, l = flash.softmax_merge(m_a, l_a, m_b, l_b)
    assert m.tolist() == [inf, 0.5, 1.5] and l.tolist() == [0.0, 3.0, 2.0]


def test_fully_masked_rows_inside_a_tile_give_no_nan():
    """Causal with block_q > block_k: the first rows of a tile see none of its keys."""
    q, k, v = _inputs((2,), 40, 40, 8, 8)
    out, lse = flash.flash_forward(q, k, v, True, 32, 4)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    torch.testing.assert_close(out, flash.naive_attention(q, k, v, True)[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- the I/O simulator


@pytest.mark.parametrize("N, d, M", [(256, 16, 1024), (512, 32, 4096), (1024, 64, 65536), (100, 8, 256), (300, 8, 40)])
def test_flash_io_follows_algorithm_1_line_by_line(N, d, M):
    br, bc = flash.flash_block_sizes(M, d)
    assert bc == M // (4 * d) and br <= min(bc, d) and (br == min(bc, d) or 2 * (br + 1) * (d + 1) + 2 * bc * d > M)
    io = flash.flash_attention_io(N, d, M)
    tc, tr = math.ceil(N / bc), math.ceil(N / br)
    assert io.reads == 2 * N * d + tc * (2 * N * d + 2 * N)            # K, V once; Q, O, l, m per key block
    assert io.writes == N * d + 2 * N + tc * (N * d + 2 * N)           # init, then O, l, m per key block
    assert io.fast == 2 * bc * d + 2 * br * d + 2 * br <= M            # K_j, V_j, Q_i, O_i, l_i, m_i
    assert tr * br >= N


def test_flash_io_is_theta_n2_d2_over_m():
    """Theorem 2: Θ(N² d² / M) for d <= M <= Nd: the ratio stays in a constant band over a grid."""
    ratios = []
    for N in (256, 1024):
        for d in (16, 64):
            for M in (8 * d, 16 * d, 4 * d * d, N * d // 4, N * d):
                if d <= M <= N * d:
                    ratios.append(flash.flash_attention_io(N, d, M).total * M / (N * N * d * d))
    assert 10 <= min(ratios) and max(ratios) <= 20, ratios
    # doubling M halves the traffic (in the middle of the range)
    a, b = flash.flash_attention_io(4096, 64, 1 << 14).total, flash.flash_attention_io(4096, 64, 1 << 15).total
    assert 1.8 < a / b < 2.1


def test_standard_io_is_theta_nd_plus_n2():
    """Theorem 2: Θ(Nd + N²), whatever M (once a (d, d) tile fits, so that Q and K are read few times)."""
    ratios = []
    for N in (128, 512, 2048):
        for d in (16, 64):
            for M in (4 * d * d, 16 * d * d, N * d):
                if M >= 4 * d * d and M <= N * d:
                    io = flash.standard_attention_io(N, d, M)
                    assert io.fast <= M
                    ratios.append(io.total / (N * d + N * N))
    assert 3 <= min(ratios) and max(ratios) <= 8, ratios


def test_standard_io_counts_writing_s_and_p():
    """At least S and P are written and read back: 4 N² element moves, plus Q, K, V read and O written."""
    N, d = 256, 16
    io = flash.standard_attention_io(N, d, N * d)
    assert io.writes == 2 * N * N + N * d
    assert io.reads >= 2 * N * N + 3 * N * d


def test_flash_io_causal_skips_about_half():
    full, causal = flash.flash_attention_io(4096, 64, 1 << 15), flash.flash_attention_io(4096, 64, 1 << 15, causal=True)
    assert 0.45 < causal.total / full.total < 0.6


def test_simulator_refuses_an_overflow():
    with pytest.raises(ValueError):
        flash.flash_attention_io(256, 64, 4096, block_r=64, block_c=64)   # 4 tiles of 64 x 64 > M
    with pytest.raises(ValueError):
        flash.flash_block_sizes(100, 64)


# ----------------------------------------------------------------------------- peak memory


def test_peak_memory_reads_the_allocator():
    nbytes, out = flash.peak_memory(lambda: torch.empty(1000, 1000) + 1)   # two live (1000, 1000) floats
    assert out.shape == (1000, 1000)
    assert 2 * 4_000_000 <= nbytes < 2 * 4_000_000 + 100_000
    nbytes, _ = flash.peak_memory(lambda: [torch.empty(250_000) for _ in range(3)])
    assert 3_000_000 <= nbytes < 3_100_000
    use = flash.memory_use(lambda: (torch.empty(1000, 1000) + 1)[:10].clone())   # 8 MB at the peak, 40 kB kept
    assert 8_000_000 <= use.peak < 8_100_000 and 40_000 <= use.retained < 41_000


def test_autograd_keeps_the_probabilities_the_tiled_function_does_not():
    q, k, v = (t.requires_grad_() for t in _inputs((1, 1), 1024, 1024, 64, 64))
    naive = flash.memory_use(lambda: flash.naive_attention(q, k, v)[0])
    tiled = flash.memory_use(flash.flash_attention, q, k, v)
    assert naive.retained >= 1024 * 1024 * 4                      # P (at least) saved for the backward
    assert tiled.retained < 2 * (1024 * 64 + 1024) * 4 + 10_000   # out (returned and saved) and lse


def test_tiled_attention_needs_far_less_memory():
    q, k, v = _inputs((1, 1), 2048, 2048, 64, 64)
    naive, _ = flash.peak_memory(flash.naive_attention, q, k, v)
    tiled, _ = flash.peak_memory(flash.flash_forward, q, k, v)
    assert naive >= 2 * 2048 * 2048 * 4                     # scores and probabilities, float32
    assert tiled < 2048 * 64 * 4 + 300_000                  # the output and tiles of 64 x 64
    assert naive / tiled > 40
