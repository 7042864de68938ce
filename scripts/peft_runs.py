"""Chapter 13's longer runs: five PEFT methods and full fine-tuning on the same model and text,
a learning-rate sweep per method, several seeds, memory, step time and inference latency.
Writes ``llmcourse/data/peft_runs.json``.

The chapter (book/part2/13_peft) reruns a short single-seed version live and loads this file
for its ranking. Same model and text as chapter 12 (the course's pretrained GPT fine-tuned on
Milton, last 10% held out). Methods (``METHODS``): full fine-tuning; LoRA r = 4 on the
attention matrices; bottleneck adapters (16) after both sublayers; prompt tuning (16 virtual
tokens from random characters' embeddings, **no weight decay on the prompt**, as none on the
other methods' vectors); (IA)^3; BitFit. Every method trains with AdamW (weight decay 0.1 on
matrices only, as :func:`llmcourse.train.make_optimizer` does), a cosine schedule, and:

1. **a learning-rate sweep** on ``--sweep-seed``: each rate of the method's grid; the lowest
   final validation loss picks the method's rate (the rates are ours, not the papers');
2. **seeds**: every other seed at that rate (a seed sets the batches and the random
   initialisations);
3. **measurements** on fresh models: trainable parameters, the bytes a training step holds
   (:func:`llmcourse.peft.training_memory`), milliseconds per training step alone
   (:func:`llmcourse.peft.step_times`) and per inference forward pass (the models take turns).

Usage (the shipped file; settings and seconds are in the JSON)::

    .venv/bin/python scripts/peft_runs.py              # one thread; run alone, the times are measured

Smoke run::

    python scripts/peft_runs.py --steps 4 --seeds 0 --grid-size 1 --eval-iters 1 --timing-rounds 1 \\
        --out /tmp/peft_runs_smoke.json
"""
from __future__ import annotations

import argparse
import copy
import json
import time
import timeit
from pathlib import Path

import numpy as np
import torch

from llmcourse import peft
from llmcourse.data import load_text
from llmcourse.gpt import load_pretrained
from llmcourse.train import TrainConfig, estimate_loss, make_optimizer

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "peft_runs.json"

# name: (make from a fresh copy of the pretrained GPT, branch of the taxonomy, learning-rate grid,
#        weight decay: None = the TrainConfig default on matrices)
METHODS = {
    "full fine-tuning": (lambda m: m.requires_grad_(True), "all", [1.5e-4, 5e-4, 1.5e-3], None),
    "LoRA r=4": (lambda m: peft.apply_lora(m, ["attn.c_attn", "attn.c_proj"], r=4, alpha=8), "reparametrised",
                 [1e-3, 3e-3, 1e-2], None),
    "adapters (16)": (lambda m: peft.apply_adapters(m, bottleneck=16), "additive", [1e-3, 3e-3, 1e-2], None),
    "prompt tuning (16)": (lambda m: peft.PromptTuning(m, n_prompt=16), "additive", [3e-3, 1e-2, 3e-2], 0.0),
    "(IA)³": (lambda m: peft.apply_ia3(m), "additive", [3e-3, 1e-2, 3e-2], None),
    "BitFit": (lambda m: peft.apply_bitfit(m), "selective", [1e-3, 3e-3, 1e-2], None),
}


def make_cfg(lr: float, seed: int, weight_decay, steps: int, eval_interval: int, eval_iters: int,
             batch_size: int = 8, block_size: int = 64) -> TrainConfig:
    """The chapter's training configuration (also used by its live run)."""
    extra = {} if weight_decay is None else {"weight_decay": weight_decay}
    return TrainConfig(max_iters=steps, batch_size=batch_size, block_size=block_size, lr=lr, min_lr=lr / 10,
                       warmup_iters=max(1, steps // 10), eval_interval=eval_interval, eval_iters=eval_iters,
                       seed=seed, **extra)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--grid-size", type=int, default=3, help="rates per grid, taken from its middle (1: the middle rate only)")
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-iters", type=int, default=20)
    p.add_argument("--timing-rounds", type=int, default=10)
    p.add_argument("--timing-steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    base, tok, info = load_pretrained()
    ids = tok.encode(load_text("milton"))
    n = int(0.9 * len(ids))
    train_ids, val_ids = ids[:n], ids[n:]
    seeds = args.seeds

    def cfg(name, lr, seed):
        return make_cfg(lr, seed, METHODS[name][3], args.steps, args.eval_interval, args.eval_iters)

    def grid(name):
        g = METHODS[name][2]
        k = (len(g) - args.grid_size) // 2
        return g[k:k + args.grid_size]

    def run(index, name, lr, seed):
        torch.manual_seed(1000 * seed + index)              # the method's random initialisation
        model = METHODS[name][0](copy.deepcopy(base))
        res = peft.finetune(model, train_ids, val_ids, cfg(name, lr, seed))
        h = res.pop("history")
        res.update(lr=lr, seed=seed, eval_steps=h.eval_steps, val_curve=h.val_loss)
        print(f"{name:20s} lr {lr:.1e} seed {seed}: val loss {res['val_loss']:.4f}, {res['seconds']:.0f} s "
              f"({time.perf_counter() - t_start:.0f} s in all)", flush=True)
        return res

    zero = cfg("full fine-tuning", 0.0, 0)
    out = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "seeds": seeds, "zero_shot_val_loss": estimate_loss(base, val_ids, zero),
           "n_parameters": peft.count_parameters(base, trainable_only=False),
           "branch": {k: v[1] for k, v in METHODS.items()},
           "sweep": {}, "lr": {}, "runs": {}}
    for index, name in enumerate(METHODS):
        sweep = {lr: run(index, name, lr, seeds[0]) for lr in grid(name)}
        best = min(sweep, key=lambda lr: sweep[lr]["val_loss"])
        out["sweep"][name] = [{"lr": lr, "val_loss": r["val_loss"]} for lr, r in sweep.items()]
        out["lr"][name] = best
        out["runs"][name] = [sweep[best]] + [run(index, name, best, s) for s in seeds[1:]]

    fresh = {}
    for index, name in enumerate(METHODS):
        torch.manual_seed(index)
        fresh[name] = METHODS[name][0](copy.deepcopy(base))
    tcfg = cfg("full fine-tuning", 1e-3, seeds[0])
    out["decayed_parameters"] = {                           # trainable parameters AdamW decays, per method
        name: sum(p.numel() for g in make_optimizer(m, cfg(name, 1e-3, 0)).param_groups if g["weight_decay"] > 0
                  for p in g["params"]) for name, m in fresh.items()}
    out["memory"] = {name: peft.training_memory(m, train_ids, tcfg) for name, m in fresh.items()}
    out["step_ms"] = peft.step_times(fresh, train_ids, tcfg, rounds=args.timing_rounds, steps=args.timing_steps)
    x = val_ids[: tcfg.batch_size * tcfg.block_size].view(tcfg.batch_size, tcfg.block_size)
    models = {"base (no method)": base, **fresh}
    out["forward_ms"] = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m.eval()(x)                                      # warm-up
        for _ in range(args.timing_rounds):                 # interleaved: load drifts hit all alike
            for k, m in models.items():
                out["forward_ms"][k].append(timeit.timeit(lambda: m(x), number=args.timing_steps)
                                            / args.timing_steps * 1000)
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    out["pretrained_info"] = {k: info.get(k) for k in ("val_loss", "iterations", "command")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, separators=(",", ":")))
    finals = {k: np.mean([r["val_loss"] for r in v]) for k, v in out["runs"].items()}
    print("mean final validation loss:", {k: round(v, 3) for k, v in finals.items()})
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
