"""Chapter 12's longer runs: full fine-tuning against LoRA, a learning-rate sweep per method,
several seeds, subspace similarity, step time and memory. Writes ``llmcourse/data/lora_runs.json``.

The chapter (book/part2/12_lora) runs one seed briefly live; this script runs the comparison
for more steps and seeds and the chapter loads its result. Same model (the course's pretrained
GPT, :func:`llmcourse.gpt.load_pretrained`), same text (Milton, :func:`llmcourse.data.load_text`,
last 10% held out), same targets (``attn.c_attn``, ``attn.c_proj``; plus one method with LoRA
on every linear layer, the MLP included), alpha = 8. What it does, in order:

1. **Learning-rate sweep.** Every method (full fine-tuning, LoRA at each rank, LoRA on all
   linear layers) trains with each learning rate of its grid on ``--sweep-seed``; the rate
   with the lowest final validation loss is that method's rate for the rest. So the gap
   between full fine-tuning and LoRA is not an artefact of a rate chosen for one of them.
2. **Seeds.** Each method at its chosen rate on every other seed (the sweep's run is the
   first seed's). A seed sets the batches and LoRA's random A; every method and rank draws
   its own A (seeded by seed and method, so two ranks never share rows of A).
3. **Subspace similarity** (Hu et al. 2021, section 7.2, Fig. 3): phi between the A matrices
   of the two ``--subspace-ranks`` runs, per seed and adapted matrix, after training and at
   initialisation (the control).
4. **Step time alone**: :func:`llmcourse.peft.step_times`, the methods taking turns (no
   evaluation inside the timing), and the memory of a step (:func:`llmcourse.peft.training_memory`).

Usage (the shipped file; its settings and seconds are in the JSON)::

    .venv/bin/python scripts/lora_runs.py        # one thread

Smoke run (seconds, writes elsewhere)::

    python scripts/lora_runs.py --steps 4 --seeds 0 --ranks 1 --all-linear-rank 0 \\
        --lr-full 5e-4 --lr-lora 3e-3 --eval-iters 1 --timing-rounds 1 --out /tmp/lora_runs_smoke.json
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
ALPHA = 8


def lora_A(model) -> dict:
    return {n: m.lora_A.detach().clone() for n, m in peft.lora_layers(model).items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sweep-seed", type=int, default=None, help="seed of the learning-rate sweep (default: the first)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--all-linear-rank", type=int, default=4,
                   help="also run LoRA of this rank on every linear layer, MLP included (0: skip)")
    p.add_argument("--subspace-ranks", type=int, nargs=2, default=[4, 16])
    p.add_argument("--lr-full", type=float, nargs="+", default=[2.5e-4, 5e-4, 1e-3, 2e-3])
    p.add_argument("--lr-lora", type=float, nargs="+", default=[1.5e-3, 3e-3, 6e-3, 1.2e-2])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-iters", type=int, default=20)
    p.add_argument("--timing-rounds", type=int, default=10)
    p.add_argument("--timing-steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sweep_seed = args.seeds[0] if args.sweep_seed is None else args.sweep_seed
    seeds = [sweep_seed] + [s for s in args.seeds if s != sweep_seed]
    t_start = time.perf_counter()
    base, tok, info = load_pretrained()
    ids = tok.encode(load_text("milton"))
    n = int(0.9 * len(ids))
    train_ids, val_ids = ids[:n], ids[n:]

    def cfg(lr, seed):
        return TrainConfig(max_iters=args.steps, batch_size=args.batch_size, block_size=args.block_size, lr=lr,
                           min_lr=lr / 10, warmup_iters=max(1, args.steps // 10), eval_interval=args.eval_interval,
                           eval_iters=args.eval_iters, seed=seed)

    methods = {"full": (lambda m: m.requires_grad_(True), args.lr_full)}   # name: (make, learning-rate grid)
    methods.update({f"LoRA r={r}": (lambda m, r=r: peft.apply_lora(m, TARGETS, r=r, alpha=ALPHA), args.lr_lora)
                    for r in args.ranks})
    if args.all_linear_rank:
        r = args.all_linear_rank
        methods[f"LoRA r={r}, all linear"] = (lambda m: peft.apply_lora(m, ALL_LINEAR, r=r, alpha=ALPHA),
                                              args.lr_lora)

    def run(index, name, lr, seed):
        torch.manual_seed(1000 * seed + index)              # LoRA's A: its own draw per seed and method
        model = methods[name][0](copy.deepcopy(base))
        init = lora_A(model)
        res = peft.finetune(model, train_ids, val_ids, cfg(lr, seed))
        h = res.pop("history")
        res.update(lr=lr, seed=seed, eval_steps=h.eval_steps, val_curve=h.val_loss)
        print(f"{name:22s} lr {lr:.2e} seed {seed}: val loss {res['val_loss']:.4f}, "
              f"{res['seconds']:.0f} s ({time.perf_counter() - t_start:.0f} s in all)", flush=True)
        return res, {"initial": init, "trained": lora_A(model)}

    out = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "seeds": seeds, "targets": TARGETS, "all_linear_targets": ALL_LINEAR, "alpha": ALPHA,
           "zero_shot_val_loss": estimate_loss(base, val_ids, cfg(0.0, 0)),
           "sweep": {}, "lr": {}, "runs": {}}
    A = {}                                                  # (name, seed) -> initial and trained A
    for index, (name, (_, grid)) in enumerate(methods.items()):
        sweep = {lr: run(index, name, lr, sweep_seed) for lr in grid}
        best = min(grid, key=lambda lr: sweep[lr][0]["val_loss"])
        out["sweep"][name] = [{"lr": lr, "val_loss": sweep[lr][0]["val_loss"], "val_curve": sweep[lr][0]["val_curve"]}
                              for lr in grid]
        out["lr"][name] = best
        res, A[name, sweep_seed] = sweep[best]
        out["runs"][name] = [res]
        for seed in seeds[1:]:
            res, A[name, seed] = run(index, name, best, seed)
            out["runs"][name].append(res)

    r1, r2 = args.subspace_ranks
    n1, n2 = f"LoRA r={r1}", f"LoRA r={r2}"
    if n1 in methods and n2 in methods:
        out["subspace"] = {"ranks": [r1, r2], "matrices": list(A[n1, sweep_seed]["trained"])}
        for when in ("trained", "initial"):                # [seed][matrix][i - 1][j - 1]
            out["subspace"][when] = [[[[round(x, 4) for x in row] for row in
                                       peft.subspace_similarity(A[n1, s][when][m], A[n2, s][when][m]).tolist()]
                                      for m in A[n1, s][when]] for s in seeds]

    timing_cfg = cfg(1e-3, sweep_seed)
    fresh = {}
    for index, name in enumerate(methods):
        torch.manual_seed(index)
        fresh[name] = methods[name][0](copy.deepcopy(base))
    out["step_ms"] = peft.step_times(fresh, train_ids, timing_cfg, rounds=args.timing_rounds,
                                     steps=args.timing_steps)
    out["memory"] = {name: peft.training_memory(m, train_ids, timing_cfg) for name, m in fresh.items()}
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    out["pretrained_info"] = {k: info.get(k) for k in ("val_loss", "iterations", "command", "config")}
    out["n_parameters"] = peft.count_parameters(base, trainable_only=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=None, separators=(",", ":")))
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
