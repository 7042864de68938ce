"""Chapter 12's longer runs: full fine-tuning against LoRA at ranks 1, 4, 16, over several seeds.

The chapter (book/part2/12_lora) runs one seed for 150 steps live; this script runs the same
comparison for more steps and seeds and writes ``llmcourse/data/lora_runs.json``, which the
chapter loads and plots beside its live run. Same model (the course's pretrained GPT, from
:func:`llmcourse.gpt.load_pretrained`), same text (Milton, :func:`llmcourse.data.load_text`),
same targets (``attn.c_attn``, ``attn.c_proj``; plus one run of rank 4 on every linear layer,
MLP included), alpha = 8, learning rates 5e-4 (full) and
3e-3 (LoRA). The seed sets the batches and LoRA's random A.

Usage (the shipped file; its settings and seconds are in the JSON)::

    python scripts/lora_runs.py --threads 1

Smoke run (seconds, writes elsewhere)::

    python scripts/lora_runs.py --steps 4 --seeds 0 --eval-iters 1 --out /tmp/lora_runs_smoke.json
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from llmcourse import peft
from llmcourse.data import load_text
from llmcourse.gpt import load_pretrained
from llmcourse.train import TrainConfig, estimate_loss

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "lora_runs.json"
TARGETS = ["attn.c_attn", "attn.c_proj"]
ALL_LINEAR = ["c_attn", "c_proj", "c_fc"]          # attention and MLP: every Linear but the tied head


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--all-linear-rank", type=int, default=4,
                   help="also run LoRA of this rank on the MLP layers too (0: skip)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    base, tok, info = load_pretrained()
    ids = tok.encode(load_text("milton"))
    n = int(0.9 * len(ids))
    train_ids, val_ids = ids[:n], ids[n:]

    def cfg(lr, seed):
        return TrainConfig(max_iters=args.steps, batch_size=args.batch_size, block_size=args.block_size, lr=lr,
                           min_lr=lr / 10, warmup_iters=max(1, args.steps // 10), eval_interval=args.eval_interval,
                           eval_iters=args.eval_iters, seed=seed)

    out = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "targets": TARGETS, "all_linear_targets": ALL_LINEAR, "alpha": 8, "lr": {"full": 5e-4, "lora": 3e-3},
           "zero_shot_val_loss": estimate_loss(base, val_ids, cfg(0.0, 0)), "runs": {}}
    methods = {"full": (lambda m: m.requires_grad_(True), 5e-4)}
    methods.update({f"LoRA r={r}": (lambda m, r=r: peft.apply_lora(m, TARGETS, r=r, alpha=8), 3e-3)
                    for r in args.ranks})
    if args.all_linear_rank:
        r = args.all_linear_rank
        methods[f"LoRA r={r}, all linear"] = (lambda m: peft.apply_lora(m, ALL_LINEAR, r=r, alpha=8), 3e-3)
    for name, (make, lr) in methods.items():
        for seed in args.seeds:
            torch.manual_seed(1000 * seed + 7)                  # LoRA's A: independent per seed and rank
            model = make(copy.deepcopy(base))
            res = peft.finetune(model, train_ids, val_ids, cfg(lr, seed))
            h = res.pop("history")
            res.update(eval_steps=h.eval_steps, val_curve=h.val_loss, seed=seed)
            out["runs"].setdefault(name, []).append(res)
            print(f"{name:10s} seed {seed}: val loss {res['val_loss']:.4f}, {res['seconds']:.0f} s", flush=True)
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    out["pretrained_info"] = {k: info.get(k) for k in ("val_loss", "iterations", "command")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
