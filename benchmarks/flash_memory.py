"""Benchmark: peak memory and time of naive, tiled and PyTorch's fused attention, against N.

FlashAttention's claim (Dao et al. 2022, arXiv:2205.14135, Theorem 1, Fig. 3 right): exact
attention needs memory linear in the sequence length N, not quadratic. For each N and each of
``llmcourse.flash.naive_attention`` (the whole N x N matrix), ``llmcourse.flash.flash_forward``
(tiles of 64 x 64, plain PyTorch) and ``F.scaled_dot_product_attention`` (PyTorch's fused CPU
kernel), a **fresh subprocess** builds q, k, v of shape (1, 1, N, 64) in float32 and measures
one forward pass:

- the peak of memory held by PyTorch's CPU allocator beyond what it held before the call
  (``llmcourse.flash.peak_memory``: the allocator's own running total, through the profiler);
- the growth of the process's peak resident set (``ru_maxrss``), a cruder whole-process view
  that also sees memory outside the allocator (it is 0 when the call fits in pages the
  process had already touched);
- the median time of ``--repeats`` calls, outside the profiler.

It prints one row per (N, implementation) and, at the largest N, the peak-memory ratio
naive / tiled (the issue's target: at least 100x at N = 4096) and the three times.

Usage::

    .venv/bin/python benchmarks/flash_memory.py                 # N = 256 ... 4096, one thread
    .venv/bin/python benchmarks/flash_memory.py --quick         # N = 256, 512, smoke test
    .venv/bin/python benchmarks/flash_memory.py --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

IMPLEMENTATIONS = ("naive", "tiled", "sdpa")

CHILD = r"""
import json, resource, sys, time
import torch
import torch.nn.functional as F
from llmcourse import flash

impl, N, d, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
IMPL = {"naive": lambda q, k, v: flash.naive_attention(q, k, v)[0], "tiled": lambda q, k, v: flash.flash_forward(q, k, v)[0],
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v)}[impl]
IMPL(*(torch.randn(1, 1, 64, d) for _ in range(3)))      # load and initialise the kernels on a small input
q, k, v = (torch.randn(1, 1, N, d) for _ in range(3))
fn = lambda: IMPL(q, k, v)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fn()                                                     # the process view first, before the profiler's buffers
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
flash.peak_memory(lambda: torch.ones(1))                 # start the profiler once, outside the measurement
peak, out = flash.peak_memory(fn)
ref = F.scaled_dot_product_attention(q, k, v)
err = (out - ref).abs().max().item()
del out
fn()
times = []
for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
print(json.dumps({"impl": impl, "N": N, "peak_bytes": peak, "rss_growth_bytes": rss * 1024,
                  "seconds": times, "max_abs_diff_vs_sdpa": err}))
"""


def measure(impl: str, N: int, d: int, repeats: int, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, impl, str(N), str(d), str(repeats), str(threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="N = 256, 512 and 2 repeats")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.repeats = [256, 512], 2
    rows = [measure(impl, N, args.head_dim, args.repeats, args.threads) for N in args.lengths for impl in IMPLEMENTATIONS]
    print(f"q, k, v: (1, 1, N, {args.head_dim}) float32, {args.threads} thread(s); each row a fresh process")
    print(f"{'N':>6s} {'implementation':>15s} {'peak (allocator)':>17s} {'peak RSS growth':>16s} "
          f"{'median time':>12s} {'max |diff| vs SDPA':>19s}")
    for r in rows:
        print(f"{r['N']:6d} {r['impl']:>15s} {r['peak_bytes'] / 2**20:13.3f} MiB {r['rss_growth_bytes'] / 2**20:12.2f} MiB"
              f" {statistics.median(r['seconds']) * 1000:9.1f} ms {r['max_abs_diff_vs_sdpa']:19.1e}")
    N = max(args.lengths)
    at = {r["impl"]: r for r in rows if r["N"] == N}
    ratio = at["naive"]["peak_bytes"] / at["tiled"]["peak_bytes"]
    t = {k: statistics.median(r["seconds"]) for k, r in at.items()}
    print(f"\nat N = {N}: naive attention's peak memory is {ratio:.0f}x the tiled attention's "
          f"({at['naive']['peak_bytes'] / 2**20:.1f} MiB against {at['tiled']['peak_bytes'] / 2**20:.2f} MiB); "
          f"PyTorch's fused kernel: {at['sdpa']['peak_bytes'] / 2**20:.2f} MiB")
    print(f"times at N = {N}: naive {t['naive'] * 1000:.0f} ms, tiled {t['tiled'] * 1000:.0f} ms, "
          f"fused {t['sdpa'] * 1000:.0f} ms; the tiled Python loop is {t['tiled'] / t['sdpa']:.1f}x the fused "
          f"kernel's time and {t['tiled'] / t['naive']:.2f}x the naive one's")
    result = {"rows": rows, "N": N, "ratio_naive_over_tiled": ratio, "median_seconds": t, "threads": args.threads}
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
