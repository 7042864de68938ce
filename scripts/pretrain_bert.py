"""Pretrain chapter 6's tiny BERT: ``llmcourse/data/bert_shakespeare.pt``.

A post-LN masked-LM encoder (:class:`llmcourse.mlm.MLMEncoder`, BERT's layout) of the
shipped course GPT's shape (by default its layers, heads and width, read from
``gpt_shakespeare.pt``, and a feed-forward block 4 times as wide, as the GPT's: the same
weights per block, so chapter 6 compares a bidirectional and a left-to-right model of one size),
trained by :func:`llmcourse.mlm.train_budget` on the same text, the first 90% of the shipped
Shakespeare, in windows of 65 characters (a 64-character passage and its [CLS] at
fine-tuning), BERT's corruption of 15% of the positions (:func:`llmcourse.attention.mlm_corrupt`).
The budget is CPU seconds, as in chapter 11: the schedule (warm-up, then linear decay) follows
the spent share of the budget, so the number of steps depends on the machine; ``info`` records
it. The validation loss (masked positions of the held-out last 10%, *The Taming of the Shrew*)
is measured on the weights as stored (float16).

Usage (the shipped file)::

    python scripts/pretrain_bert.py --threads 1

Smoke run::

    python scripts/pretrain_bert.py --seconds 5 --out /tmp/bert_smoke.pt
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from llmcourse.bert import checkpoint, from_checkpoint
from llmcourse.data import shakespeare_splits
from llmcourse.gpt import load_pretrained
from llmcourse.mlm import BudgetConfig, MLMConfig, MLMEncoder, fixed_batches, mlm_loss, train_budget
from llmcourse.train import set_seed

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "bert_shakespeare.pt"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-model", type=int, default=None, help="default: the shipped GPT's width")
    p.add_argument("--n-layers", type=int, default=None, help="default: the shipped GPT's")
    p.add_argument("--n-heads", type=int, default=None, help="default: the shipped GPT's")
    p.add_argument("--d-ff", type=int, default=None, help="default: 4 x d_model, as the GPT's")
    p.add_argument("--seq-len", type=int, default=65)
    p.add_argument("--norm", default="post")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seconds", type=float, default=900.0, help="CPU seconds of training")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--evals", type=int, default=20)
    p.add_argument("--val-batches", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    gpt_cfg = load_pretrained()[0].config                   # the left-to-right model chapter 6 compares with
    args.d_model = args.d_model or gpt_cfg.n_embd
    args.n_layers = args.n_layers or gpt_cfg.n_layer
    args.n_heads = args.n_heads or gpt_cfg.n_head
    args.d_ff = args.d_ff or 4 * args.d_model
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    tok, train_ids, val_ids = shakespeare_splits()
    mask = tok.vocab_size                                  # [MASK] after the characters
    cfg = MLMConfig(vocab_size=tok.vocab_size + 1, seq_len=args.seq_len, d_model=args.d_model,
                    n_layers=args.n_layers, n_heads=args.n_heads, d_ff=args.d_ff, norm=args.norm,
                    dropout=args.dropout)
    model = MLMEncoder(cfg)
    bcfg = BudgetConfig(seconds=args.seconds, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                        weight_decay=args.weight_decay, evals=args.evals, seed=args.seed)
    val = fixed_batches(val_ids, 20, args.batch_size, args.seq_len, mask, cfg.vocab_size, seed=1)
    print(f"BERT {cfg}\n{model.num_params():,} parameters (without positions), budget {args.seconds:.0f} CPU s, "
          f"{args.threads} thread(s), load {os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    run = train_budget(model, train_ids, val, bcfg, mask, progress=args.progress)
    wall = time.perf_counter() - t0
    print(f"{run.steps[-1]} steps, {run.tokens[-1]:,} tokens in {run.seconds[-1]:.0f} CPU s ({wall:.0f} s wall); "
          f"val MLM loss {[round(v, 3) for v in run.val_loss]}", flush=True)

    ckpt = checkpoint(model)
    ckpt["state_dict"] = {k: v.to(torch.float16) for k, v in ckpt["state_dict"].items()}
    stored = from_checkpoint(ckpt)
    final_val = fixed_batches(val_ids, args.val_batches, args.batch_size, args.seq_len, mask, cfg.vocab_size, seed=2)
    val_loss = mlm_loss(stored, final_val)
    print(f"final: val MLM loss {val_loss:.4f} nats/char ({args.val_batches} batches)", flush=True)
    ckpt["chars"] = tok.chars
    ckpt["info"] = {
        "val_loss": val_loss, "parameters": sum(p.numel() for p in model.parameters()),
        "steps": run.steps[-1], "tokens": run.tokens[-1], "cpu_seconds": round(run.seconds[-1], 1),
        "seconds": round(wall, 1), "threads": args.threads, "budget": asdict(bcfg),
        "curve": {"steps": run.steps, "tokens": run.tokens, "cpu_seconds": run.seconds, "val_loss": run.val_loss},
        "eval": {"batches": args.val_batches, "batch_size": args.batch_size, "seq_len": args.seq_len, "seed": 2},
        "torch_version": str(torch.__version__),
        "command": "python scripts/pretrain_bert.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return ckpt["info"]


if __name__ == "__main__":
    main()
