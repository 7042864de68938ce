"""Train the course's pretrained character-level GPT: ``llmcourse/data/gpt_shakespeare.pt``.

The model every later chapter loads with :func:`llmcourse.gpt.load_pretrained`: a small
GPT (Radford et al. 2018; GPT-2 block layout) trained with
:func:`llmcourse.train.train_lm` on the first 90% of the shipped Shakespeare, and
evaluated on the held-out last 10% with many fixed random batches.

Along the way it keeps a few log-spaced **snapshots** of the same run (float16, with
their validation losses) in ``llmcourse/data/gpt_shakespeare_snapshots.pt``, so later
chapters can study behaviour over pretraining: ``load_pretrained(step=...)`` loads one,
``pretrained_steps()`` lists them. A snapshot at step ``s`` is the model after ``s``
optimizer updates. ``info`` also keeps the training loss of every step and the
validation loss measured during training.

Deterministic: every random draw comes from ``--seed`` and the number of torch threads is
set from ``--threads`` (floating-point sums can differ between thread counts, so record
it). The weights are stored as float16 to keep the file small (``GPT.from_checkpoint``
casts them back to float32); the validation loss in ``info`` is measured on the stored
float16 weights, so it is exactly what a reader gets.

Usage (the shipped file, with the defaults; its seconds and settings are in ``info``)::

    python scripts/pretrain_gpt.py --no-progress

Two threads, on a quiet 2-core machine (about 32 minutes). On a machine shared with other
jobs, two torch threads can run about ten times slower per step than one (each parallel
region waits for the thread the scheduler has pre-empted): pass ``--threads 1`` there
(the floating-point sums differ between thread counts, so the weights will too).

Smoke run (seconds, writes elsewhere)::

    python scripts/pretrain_gpt.py --iters 20 --eval-iters 2 --out /tmp/gpt_smoke.pt
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from llmcourse.data import shakespeare_splits
from llmcourse.gpt import GPT, GPTConfig, snapshot_file
from llmcourse.train import TrainConfig, estimate_loss, set_seed, train_lm

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "gpt_shakespeare.pt"


def parse_args(argv=None) -> argparse.Namespace:
    d = GPTConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=d.n_layer)
    p.add_argument("--n-head", type=int, default=d.n_head)
    p.add_argument("--n-embd", type=int, default=d.n_embd)
    p.add_argument("--block-size", type=int, default=d.block_size)
    p.add_argument("--dropout", type=float, default=0.1,
                   help="without it the shipped model overfits: the README has the runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iters", type=int, default=5000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-interval", type=int, default=250,
                   help="evaluate during training every this many steps (20 batches each)")
    p.add_argument("--eval-iters", type=int, default=200,
                   help="batches of the final validation loss")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the shipped run: 2)")
    p.add_argument("--float32", action="store_true", help="store float32 weights (default float16)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--snapshots", type=int, default=4,
                   help="log-spaced intermediate snapshots, from about 1%% of --iters (0: none)")
    p.add_argument("--snapshot-steps", type=int, nargs="+", default=None,
                   help="explicit snapshot steps instead of --snapshots")
    p.add_argument("--print-every", type=int, default=250, help="print a progress line every this many steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the printed lines stay)")
    return p.parse_args(argv)


def snapshot_steps(iters: int, k: int) -> list[int]:
    """``k`` log-spaced steps from about ``iters / 100`` up to (not including) ``iters``,
    rounded to two significant digits: 10,000 steps and k=4 give 100, 320, 1000, 3200."""
    if k <= 0 or iters < 2:
        return []
    raw = np.geomspace(max(1.0, iters / 100), iters, k + 1)[:-1]
    nice = {int(float(f"{x:.2g}")) for x in raw}
    return sorted(s for s in nice if 0 < s < iters)


def to_dtype(state_dict: dict, dtype: torch.dtype) -> dict:
    return {k: v.detach().to(dtype).clone() if v.is_floating_point() else v.detach().clone()
            for k, v in state_dict.items()}


class Monitor:
    """Counts optimizer updates of ``model`` (a global step hook: ``train_lm`` makes the
    optimizer), copies the weights at the snapshot steps, prints a line every ``every`` steps."""

    def __init__(self, model, total: int, steps: list[int], dtype, every: int):
        self.model, self.total, self.steps, self.dtype, self.every = model, total, set(steps), dtype, every
        self.step, self.losses, self.snapshots, self.t0 = 0, [], {}, time.perf_counter()
        self.val_losses = []                              # validation batches since the last line
        self.load = []                                    # (step, 1-minute load average) at each line
        params = {id(p) for p in model.parameters()}
        self.owns = lambda opt: any(id(p) in params for g in opt.param_groups for p in g["params"])
        self.handles = [model.register_forward_hook(self._forward),
                        register_optimizer_step_post_hook(self._after_step)]

    def _forward(self, module, inputs, output):
        if output[1] is not None:                         # eval mode: train_lm's validation passes
            (self.losses if module.training else self.val_losses).append(output[1].item())

    def _after_step(self, opt, args, kwargs):
        if not self.owns(opt):
            return
        self.step += 1
        if self.step in self.steps:
            self.snapshots[self.step] = to_dtype(self.model.state_dict(), self.dtype)
        if self.step % self.every == 0 or self.step == self.total:
            sec = time.perf_counter() - self.t0
            recent = self.losses[-self.every:]
            self.load.append((self.step, round(os.getloadavg()[0], 2)))
            val = f"  val {np.mean(self.val_losses):.3f}" if self.val_losses else ""
            self.val_losses = []
            print(f"step {self.step:>6}/{self.total}  train loss {np.mean(recent):.3f} (last {len(recent)}){val}  "
                  f"{sec:6.0f} s  eta {sec / self.step * (self.total - self.step):5.0f} s  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)

    def close(self):
        for h in self.handles:
            h.remove()


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
    dtype = torch.float32 if args.float32 else torch.float16
    snap_steps = args.snapshot_steps or snapshot_steps(args.iters, args.snapshots)
    snap_steps = sorted({s for s in snap_steps if 0 < s < args.iters})
    print(f"snapshots at steps {snap_steps}; load average {os.getloadavg()[0]:.1f}", flush=True)
    load_before = os.getloadavg()
    monitor = Monitor(model, args.iters, snap_steps, dtype, args.print_every)
    try:
        hist = train_lm(model, train_ids, val_ids, tcfg, progress=not args.no_progress)
    finally:
        monitor.close()
    load_after = os.getloadavg()
    assert monitor.step == args.iters, (monitor.step, args.iters)
    print(f"trained {args.iters} steps in {hist.seconds:.0f} s; "
          f"val loss during training: {[round(v, 3) for v in hist.val_loss]}", flush=True)

    # Every number is measured on the weights as stored (float16 rounding included).
    eval_cfg = TrainConfig(batch_size=args.batch_size, block_size=args.block_size,
                           eval_iters=args.eval_iters)
    train_batches = min(args.eval_iters, 50)              # a rough training loss is enough

    def evaluate(state_dict) -> tuple[float, float]:
        stored = GPT.from_checkpoint({"config": asdict(cfg), "state_dict": state_dict}).eval()
        val = estimate_loss(stored, val_ids, eval_cfg, seed=0)
        train = estimate_loss(stored, train_ids, TrainConfig(batch_size=args.batch_size, block_size=args.block_size,
                                                             eval_iters=train_batches), seed=0)
        return val, train

    t0 = time.perf_counter()
    ckpt = model.checkpoint()
    ckpt["state_dict"] = to_dtype(ckpt["state_dict"], dtype)
    val_loss, train_loss = evaluate(ckpt["state_dict"])
    print(f"final: val loss {val_loss:.4f}, train loss {train_loss:.4f} nats/char "
          f"({args.eval_iters} batches of {args.batch_size}x{args.block_size}, "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)
    snaps = {"config": asdict(cfg), "steps": snap_steps, "val_loss": [], "train_loss": [], "state_dicts": []}
    for step in snap_steps:
        v, t = evaluate(monitor.snapshots[step])
        snaps["val_loss"].append(v)
        snaps["train_loss"].append(t)
        snaps["state_dicts"].append(monitor.snapshots[step])
        print(f"snapshot at step {step}: val loss {v:.4f}, train loss {t:.4f}", flush=True)

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
        "load_average": {"start": [round(x, 2) for x in load_before], "end": [round(x, 2) for x in load_after],
                         "during": monitor.load,
                         "note": "os.getloadavg() (1, 5, 15 min) when training started and ended, and "
                                 "(step, 1-min load) at each progress line: the machine is shared"},
        "parameters": model.num_params(non_embedding=False),
        "val_loss_curve": {"steps": hist.eval_steps, "val_loss": hist.val_loss,
                           "note": f"{tcfg.eval_iters} validation batches at step index s, "
                                   "after s + 1 updates, in float32"},
        "train_loss_curve": {"steps": hist.steps, "train_loss": [round(x, 4) for x in hist.train_loss],
                             "note": "loss of each step's training batch, before that step's update"},
        "snapshots": {"steps": snap_steps, "val_loss": snaps["val_loss"], "train_loss": snaps["train_loss"],
                      "file": snapshot_file(args.out.name),
                      "note": "weights after that many updates, float16; losses measured like val_loss"},
        "weights_dtype": str(dtype).removeprefix("torch."),
        "torch_version": str(torch.__version__),
        "command": "python scripts/pretrain_gpt.py " + " ".join(str(a) for a in (argv or sys.argv[1:])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    snap_out = args.out.with_name(snapshot_file(args.out.name))
    if snap_steps:
        torch.save(snaps, snap_out)
        print(f"wrote {snap_out} ({snap_out.stat().st_size / 1e6:.2f} MB)")
    elif snap_out.exists():
        snap_out.unlink()                                  # stale snapshots of another run
    return ckpt["info"]


if __name__ == "__main__":
    main()
