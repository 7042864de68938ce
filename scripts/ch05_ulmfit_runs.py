"""Chapter 5's shipped runs: ULMFiT against training from scratch, and the ablation of its tricks.

Writes ``llmcourse/data/ch05_ulmfit_runs.json`` (Howard and Ruder 2018, arXiv:1801.06146):

1. **Target-LM fine-tuning** (section 3.2): the pretrained LSTM (``lstm_shakespeare.pt``)
   trained further on the task's own text, the 3,000 training passages without their
   labels ("semi-supervised", as the paper's IMDb runs that use unlabelled reviews), with
   discriminative rates and the slanted triangular schedule. The language-model loss on
   the test passages is measured before and after.
2. **Learning rates**, one per method, the best of a small grid on 300 labelled passages
   scored on 500 held-out training passages (``TextTask.validation_split``; never the test set).
3. **Accuracy against the number of labelled passages** (the paper's Fig. 3): from scratch
   (the same network, random weights, every layer trained from the start at one rate),
   ULMFiT "supervised" (target-LM fine-tuning on the labelled passages only) and ULMFiT
   "semi-supervised" (on all training passages), over seeds; a seed draws the labelled
   passages, the batches and the new head.
4. **Ablation** (the paper's section 5, "Impact of classifier fine-tuning", in the form "one trick removed"): the semi-supervised
   recipe without gradual unfreezing, without discriminative rates, without the slanted
   triangular schedule (a constant rate), and without all three.

Usage (the shipped file; both cores, two processes of one thread)::

    python scripts/ch05_ulmfit_runs.py --jobs 2

Smoke run::

    python scripts/ch05_ulmfit_runs.py --smoke --lstm /tmp/lstm_smoke.pt --out /tmp/ch05_smoke.json
"""
from __future__ import annotations

import argparse
import copy
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch

from llmcourse.classify import (FineTuneConfig, best_lr, encode, finetune_lm, fit_and_score, lm_scores,
                                load_authorship, save_runs)
from llmcourse.train import set_seed
from llmcourse.ulmfit import LSTMClassifier, LSTMLM, load_pretrained_lstm

OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "ch05_ulmfit_runs.json"

# The recipes (FineTuneConfig fields). ULMFiT's: discriminative rates (2.6), STLR (cut_frac 0.1,
# ratio 32), gradual unfreezing (one more group every UNFREEZE steps, top first).
STEPS, BATCH, UNFREEZE = 150, 16, 20
RECIPES = {
    "ULMFiT": dict(discriminative=2.6, schedule="stlr", unfreeze_every=UNFREEZE),
    "from scratch": dict(discriminative=1.0, schedule="stlr", unfreeze_every=0),
}
ABLATION = {
    "no gradual unfreezing": dict(discriminative=2.6, schedule="stlr", unfreeze_every=0),
    "no discriminative rates": dict(discriminative=1.0, schedule="stlr", unfreeze_every=UNFREEZE),
    "no slanted triangular rate (constant)": dict(discriminative=2.6, schedule="constant", unfreeze_every=UNFREEZE),
    "none of the three": dict(discriminative=1.0, schedule="constant", unfreeze_every=0),
}
LM_STEPS, LM_BATCH, LM_BLOCK, LM_LR = 300, 32, 64, 3e-3


def lm_config(steps: int = LM_STEPS) -> FineTuneConfig:
    return FineTuneConfig(steps=steps, batch_size=LM_BATCH, lr=LM_LR, discriminative=2.6, schedule="stlr", seed=0)


def text_ids(tok, texts) -> torch.Tensor:
    """The passages as one stream, separated by newlines (the language model's own format)."""
    return tok.encode("\n".join(texts))


def classifier(kind: str, lm_state: dict, lm_cfg, seed: int) -> LSTMClassifier:
    torch.manual_seed(1000 + seed)                       # the head's (and a scratch model's) initialisation
    lm = LSTMLM(lm_cfg)
    if kind != "from scratch":
        lm.load_state_dict(lm_state)
    return LSTMClassifier(lm, 2)


