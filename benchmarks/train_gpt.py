"""Benchmark: train the small character-level GPT on the CPU, the whole process timed.

The default shape is the widely quoted small CPU configuration of karpathy/nanoGPT's
README ("I only have a macbook"): 4 layers, 4 heads, width 128, context 64, batch 12,
no dropout, learning rate 1e-3 decayed by a cosine to 1e-4 over 2000 iterations. nanoGPT
reports about 42 ms per iteration and a validation loss of about 1.89 for it; we print
our ratio to those 42 ms.

Model FLOPs per token follow the PaLM paper (Chowdhery et al. 2022, arXiv:2204.02311,
appendix B) as nanoGPT's ``estimate_mfu`` does: 6 N for the matrix multiplies of the
forward and backward passes (N = parameters without the position embedding) plus
12 L T C for attention's scores and weighted sums (L layers, context T, width C). The
model-FLOP utilisation (MFU) divides the achieved FLOP/s by a peak measured here: the
best of several large float32 ``torch.matmul`` calls with the same number of threads.

Usage::

    python benchmarks/train_gpt.py --threads 1        # the full 2000 iterations
    python benchmarks/train_gpt.py --quick            # 50 iterations, a smoke test
"""
from __future__ import annotations

import argparse
import json
import time

_T0 = time.perf_counter()                     # whole process: imports and data loading count

import torch  # noqa: E402

from llmcourse.data import shakespeare_splits  # noqa: E402
from llmcourse.gpt import GPT, GPTConfig  # noqa: E402
from llmcourse.train import TrainConfig, estimate_loss, set_seed, train_lm  # noqa: E402

NANOGPT_MS_PER_ITER = 42.0      # nanoGPT README, this configuration on a CPU
NANOGPT_VAL_LOSS = 1.89         # its validation loss after 2000 iterations


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--eval-iters", type=int, default=200, help="batches of the final validation loss")
    p.add_argument("--matmul-size", type=int, default=1024, help="n of the n x n peak matmul")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--quick", action="store_true", help="50 iterations, 20 eval batches")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = p.parse_args(argv)
    if args.quick:
        args.iters, args.eval_iters = 50, min(args.eval_iters, 20)
    return args


def flops_per_token(n_params: int, n_layer: int, n_embd: int, block_size: int) -> int:
    """PaLM / nanoGPT estimate of training FLOPs per token: 6 N + 12 L T C."""
    return 6 * n_params + 12 * n_layer * block_size * n_embd


def matmul_peak(n: int, repeats: int = 10) -> float:
    """FLOP/s of the best of ``repeats`` float32 (n, n) @ (n, n) products (2 n^3 FLOPs each)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.matmul(a, b)                                            # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    tok, train_ids, val_ids = shakespeare_splits()
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                    n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    model = GPT(cfg)
    tcfg = TrainConfig(max_iters=args.iters, batch_size=args.batch_size, block_size=args.block_size,
                       lr=args.lr, min_lr=args.min_lr, warmup_iters=min(args.warmup, args.iters),
                       seed=args.seed)
    hist = train_lm(model, train_ids, None, tcfg, progress=False)     # the loop alone is timed
    val_loss = estimate_loss(model, val_ids, TrainConfig(batch_size=args.batch_size,
                                                         block_size=args.block_size,
                                                         eval_iters=args.eval_iters))
    peak = matmul_peak(args.matmul_size, repeats=3 if args.quick else 10)

    ms_per_iter = 1000 * hist.seconds / args.iters
    tokens_per_s = args.iters * args.batch_size * args.block_size / hist.seconds
    n_params = model.num_params()
    fpt = flops_per_token(n_params, args.n_layer, args.n_embd, args.block_size)
    achieved = fpt * tokens_per_s
    res = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "params_non_embedding": n_params,
        "ms_per_iter": ms_per_iter,
        "ratio_to_nanogpt_42ms": ms_per_iter / NANOGPT_MS_PER_ITER,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": fpt,
        "achieved_flops": achieved,
        "matmul_peak_flops": peak,
        "mfu": achieved / peak,
        "val_loss": val_loss,
        "final_train_loss": hist.train_loss[-1],
        "train_seconds": hist.seconds,
        "process_seconds": time.perf_counter() - _T0,
        "threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
    }
    print(f"GPT {args.n_layer} layers x {args.n_head} heads x {args.n_embd} wide, context "
          f"{args.block_size}, batch {args.batch_size}, {n_params / 1e6:.2f} M parameters, "
          f"{args.iters} iterations, {res['threads']} thread(s), torch {res['torch_version']}")
    print(f"  time per iteration  {ms_per_iter:8.1f} ms   "
          f"({res['ratio_to_nanogpt_42ms']:.2f} x nanoGPT's {NANOGPT_MS_PER_ITER:.0f} ms)")
    print(f"  tokens per second   {tokens_per_s:8.0f}")
    print(f"  model FLOPs/token   {fpt / 1e6:8.2f} M    (6N + 12 L T C)")
    print(f"  achieved            {achieved / 1e9:8.2f} GFLOP/s")
    print(f"  matmul peak         {peak / 1e9:8.2f} GFLOP/s ({args.matmul_size}^3 float32, best of runs)")
    print(f"  MFU                 {100 * res['mfu']:8.1f} %")
    print(f"  validation loss     {val_loss:8.3f}    ({args.eval_iters} batches; nanoGPT: "
          f"{NANOGPT_VAL_LOSS} after 2000 iterations)")
    print(f"  whole process       {res['process_seconds']:8.1f} s  (training loop {hist.seconds:.1f} s)")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
