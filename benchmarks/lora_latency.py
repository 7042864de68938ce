"""Benchmark: inference latency of a GPT with LoRA, unmerged and merged, against the base model.

LoRA's claim (Hu et al. 2021, arXiv:2106.09685, section 4.1): once W0 + (alpha / r) B A is
merged, inference costs exactly what the base model costs. The chapter (book/part2/12_lora)
measures it briefly; this script measures it longer. The weights' values do not change the
amount of computation, so the model is the course GPT's shape with random weights (no
checkpoint needed). The three models take turns within each repeat, so a change in the
machine's load hits them alike; the script prints the median and the 25-75% range.

Usage::

    python benchmarks/lora_latency.py --threads 1              # 30 repeats
    python benchmarks/lora_latency.py --quick                   # a smoke test
"""
from __future__ import annotations

import argparse
import copy
import json
import timeit

import numpy as np
import torch

from llmcourse import peft
from llmcourse.gpt import GPT, GPTConfig


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--number", type=int, default=5, help="calls per timing")
    p.add_argument("--quick", action="store_true", help="3 repeats of 1 call")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.number = 3, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = GPT(GPTConfig()).eval()
    lora = peft.apply_lora(copy.deepcopy(base), ["attn.c_attn", "attn.c_proj"], r=args.rank, alpha=8)
    with torch.no_grad():
        for m in peft.lora_layers(lora).values():
            m.lora_B.normal_(std=0.02)
    merged = peft.merge_and_unload(copy.deepcopy(lora))
    x = torch.randint(GPTConfig().vocab_size, (args.batch_size, args.seq_len))
    models = {"base": base, f"LoRA r={args.rank} unmerged": lora, f"LoRA r={args.rank} merged": merged}
    times = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m(x)
        for _ in range(args.repeats):
            for k, m in models.items():
                times[k].append(timeit.timeit(lambda: m(x), number=args.number) / args.number * 1000)
    out = {k: {"median_ms": float(np.median(t)), "p25_ms": float(np.percentile(t, 25)),
               "p75_ms": float(np.percentile(t, 75))} for k, t in times.items()}
    print(f"forward of {args.batch_size}x{args.seq_len} tokens, {args.threads} thread(s), "
          f"{args.repeats} repeats of {args.number} calls")
    for k, v in out.items():
        print(f"{k:22s} median {v['median_ms']:7.2f} ms  (25-75%: {v['p25_ms']:.2f} to {v['p75_ms']:.2f})")
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