def run_job(job: dict) -> dict:
    """One fine-tuning run: a method (or ablation variant), a number of labels, a seed."""
    torch.set_num_threads(1)
    task, tok = load_authorship(), job["tok"]
    lm_state = job["lm_state"]
    if job.get("supervised_lm"):                         # target-LM fine-tuning on the labelled passages only
        lm = LSTMLM(job["lm_cfg"])
        lm.load_state_dict(lm_state)
        texts, _ = task.labelled(job["n"], job["seed"])
        steps = max(10, min(LM_STEPS, round(2 * job["n"] * 64 / (LM_BATCH * LM_BLOCK))))   # about two epochs
        finetune_lm(lm, text_ids(tok, texts), lm_config(steps), LM_BLOCK, progress=False)
        lm_state = lm.state_dict()
    model = classifier(job["kind"], lm_state, job["lm_cfg"], job["seed"])
    cfg = FineTuneConfig(steps=job["steps"], batch_size=BATCH, lr=job["lr"], **job["recipe"])
    if job.get("validation"):                            # learning-rate grid: score on held-out training passages
        task = task.validation_split()
    out = fit_and_score(model, task, tok, job["n"], cfg, seed=job["seed"])
    return {**job["meta"], **out}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 300, 1000, 3000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ablation-sizes", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--lstm", type=Path, default=None, help="another checkpoint of scripts/pretrain_lstm.py")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny settings, for the test suite")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.seeds, args.ablation_sizes, args.lrs, args.steps = [20], [0], [20], [3e-3], 4
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    set_seed(0)
    task = load_authorship()
    lm, tok, lm_info = load_pretrained_lstm(args.lstm)

    # 1. target-LM fine-tuning on the unlabelled training passages
    test_x = encode(tok, task.test_text)
    before = -lm_scores(lm, test_x).mean().item()
    target = copy.deepcopy(lm)
    lm_run = finetune_lm(target, text_ids(tok, task.train_text), lm_config(4 if args.smoke else LM_STEPS), LM_BLOCK,
                         progress=False)
    after = -lm_scores(target, test_x).mean().item()
    print(f"target-LM fine-tuning: test passages {before:.3f} -> {after:.3f} nats/char ({lm_run.seconds:.0f} s)",
          flush=True)
    general, semi = lm.state_dict(), target.state_dict()

    def job(kind, recipe, n, seed, lr, state, supervised=False, **meta):
        return {"kind": kind, "recipe": recipe, "n": n, "seed": seed, "lr": lr, "tok": tok, "lm_cfg": lm.cfg,
                "lm_state": state, "supervised_lm": supervised, "steps": args.steps,
                "meta": {"method": kind, "lr": lr, **meta}}

    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    run_all = (lambda jobs: list(pool.map(run_job, jobs))) if pool else (lambda jobs: [run_job(j) for j in jobs])

    # 2. one learning rate per method, on held-out training passages (TextTask.validation_split)
    n_tr = 40 if args.smoke else 300
    sweep_jobs = [{**job(kind, RECIPES[kind], n_tr, 0, lr, semi if kind == "ULMFiT" else general), "validation": True}
                  for kind in RECIPES for lr in args.lrs]
    sweep = run_all(sweep_jobs)
    best = best_lr(sweep)
    print(f"learning rates: {best}", flush=True)

    # 3. the learning curves (paper Fig. 3) and 4. the ablation (paper Table 6)
    jobs = []
    for n in args.sizes:
        for seed in args.seeds:
            jobs.append(job("from scratch", RECIPES["from scratch"], n, seed, best["from scratch"], general))
            jobs.append(job("ULMFiT", RECIPES["ULMFiT"], n, seed, best["ULMFiT"], general, supervised=True,
                            method_label="ULMFiT, supervised"))
            jobs.append(job("ULMFiT", RECIPES["ULMFiT"], n, seed, best["ULMFiT"], semi,
                            method_label="ULMFiT, semi-supervised"))
    for n in args.ablation_sizes:
        for seed in args.seeds:
            for name, recipe in ABLATION.items():
                jobs.append(job("ULMFiT", recipe, n, seed, best["ULMFiT"], semi, method_label=name, ablation=True))
    results = run_all(jobs)
    if pool:
        pool.shutdown()
    for r in results:
        r["method"] = r.pop("method_label", r["method"])
    curve = [r for r in results if not r.get("ablation")]
    ablation = [r for r in results if r.pop("ablation", False)]
    for r in curve:
        print(f"{r['method']:26s} n={r['n']:5d} seed {r['seed']}: {r['accuracy']:.3f}", flush=True)
    data = {
        "settings": {"sizes": args.sizes, "seeds": args.seeds, "ablation_sizes": args.ablation_sizes,
                     "steps": args.steps, "batch_size": BATCH, "unfreeze_every": UNFREEZE, "recipes": RECIPES,
                     "ablation": ABLATION, "lr_grid": args.lrs, "lr": best, "sweep_labelled": n_tr,
                     "sweep_valid": 500,
                     "target_lm": {**asdict(lm_config(LM_STEPS)), "block_size": LM_BLOCK,
                                   "supervised_steps": "about two epochs of the labelled passages, 10 to 300 steps"}},
        "lm": {"pretrained_val_loss": lm_info.get("val_loss"), "test_loss_before": before, "test_loss_after": after,
               "target_lm_seconds": round(lm_run.seconds, 1), "target_lm_loss": lm_run.loss},
        "sweep": sweep, "curve": curve, "ablation": ablation,
    }
    return save_runs(args.out, data, t_start, args.jobs)


if __name__ == "__main__":
    main()
