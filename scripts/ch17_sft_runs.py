"""Chapter 17's longer runs: supervised fine-tuning of the pretrained GPT on instructions.

Ouyang et al. (2022), arXiv:2203.02155, step 1 (SFT), on the course's pretrained GPT and
the shipped instruction data (``llmcourse/data/instructions.json.gz``, made by
``scripts/build_instructions.py``): four instruction kinds trained on, two held out. Per
seed, the pretrained model is fine-tuned on the demonstrations (loss on the response tokens
only) and evaluated before and every ``--eval-every`` steps:

- success per instruction kind: greedy responses to 100 held-out examples of each kind,
  exactly right and ended by the end marker;
- the alignment tax: the loss on the held-out Shakespeare (the last 10% of the text, which
  no instruction line comes from), in nats per character;
- the SFT loss on the evaluation examples (response tokens);
- the labeller's preference for the fine-tuned model's responses over the pretrained
  model's (:class:`llmcourse.rlhf.labeller.InstructionLabeller`, expected win rate);

and the responses to one example of each kind, before and after.

Writes ``llmcourse/data/ch17_sft_runs.json`` (settings, seconds and load averages
included). Usage (the shipped file)::

    python scripts/ch17_sft_runs.py --jobs 2          # one seed per process

Smoke run (seconds; writes elsewhere)::

    python scripts/ch17_sft_runs.py --smoke --out /tmp/ch17_smoke.json
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import time
from pathlib import Path

import torch

from llmcourse.data import shakespeare_splits
from llmcourse.gpt import load_pretrained
from llmcourse.rlhf import instructions as I
from llmcourse.rlhf.labeller import InstructionLabeller
from llmcourse.rlhf.sft import SFTData, sft_config, train_sft
from llmcourse.train import TrainConfig, estimate_loss

OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "ch17_sft_runs.json"


def measure(model, tok, evals, sft_eval, val_ids, eval_cfg, base_responses=None, labeller=None) -> dict:
    """Everything the chapter plots, for one model."""
    ev = I.evaluate(model, tok, evals)
    out = {"success": {k: ev.rate(evals, k) for k in I.KINDS}, "ended": {k: ev.rate(evals, k, "ended") for k in I.KINDS},
           "val_loss": estimate_loss(model, val_ids, eval_cfg), "sft_loss": sft_eval.loss(model)}
    if base_responses is not None:
        prompts = [e.prompt for e in evals]
        out["win_rate"] = {k: labeller.win_rate([p for p, e in zip(prompts, evals) if e.kind == k],
                                                [r for r, e in zip(ev.responses, evals) if e.kind == k],
                                                [r for r, e in zip(base_responses, evals) if e.kind == k])
                           for k in I.KINDS}
        out["win_rate_all"] = labeller.win_rate(prompts, ev.responses, base_responses)
    return out, ev.responses


def one_seed(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    model, tok, info = load_pretrained()
    base = copy.deepcopy(model)
    train, evals = I.load_instructions()
    evals = [e for k in I.KINDS for e in [x for x in evals if x.kind == k][:job["n_eval"]]]
    _, _, val_ids = shakespeare_splits()
    eval_cfg = TrainConfig(batch_size=32, block_size=model.config.block_size, eval_iters=job["val_batches"])
    sft_eval = SFTData.from_pairs(tok, evals)
    labeller = InstructionLabeller(job["labeller_temperature"])
    t0 = time.perf_counter()
    before, base_responses = measure(base, tok, evals, sft_eval, val_ids, eval_cfg)
    cfg = sft_config(max_iters=job["steps"], batch_size=job["batch"], lr=job["lr"], min_lr=job["lr"] / 10,
                     warmup_iters=job["warmup"], eval_interval=job["eval_every"], seed=job["seed"])
    data = SFTData.from_pairs(tok, train)
    # train_lm calls `evaluate` after the update of loop step 0, E, 2E, ... and of the last step
    calls = iter([s + 1 for s in range(cfg.max_iters) if s % cfg.eval_interval == 0 or s == cfg.max_iters - 1])
    curve, responses = [dict(step=0, **before)], base_responses

    def evaluate(m):
        nonlocal responses
        updates = next(calls)
        if updates == 1:                                 # one update in: "before" stands for it
            return float("nan")
        r, responses = measure(m, tok, evals, sft_eval, val_ids, eval_cfg, base_responses, labeller)
        curve.append(dict(step=updates, **r))
        return r["sft_loss"]

    hist = train_sft(model, data, cfg, progress=False, evaluate=evaluate)
    shown = {k: next(i for i, e in enumerate(evals) if e.kind == k) for k in I.KINDS}
    return {"seed": job["seed"], "curve": curve, "train_loss": [round(x, 4) for x in hist.train_loss[::10]],
            "examples": {k: {"prompt": evals[i].prompt, "answer": evals[i].answer, "before": base_responses[i],
                             "after": responses[i]} for k, i in shown.items()},
            "seconds": round(time.perf_counter() - t0, 1), "train_seconds": round(hist.seconds, 1),
            "pretrained_val_loss": info.get("val_loss")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--n-eval", type=int, default=100, help="evaluation examples per kind")
    ap.add_argument("--val-batches", type=int, default=50, help="batches of 32 x block_size for the Shakespeare loss")
    ap.add_argument("--labeller-temperature", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.eval_every, args.n_eval, args.val_batches, args.seeds = 4, 4, 2, 2, 2, [0]
    t0, load_before = time.time(), os.getloadavg()
    jobs = [dict(seed=s, steps=args.steps, batch=args.batch, lr=args.lr, warmup=min(args.warmup, args.steps),
                 eval_every=args.eval_every, n_eval=args.n_eval, val_batches=args.val_batches,
                 labeller_temperature=args.labeller_temperature, threads=args.threads) for s in args.seeds]
    if args.jobs > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            runs = pool.map(one_seed, jobs, chunksize=1)
    else:
        runs = [one_seed(j) for j in jobs]
    for r in runs:
        b, a = r["curve"][0], r["curve"][-1]
        print(f"seed {r['seed']}: " + ", ".join(f"{k} {b['success'][k]:.2f}->{a['success'][k]:.2f}" for k in I.KINDS)
              + f"; Shakespeare loss {b['val_loss']:.3f}->{a['val_loss']:.3f}; {r['seconds']:.0f} s", flush=True)
    res = {"about": __doc__.split("\n\n")[0], "settings": {k: v for k, v in vars(args).items() if k != "out"},
           "kinds": list(I.KINDS), "trained": list(I.TRAINED), "held_out": list(I.HELD_OUT),
           "prompt_format": I.PROMPT_FORMAT, "end": I.END, "runs": runs,
           "seconds": round(time.time() - t0, 1), "load_average_before": list(load_before),
           "load_average_after": list(os.getloadavg()), "torch_version": torch.__version__,
           "command": "python scripts/ch17_sft_runs.py " + " ".join(argv if argv is not None else os.sys.argv[1:])}
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) in {res['seconds']:.0f} s")
    return res


if __name__ == "__main__":
    main()
