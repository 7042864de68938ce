"""Chapter 7's shipped runs: GPT-1 fine-tuned with and without the auxiliary LM loss, and zero-shot
scores against pretraining steps.

Writes ``llmcourse/data/ch07_gpt1_runs.json`` (Radford et al. 2018, "Improving Language
Understanding by Generative Pre-Training"):

1. **Zero-shot against pretraining** (the paper's Fig. 2, right): GPT-1's heuristic for a
   two-class task (section 5: the average log-probability of a passage, thresholded; here at the
   median over the unlabelled training passages, Shakespeare above) measured on every
   pretraining snapshot shipped with the course's GPT (``llmcourse.gpt.pretrained_steps``), on
   a fresh initialisation (step 0), and copied from the LSTM's pretraining record
   (``lstm_shakespeare.pt``, measured the same way by ``scripts/pretrain_lstm.py``).
2. **Learning rates**, one per method, the best of a small grid on 300 labelled passages
   scored on 500 held-out training passages (never the test set).
3. **Fine-tuning** (section 3.2, Table 5's ablation): the pretrained GPT with <s>, $ and a
   linear head, trained with the auxiliary language-model loss (λ = 0.5, equation 5) and
   without it (λ = 0), and the same network from fresh weights, over labelled-set sizes
   and seeds; every layer trains, with a linear warm-up then linear decay (section 4.1).

Usage (the shipped file; after the pretrained GPT with its snapshots has landed; two
processes of one thread)::

    python scripts/ch07_gpt1_runs.py --jobs 2

Smoke run::

    python scripts/ch07_gpt1_runs.py --smoke --out /tmp/ch07_smoke.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from llmcourse import gpt as gptmod
from llmcourse.classify import (best_lr, encode, lm_scores, load_authorship, run_jobs, save_runs,
                                zero_shot_accuracy)
from llmcourse.data import data_path
from llmcourse.gpt import GPT

OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "ch07_gpt1_runs.json"
STEPS, BATCH = 150, 16
METHODS = {"GPT-1, λ = 0.5": (True, 0.5), "GPT-1, λ = 0": (True, 0.0), "from scratch": (False, 0.0)}


def zero_shot(model, tok, task) -> dict:
    threshold = lm_scores(model, encode(tok, task.train_text)).median().item()      # no labels used
    acc = zero_shot_accuracy(lm_scores(model, encode(tok, task.test_text)), task.test_y, threshold)
    return {"accuracy": acc, "threshold": threshold}


def zero_shot_curve(smoke: bool) -> dict:
    task = load_authorship()
    if smoke:
        task.train_text, task.test_text, task.test_y = task.train_text[:40], task.test_text[:40], task.test_y[:40]
    steps = gptmod.pretrained_steps() if hasattr(gptmod, "pretrained_steps") else [None]
    rows = []
    final, tok, info = gptmod.load_pretrained()
    torch.manual_seed(int(info.get("train", {}).get("seed", 0)))
    fresh = GPT(final.config).eval()
    rows.append({"step": 0, "val_loss": None, **zero_shot(fresh, tok, task)})
    for step in steps:
        model, _, sinfo = gptmod.load_pretrained() if step is None else gptmod.load_pretrained(step=step)
        rows.append({"step": int(sinfo.get("step", sinfo.get("iterations", 0))), "val_loss": sinfo.get("val_loss"),
                     **zero_shot(model, tok, task)})
        print(f"GPT step {rows[-1]['step']}: zero-shot accuracy {rows[-1]['accuracy']:.3f}", flush=True)
    lstm = None
    if data_path("lstm_shakespeare.pt").is_file():
        from llmcourse.ulmfit import load_pretrained_lstm
        lstm = load_pretrained_lstm()[2].get("zero_shot")
    return {"gpt": rows, "lstm": lstm, "snapshots": steps != [None]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 300, 1000, 3000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny settings, for the test suite")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.seeds, args.lrs, args.steps = [20], [0], [1e-3], 3
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    zero = zero_shot_curve(args.smoke)

    def job(method, n, seed, lr, **kw):
        pretrained, aux = METHODS[method]
        return {"build": "llmcourse.gpt1:classifier", "build_args": {"pretrained": pretrained}, "n": n, "seed": seed,
                "cfg": {"steps": args.steps, "batch_size": BATCH, "lr": lr, "schedule": "linear", "warmup": 0.1,
                        "aux_lm": aux},
                "meta": {"method": method, "lr": lr, "aux_lm": aux}, **kw}

    sweep = run_jobs([job(m, 40 if args.smoke else 300, 0, lr, validation=True) for m in METHODS for lr in args.lrs],
                     args.jobs)
    lr = best_lr(sweep)
    print(f"learning rates: {lr}", flush=True)
    curve = run_jobs([job(m, n, s, lr[m]) for n in args.sizes for s in args.seeds for m in METHODS], args.jobs)
    for r in curve:
        print(f"{r['method']:16s} n={r['n']:5d} seed {r['seed']}: {r['accuracy']:.3f}", flush=True)
    _, _, info = gptmod.load_pretrained()
    data = {
        "settings": {"sizes": args.sizes, "seeds": args.seeds, "steps": args.steps, "batch_size": BATCH,
                     "schedule": "linear", "warmup": 0.1, "lr_grid": args.lrs, "lr": lr, "methods": list(METHODS),
                     "sweep_labelled": 300, "sweep_valid": 500},
        "gpt": {"val_loss": info.get("val_loss"), "iterations": info.get("iterations"), "seconds": info.get("seconds")},
        "zero_shot": zero, "sweep": sweep, "curve": curve,
    }
    return save_runs(args.out, data, t_start, args.jobs)


if __name__ == "__main__":
    main()
