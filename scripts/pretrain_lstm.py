"""Pretrain chapter 5's LSTM language model: ``llmcourse/data/lstm_shakespeare.pt``.

ULMFiT's first stage (Howard and Ruder 2018, section 3.1) in miniature: the AWD-style
:class:`llmcourse.ulmfit.LSTMLM` trained with :func:`llmcourse.train.train_lm` on the same
text as the course's GPT, the first 90% of the shipped Shakespeare, and evaluated on the
held-out last 10% (*The Taming of the Shrew*).

Along the way, at a few log-spaced steps, it measures GPT-1's zero-shot heuristic on the
authorship task of :mod:`llmcourse.classify` (the average log-probability of a passage,
thresholded at the median over the unlabelled training passages: Shakespeare above, Milton
below), so that chapter 7 can draw the LSTM's curve beside the Transformer's, as Radford
et al. do in their Fig. 2 (right). Only those numbers are kept, not the intermediate weights.

Deterministic for a given ``--threads``. Weights stored as float16 (the validation loss in
``info`` is measured on them).

Usage (the shipped file)::

    python scripts/pretrain_lstm.py --threads 1

Smoke run::

    python scripts/pretrain_lstm.py --iters 20 --eval-iters 2 --zero-shot-steps 10 --out /tmp/lstm_smoke.pt
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from llmcourse.classify import encode, lm_scores, load_authorship, zero_shot_accuracy
from llmcourse.data import shakespeare_splits
from llmcourse.train import TrainConfig, estimate_loss, set_seed, train_lm
from llmcourse.ulmfit import LSTMConfig, LSTMLM

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "lstm_shakespeare.pt"


def parse_args(argv=None) -> argparse.Namespace:
    d = LSTMConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--emb", type=int, default=d.emb)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--n-layers", type=int, default=d.n_layers)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--eval-interval", type=int, default=500)
    p.add_argument("--eval-iters", type=int, default=100, help="batches of the final validation loss")
    p.add_argument("--zero-shot-steps", type=int, nargs="*", default=[30, 100, 300, 1000],
                   help="steps at which to measure the zero-shot score (and at the end)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


class ZeroShot:
    """The zero-shot score at chosen optimizer steps (a global step hook: ``train_lm`` makes the optimizer)."""

    def __init__(self, model, tok, steps):
        task = load_authorship()
        self.model, self.steps, self.step = model, set(steps), 0
        self.pool, self.test, self.test_y = encode(tok, task.train_text), encode(tok, task.test_text), task.test_y
        self.record = {"steps": [], "accuracy": [], "threshold": []}
        self.handle = register_optimizer_step_post_hook(self._after_step)

    def measure(self, step: int) -> None:
        was = self.model.training
        threshold = lm_scores(self.model, self.pool).median().item()     # no labels used
        acc = zero_shot_accuracy(lm_scores(self.model, self.test), self.test_y, threshold)
        self.model.train(was)
        self.record["steps"].append(step)
        self.record["accuracy"].append(acc)
        self.record["threshold"].append(threshold)
        print(f"step {step}: zero-shot accuracy {acc:.3f}", flush=True)

    def _after_step(self, opt, args, kwargs):
        self.step += 1
        if self.step in self.steps:
            self.measure(self.step)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    set_seed(args.seed)                                   # model initialisation
    tok, train_ids, val_ids = shakespeare_splits()
    cfg = LSTMConfig(vocab_size=tok.vocab_size, emb=args.emb, hidden=args.hidden, n_layers=args.n_layers,
                     dropout=args.dropout)
    model = LSTMLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    tcfg = TrainConfig(max_iters=args.iters, batch_size=args.batch_size, block_size=args.block_size, lr=args.lr,
                       min_lr=args.min_lr, warmup_iters=args.warmup, weight_decay=args.weight_decay,
                       eval_interval=args.eval_interval, eval_iters=20, seed=args.seed)
    print(f"LSTM {cfg}\n{n_params:,} parameters, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}", flush=True)
    zero = ZeroShot(model, tok, args.zero_shot_steps)
    zero.measure(0)
    hist = train_lm(model, train_ids, val_ids, tcfg, progress=not args.no_progress)
    zero.handle.remove()
    print(f"trained {args.iters} steps in {hist.seconds:.0f} s; val loss: {[round(v, 3) for v in hist.val_loss]}",
          flush=True)

    ckpt = model.checkpoint()
    ckpt["state_dict"] = {k: v.to(torch.float16) for k, v in ckpt["state_dict"].items()}
    stored = LSTMLM.from_checkpoint(ckpt).eval()          # measured as stored
    zero.model = stored
    zero.measure(args.iters)
    eval_cfg = TrainConfig(batch_size=args.batch_size, block_size=args.block_size, eval_iters=args.eval_iters)
    val_loss = estimate_loss(stored, val_ids, eval_cfg, seed=0)
    print(f"final: val loss {val_loss:.4f} nats/char", flush=True)
    ckpt["chars"] = tok.chars
    ckpt["info"] = {
        "val_loss": val_loss, "parameters": n_params, "train": asdict(tcfg), "iterations": args.iters,
        "seconds": round(hist.seconds, 1), "threads": args.threads,
        "eval": {"batches": args.eval_iters, "batch_size": args.batch_size, "block_size": args.block_size},
        "val_loss_curve": {"steps": hist.eval_steps, "val_loss": hist.val_loss},
        "zero_shot": zero.record, "torch_version": str(torch.__version__),
        "command": "python scripts/pretrain_lstm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return ckpt["info"]


if __name__ == "__main__":
    main()
