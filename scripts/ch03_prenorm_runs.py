"""Chapter 3's runs over seeds: Post-LN against Pre-LN, with and without warm-up.

Xiong et al. (2020), arXiv:2002.04745, Fig. 1 and 4 (training with and without warm-up)
and Fig. 3 (gradient norms at initialisation). Too slow for the book's 90-second budget,
so this script writes ``llmcourse/data/ch03_prenorm_runs.json``, which chapter 3 loads (the
chapter also reruns a reduced version live). Rerun, on one thread (about 5 minutes):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/ch03_prenorm_runs.py

Smoke test (tests/test_prenorm.py): ``--steps 3 --seeds 0 --lrs 1e-3 --grad-seeds 1 --out /tmp/x.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from llmcourse.data import get_batch, shakespeare_splits
from llmcourse.prenorm import WarmupRunConfig, ffn_grad_norms, make_lm, train_with_warmup
from llmcourse.train import set_seed

OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "ch03_prenorm_runs.json"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-layers", type=int, default=6)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--grad-seeds", type=int, default=10, help="initialisations for the gradient norms")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tok, train_ids, _ = shakespeare_splits()
    vocab = tok.vocab_size
    meta = {"n_layers": args.n_layers, "d_model": 64, "n_heads": 4, "d_ff": 256, "steps": args.steps,
            "batch_size": 16, "block_size": 64, "warmup": args.warmup, "vocab": vocab,
            "grad_seeds": args.grad_seeds, "grad_batches_per_seed": 2,
            "torch": torch.__version__, "threads": 1, "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"), "note": "one torch thread on a shared, loaded 2-core machine"}
    grads = {}
    gen = set_seed(1234)
    for pos in ("post", "pre"):
        rows = []
        for seed in range(args.grad_seeds):
            model = make_lm(pos, vocab, n_layers=args.n_layers, seed=seed)
            for _ in range(2):
                x, y = get_batch(train_ids, 16, 64, generator=gen)
                rows.append(ffn_grad_norms(model, x, y).tolist())
        grads[pos] = rows
    runs = []
    for seed in args.seeds:
        for lr in args.lrs:
            for pos in ("post", "pre"):
                for warmup in (0, args.warmup):
                    model = make_lm(pos, vocab, n_layers=args.n_layers, seed=seed)
                    t0 = time.process_time()
                    loss = train_with_warmup(model, train_ids, WarmupRunConfig(lr=lr, warmup=warmup,
                                                                               steps=args.steps, seed=seed))
                    runs.append({"norm_position": pos, "lr": lr, "warmup": warmup, "seed": seed,
                                 "loss": loss, "cpu_seconds": time.process_time() - t0})
                    args.out.write_text(json.dumps({"meta": meta, "grad_norms": grads, "runs": runs}))
                    print(f"{pos} lr {lr} warmup {warmup} seed {seed}: last-20 loss "
                          f"{sum(loss[-20:]) / len(loss[-20:]):.3f}", flush=True)


if __name__ == "__main__":
    main()
