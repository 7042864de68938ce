"""FlashAttention in plain PyTorch: exact attention by tiles, the online softmax and recomputation.

Papers: Dao, Fu, Ermon, Rudra, Ré (2022), "FlashAttention: Fast and Memory-Efficient Exact
Attention with IO-Awareness", arXiv:2205.14135: section 3.1 (tiling, the softmax of two
blocks, recomputation), Algorithm 1 (forward), Algorithm 4 in appendix B (backward, with
``D_i = rowsum(dO_i ∘ O_i)``), section 3.2 and Theorem 2 (HBM accesses). Milakov and
Gimelshein (2018), "Online normalizer calculation for softmax", arXiv:1805.02867,
Algorithm 3 (a running maximum and a running normaliser, rescaled as the maximum grows).
The forward runs the query blocks in the outer loop, as FlashAttention-2 does (Dao 2023,
arXiv:2307.08691, section 3.1); the backward keeps Algorithm 4's order (key blocks outside).

Reading order: the naive reference, the merge of two blocks' statistics, the tiled forward
and backward and the ``autograd.Function`` that joins them, the I/O simulator of section
3.2 (a slow memory of unbounded size and a fast one of ``M`` elements), and a peak-memory
probe that reads the CPU allocator's own running total through ``torch.profiler``.

Tested in ``tests/test_flash.py``: outputs, log-sum-exps and gradients equal to autograd
through the naive attention (and to ``F.scaled_dot_product_attention``) to 1e-5 in float32,
for any block sizes, causal or not; the simulator against the closed forms of Theorem 2.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch

# ----------------------------------------------------------------------------- the reference


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False):
    """Standard attention (the paper's Algorithm 0): the whole (Lq, Lk) matrix, then softmax.

    q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv). Returns ``(out (..., Lq, dv), lse (..., Lq))``
    where ``lse`` is the log-sum-exp of each row of scaled scores over the allowed keys.
    ``causal`` lets query i see keys j <= i.
    """
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))                 # (..., Lq, Lk)
    if causal:
        allowed = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1) @ v, torch.logsumexp(s, dim=-1)


# ----------------------------------------------------------------------------- the online softmax


def softmax_merge(m_a: torch.Tensor, l_a: torch.Tensor, m_b: torch.Tensor, l_b: torch.Tensor):
    """Statistics of the union of two blocks of scores of the same rows.

    ``m`` is a row maximum and ``l`` the sum of ``exp(score - m)``. The union has
    ``m = max(m_a, m_b)`` and ``l = l_a exp(m_a - m) + l_b exp(m_b - m)`` (section 3.1 of the
    paper; Milakov and Gimelshein's Algorithm 3 for one element at a time). An empty block is
    ``(-inf, 0)``; merging two of them must give ``(-inf, 0)``, not the NaN of
    ``exp(-inf - (-inf))``, so the shift uses 0 where ``m`` is ``-inf``.
    """
    m = torch.maximum(m_a, m_b)
    shift = _finite(m)
    return m, l_a * torch.exp(m_a - shift) + l_b * torch.exp(m_b - shift)


def _finite(m: torch.Tensor) -> torch.Tensor:
    """``m`` with -inf (a row that has seen no allowed key yet) replaced by 0, to shift by."""
    return torch.nan_to_num(m, neginf=0.0)


def _blocks(n: int, size: int):
    """(start, stop) of consecutive blocks of ``size`` covering ``range(n)``; the last may be short."""
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _block_mask(q0: int, q1: int, k0: int, k1: int, device) -> torch.Tensor | None:
    """Causal mask of the tile (queries q0..q1-1, keys k0..k1-1); ``None`` when every key is allowed."""
    if k1 - 1 <= q0:                                                     # tile on or below the diagonal
        return None
    rows = torch.arange(q0, q1, device=device)[:, None]
    cols = torch.arange(k0, k1, device=device)[None, :]
    return cols <= rows                                                  # global indices, any block sizes


# ----------------------------------------------------------------------------- tiled forward and backward


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                  block_q: int = 64, block_k: int = 64):
    """Exact attention, one (block_q, block_k) tile of scores at a time: ``(out, lse)``.

    Shapes as :func:`naive_attention`. For each block of queries, an accumulator ``acc``
    (block_q, dv) and the running statistics ``(m, l)`` visit the key blocks; when a new
    block raises the row maximum, what was accumulated is rescaled by ``exp(m_old - m_new)``.
    With ``causal``, tiles entirely above the diagonal are skipped, not masked. Nothing
    larger than a tile, the output and ``lse`` is ever created.
    """
    *batch, Lq, d = q.shape
    Lk, dv = k.size(-2), v.size(-1)
    scale = 1.0 / math.sqrt(d)
    out = q.new_empty(*batch, Lq, dv)
    lse = q.new_empty(*batch, Lq)
    for q0, q1 in _blocks(Lq, block_q):
        qi = q[..., q0:q1, :] * scale                                   # (..., bq, d)
        acc = q.new_zeros(*batch, q1 - q0, dv)
        m = q.new_full((*batch, q1 - q0), float("-inf"))
        l = q.new_zeros(*batch, q1 - q0)
        for k0, k1 in _blocks(Lk, block_k):
            if causal and k0 > q1 - 1:                                  # above the diagonal: skip
                break
            s = qi @ k[..., k0:k1, :].transpose(-2, -1)                 # (..., bq, bk)
            mask = _block_mask(q0, q1, k0, k1, q.device) if causal else None
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            m_blk = s.amax(dim=-1)                                      # -inf for a fully masked row
            p = torch.exp(s - _finite(m_blk)[..., None])                # the block's own numerators
            m_new, l = softmax_merge(m, l, m_blk, p.sum(dim=-1))
            shift = _finite(m_new)                                      # rescale both parts to m_new
            acc = acc * torch.exp(m - shift)[..., None] + (p @ v[..., k0:k1, :]) * torch.exp(m_blk - shift)[..., None]
            m = m_new
        out[..., q0:q1, :] = acc / l[..., None]
        lse[..., q0:q1] = m + torch.log(l)
    return out, lse


def flash_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                   grad_out: torch.Tensor, causal: bool = False, block_q: int = 64, block_k: int = 64):
    """Gradients of ``(out * grad_out).sum()`` with respect to q, k, v (the paper's Algorithm 4).

    The probabilities are never stored: each tile recomputes ``P_ij = exp(S_ij - lse_i)`` from
    q, k and the forward's ``lse``. With ``D_i = rowsum(dO_i ∘ O_i)``:
    ``dV_j += P_ijᵀ dO_i``, ``dP_ij = dO_i V_jᵀ``, ``dS_ij = P_ij ∘ (dP_ij - D_i)``,
    ``dQ_i += dS_ij K_j / √d``, ``dK_j += dS_ijᵀ Q_i / √d``.
    """
    *batch, Lq, d = q.shape
    Lk = k.size(-2)
    scale = 1.0 / math.sqrt(d)
    D = (grad_out * out).sum(dim=-1)                                    # (..., Lq)
    grad_q, grad_k, grad_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for k0, k1 in _blocks(Lk, block_k):
        kj, vj = k[..., k0:k1, :], v[..., k0:k1, :]
        dk = torch.zeros_like(kj)
        dv = torch.zeros_like(vj)
        for q0, q1 in _blocks(Lq, block_q):
            if causal and k0 > q1 - 1:                                  # tile above the diagonal
                continue
            qi, doi = q[..., q0:q1, :], grad_out[..., q0:q1, :]
            s = (qi @ kj.transpose(-2, -1)) * scale                     # recomputed, (..., bq, bk)
            mask = _block_mask(q0, q1, k0, k1, q.device) if causal else None
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            p = torch.exp(s - lse[..., q0:q1, None])
            dv += p.transpose(-2, -1) @ doi
            ds = p * (doi @ vj.transpose(-2, -1) - D[..., q0:q1, None])
            grad_q[..., q0:q1, :] += (ds @ kj) * scale
            dk += (ds.transpose(-2, -1) @ qi) * scale
        grad_k[..., k0:k1, :] = dk
        grad_v[..., k0:k1, :] = dv
    return grad_q, grad_k, grad_v


class FlashAttentionFunction(torch.autograd.Function):
    """The tiled forward and backward as one differentiable operation; saves q, k, v, out and lse
    (O(N d) numbers) for the backward instead of the (N, N) probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, block_q=64, block_k=64):
        out, lse = flash_forward(q, k, v, causal, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.settings = (causal, block_q, block_k)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        grads = flash_backward(q, k, v, out, lse, grad_out.contiguous(), *ctx.settings)
        return (*grads, None, None, None)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """softmax(q kᵀ / √d) v, tiled in the forward and in the backward pass."""
    return FlashAttentionFunction.apply(q, k, v, causal, block_q, block_k)


# ----------------------------------------------------------------------------- the I/O simulator


@dataclass
class IOCount:
    """Elements moved between the slow memory (HBM) and the fast one (SRAM) of size ``M``."""

    reads: int = 0           #: elements read from slow memory
    writes: int = 0          #: elements written to slow memory
    fast: int = 0            #: the most elements the algorithm holds in fast memory at once
    block_r: int = 0         #: rows per tile (queries), 0 when not tiled that way
    block_c: int = 0         #: columns per tile (keys)

    @property
    def total(self) -> int:
        return self.reads + self.writes


class TwoLevelMemory:
    """A slow memory of unbounded size and a fast one of ``M`` elements; counts the traffic.

    ``load`` and ``store`` move ``n`` elements (the count is what the paper calls HBM
    accesses); ``hold`` and ``drop`` track what sits in fast memory, which must never
    exceed ``M``.
    """

    def __init__(self, M: int):
        self.M, self.io, self._held = M, IOCount(), 0

    def load(self, n: int) -> None:
        self.io.reads += n
        self.hold(n)

    def store(self, n: int) -> None:
        self.io.writes += n

    def hold(self, n: int) -> None:
        self._held += n
        self.io.fast = max(self.io.fast, self._held)
        if self._held > self.M:
            raise ValueError(f"fast memory overflow: {self._held} elements held, M = {self.M}")

    def drop(self, n: int) -> None:
        self._held -= n


def _largest_tile(M: int, d: int) -> int:
    """Largest b with 2 b d + b² <= M: a (b, d) and a (b, d) operand and a (b, b) tile fit."""
    b = int(math.isqrt(d * d + M) - d)
    while 2 * (b + 1) * d + (b + 1) ** 2 <= M:
        b += 1
    if b < 1:
        raise ValueError(f"M = {M} is too small for head dimension d = {d}")
    return b


def standard_attention_io(N: int, d: int, M: int) -> IOCount:
    """HBM traffic of the paper's Algorithm 0, each of its three steps tiled to fit in ``M``.

    1. S = Q Kᵀ: a (b, d) block of Q stays in fast memory while (b, d) blocks of K stream past;
       each (b, b) tile of S is written out.
    2. P = softmax(S), row by row: a row that fits is read once; a longer one is read twice
       (Milakov and Gimelshein's online normaliser for the statistics, then the normalisation).
       P is written out.
    3. O = P V: a (b, d) accumulator of O stays while (b, b) tiles of P and (b, d) blocks of V stream.
    """
    mem = TwoLevelMemory(M)
    b = _largest_tile(M, d)
    blocks = _blocks(N, b)
    for r0, r1 in blocks:                                                 # step 1
        mem.load((r1 - r0) * d)
        for c0, c1 in blocks:
            mem.load((c1 - c0) * d)
            mem.hold((r1 - r0) * (c1 - c0))
            mem.store((r1 - r0) * (c1 - c0))
            mem.drop((r1 - r0) * (c1 - c0) + (c1 - c0) * d)
        mem.drop((r1 - r0) * d)
    chunk = min(N, M)                                                     # step 2
    for _ in range(N):
        for c0, c1 in _blocks(N, chunk):
            mem.load(c1 - c0)
            mem.drop(c1 - c0)
        if N > M:                                                         # second pass over the row
            for c0, c1 in _blocks(N, chunk):
                mem.load(c1 - c0)
                mem.drop(c1 - c0)
        mem.store(N)
    for r0, r1 in blocks:                                                 # step 3
        mem.hold((r1 - r0) * d)
        for c0, c1 in blocks:
            mem.load((r1 - r0) * (c1 - c0) + (c1 - c0) * d)
            mem.drop((r1 - r0) * (c1 - c0) + (c1 - c0) * d)
        mem.store((r1 - r0) * d)
        mem.drop((r1 - r0) * d)
    mem.io.block_r = mem.io.block_c = b
    return mem.io


def flash_block_sizes(M: int, d: int) -> tuple[int, int]:
    """``(B_r, B_c)`` of Algorithm 1, line 1: ``B_c = M / 4d`` and ``B_r = min(B_c, d)``.

    Rounded down, and ``B_r`` made smaller still when the row statistics ℓ_i and m_i
    (2 B_r numbers) would not fit beside the four tiles: the simulator counts them too.
    """
    bc = M // (4 * d)
    br = min(bc, d, (M - 2 * bc * d) // (2 * d + 2))
    if br < 1:
        raise ValueError(f"M = {M} is too small for head dimension d = {d} (needs M > 4d)")
    return br, bc


def flash_attention_io(N: int, d: int, M: int, block_r: int | None = None, block_c: int | None = None,
                       causal: bool = False) -> IOCount:
    """HBM traffic of the paper's Algorithm 1, line by line.

    Line 2 writes the initial O, ℓ, m; the outer loop loads K_j and V_j (line 6); the inner
    loop loads Q_i, O_i, ℓ_i, m_i (line 8) and writes O_i, ℓ_i, m_i back (lines 12-13). In
    fast memory: K_j, V_j, Q_i, O_i (each at most M/4 with the paper's block sizes), ℓ_i and
    m_i; the (B_r, B_c) score tile is the working space the paper's count leaves out
    (B_r B_c <= M/4 too). With ``causal``, tiles entirely above the diagonal are skipped.
    """
    br, bc = flash_block_sizes(M, d) if block_r is None or block_c is None else (block_r, block_c)
    mem = TwoLevelMemory(M)
    mem.store(N * d + 2 * N)                                              # line 2
    for c0, c1 in _blocks(N, bc):
        mem.load(2 * (c1 - c0) * d)                                       # line 6
        for r0, r1 in _blocks(N, br):
            if causal and c0 > r1 - 1:
                continue
            rows = r1 - r0
            mem.load(2 * rows * d + 2 * rows)                             # line 8
            mem.store(rows * d + 2 * rows)                                # lines 12-13
            mem.drop(2 * rows * d + 2 * rows)
        mem.drop(2 * (c1 - c0) * d)
    mem.io.block_r, mem.io.block_c = br, bc
    return mem.io


# ----------------------------------------------------------------------------- measured peak memory


@contextlib.contextmanager
def _quiet_fd2():
    """Send the process's file descriptor 2 to /dev/null: the profiler's C++ library prints
    a line on stderr when it starts and stops, which would land in a notebook's output."""
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@dataclass
class MemoryUse:
    """What the CPU allocator saw during a call, in bytes beyond what it held before the call."""

    peak: int            #: the most held at any moment during the call
    retained: int        #: still held when the call returned (its result, what autograd saved, ...)
    result: object       #: the call's return value


def memory_use(fn, *args, **kwargs) -> MemoryUse:
    """Run ``fn(*args, **kwargs)`` and read the allocator's peak and what it still holds after.

    Read from the allocator itself: with ``profile_memory``, PyTorch's CPU allocator reports
    every allocation and free together with its running total of bytes allocated. Nothing is
    computed from shapes; memory outside PyTorch's allocator (Python objects, libraries'
    own buffers) is not counted.
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn(*args, **kwargs)
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        extra = event.extra_fields
        if type(extra).__name__ == "_ExtraFields_Allocation":
            events.append((event.start_time_ns, extra.total_allocated, extra.alloc_size))
        stack.extend(event.children)
    if not events:
        return MemoryUse(0, 0, result)
    events.sort()
    base = events[0][1] - events[0][2]                                  # held before the first event
    return MemoryUse(max(t for _, t, _ in events) - base, events[-1][1] - base, result)


def peak_memory(fn, *args, **kwargs) -> tuple[int, object]:
    """``(bytes, result)``: the allocator's peak during ``fn(*args, **kwargs)`` beyond what it
    held before (see :func:`memory_use`), and the function's result."""
    use = memory_use(fn, *args, **kwargs)
    return use.peak, use.result
