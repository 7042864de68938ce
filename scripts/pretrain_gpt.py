"""Train the course's pretrained character-level GPT: ``llmcourse/data/gpt_shakespeare.pt``.

The model every later chapter loads with :func:`llmcourse.gpt.load_pretrained`: a small
GPT (Radford et al. 2018; GPT-2 block layout) trained with
:func:`llmcourse.train.train_lm` on the first 90% of the shipped Shakespeare, and
evaluated on the held-out last 10% with many fixed random batches.

Deterministic: every random draw comes from ``--seed`` and the number of torch threads is
set from ``--threads`` (floating-point sums can differ between thread counts, so record
it). The weights are stored as float16 to keep the file small (``GPT.from_checkpoint``
casts them back to float32); the validation loss in ``info`` is measured on the stored
float16 weights, so it is exactly what a reader gets.

Usage (the shipped file; its seconds and settings are in ``info``)::

    python scripts/pretrain_gpt.py --threads 1

One thread on purpose: on a 2-core machine shared with other jobs, two torch threads
ran about ten times slower per step than one (each parallel region waits for the thread
the scheduler has pre-empted). On a quiet machine ``--threads 2`` is faster.

Smoke run (seconds, writes elsewhere)::

    python scripts/pretrain_gpt.py --iters 20 --eval-iters 2 --out /tmp/gpt_smoke.pt
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from llmcourse.data import shakespeare_splits
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.train import TrainConfig, estimate_loss, set_seed, train_lm

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "gpt_shakespeare.pt"


def parse_args(argv=None) -> argparse.Namespace:
    d = GPTConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=d.n_layer)
    p.add_argument("--n-head", type=int, default=d.n_head)
    p.add_argument("--n-embd", type=int, default=d.n_embd)
    p.add_argument("--block-size", type=int, default=d.block_size)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iters", type=int, default=3500)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-interval", type=int, default=500,
                   help="evaluate during training every this many steps (20 batches each)")
    p.add_argument("--eval-iters", type=int, default=200,
                   help="batches of the final validation loss")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--float32", action="store_true", help="store float32 weights (default float16)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    set_seed(args.seed)                                   # model initialisation
    tok, train_ids, val_ids = shakespeare_splits()
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                    n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    model = GPT(cfg)
    tcfg = TrainConfig(max_iters=args.iters, batch_size=args.batch_size, block_size=args.block_size,
                       lr=args.lr, min_lr=args.min_lr, warmup_iters=args.warmup,
                       weight_decay=args.weight_decay, eval_interval=args.eval_interval,
                       eval_iters=20, seed=args.seed)
    print(f"GPT {cfg}\n{model.num_params():,} parameters (non-embedding), "
          f"{len(train_ids):,} training / {len(val_ids):,} validation characters, "
          f"{args.threads} thread(s)", flush=True)
    hist = train_lm(model, train_ids, val_ids, tcfg, progress=not args.no_progress)
    print(f"trained {args.iters} steps in {hist.seconds:.0f} s; "
          f"val loss during training: {[round(v, 3) for v in hist.val_loss]}", flush=True)

    ckpt = model.checkpoint()
    dtype = torch.float32 if args.float32 else torch.float16
    ckpt["state_dict"] = {k: v.to(dtype) if v.is_floating_point() else v
                          for k, v in ckpt["state_dict"].items()}
    # The final number is measured on the weights as stored (float16 rounding included).
    stored = GPT.from_checkpoint(ckpt).eval()
    eval_cfg = TrainConfig(batch_size=args.batch_size, block_size=args.block_size,
                           eval_iters=args.eval_iters)
    t0 = time.perf_counter()
    val_loss = estimate_loss(stored, val_ids, eval_cfg, seed=0)
    eval_cfg.eval_iters = min(args.eval_iters, 50)        # a rough training loss is enough
    train_loss = estimate_loss(stored, train_ids, eval_cfg, seed=0)
    print(f"final: val loss {val_loss:.4f}, train loss {train_loss:.4f} nats/char "
          f"({args.eval_iters} batches of {args.batch_size}x{args.block_size}, "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)

    ckpt["chars"] = tok.chars
    ckpt["info"] = {
        "val_loss": val_loss,
        "train_loss": train_loss,
        "eval": {"batches": args.eval_iters, "train_loss_batches": min(args.eval_iters, 50),
                 "batch_size": args.batch_size, "block_size": args.block_size, "seed": 0,
                 "how": "llmcourse.train.estimate_loss on the last 10% of the text"},
        "train": asdict(tcfg),
        "iterations": args.iters,
        "seconds": round(hist.seconds, 1),
        "threads": args.threads,
        "val_loss_curve": {"steps": hist.eval_steps, "val_loss": hist.val_loss},
        "weights_dtype": str(dtype).removeprefix("torch."),
        "torch_version": str(torch.__version__),
        "command": "python scripts/pretrain_gpt.py " + " ".join(argv or __import__("sys").argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return ckpt["info"]


if __name__ == "__main__":
    main()
