"""Chapter 6's shipped runs: what the right-hand context buys, and fine-tuning through [CLS].

Writes ``llmcourse/data/ch06_bert_runs.json`` (Devlin et al. 2018, arXiv:1810.04805):

1. **Blanked words** (the case for a bidirectional model, section 3.1): words of 3 to 10
   letters blanked in 64-character windows of the held-out text (*The Taming of the Shrew*,
   read by neither model in pretraining), restored by the pretrained encoder
   (``bert_shakespeare.pt``) seeing both sides, by the same encoder seeing only the left side,
   and by the course's left-to-right GPT of the same size (``gpt_shakespeare.pt``), greedily.
   Every model is told the word's length. The encoder fills the word's letters one at a time,
   the surest first (as the GPT sees its own earlier letters), and also all in one pass.
2. **Learning rates**, one per method, the best of a small grid on 300 labelled passages
   scored on 500 held-out training passages (``TextTask.validation_split``; never the test set).
3. **Accuracy against the number of labelled passages**: the pretrained encoder with a [CLS]
   head against the same network from fresh weights, fine-tuned the same way (every layer,
   warm-up then linear decay, as BERT's section 3.2 / appendix A.3), over seeds; a seed draws
   the labelled passages, the batches, dropout and the new head.

Usage (the shipped file; two processes of one thread)::

    python scripts/ch06_bert_runs.py --jobs 2

Smoke run::

    python scripts/ch06_bert_runs.py --smoke --bert /tmp/bert_smoke.pt --out /tmp/ch06_smoke.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llmcourse import bert
from llmcourse.classify import best_lr, run_jobs, save_runs
from llmcourse.data import shakespeare_splits
from llmcourse.gpt import load_pretrained, pretrained_steps

OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "ch06_bert_runs.json"
STEPS, BATCH = 150, 16
METHODS = {"BERT, pretrained": True, "from scratch": False}


def blanked_words(args, encoder, tok, encoder_tokens: int) -> dict:
    _, _, val_ids = shakespeare_splits()
    text = tok.decode(val_ids)
    items = bert.blank_words(text, args.words, window=64, seed=0)
    gpt, gtok, ginfo = load_pretrained()
    assert gtok.chars == tok.chars, "the GPT and the encoder read the same characters"
    # the GPT's snapshot that had read as many characters as the encoder: an equal-data comparison
    per_step = ginfo["train"]["batch_size"] * ginfo["train"]["block_size"]
    eq_step = min(pretrained_steps(), key=lambda s: abs(s * per_step - encoder_tokens))
    gpt_eq = load_pretrained(step=eq_step)[0]
    t0 = time.process_time()
    guesses = {"BERT, both sides": bert.restore_bidirectional(encoder, tok, items),
               "BERT, both sides, one pass": bert.restore_bidirectional(encoder, tok, items, one_pass=True),
               "BERT, left side only": bert.restore_bidirectional(encoder, tok, items, left_only=True),
               "GPT, left to right": bert.restore_left_to_right(gpt, tok, items),
               "GPT, the encoder's characters": bert.restore_left_to_right(gpt_eq, tok, items)}
    scores = {k: bert.restoration_scores(items, g) for k, g in guesses.items()}
    for k, s in scores.items():
        print(f"{k:30s} words {s['words']:.3f}  characters {s['characters']:.3f}", flush=True)
    return {"n": len(items), "window": 64, "scores": scores, "seconds": round(time.process_time() - t0, 1),
            "gpt_equal_data": {"step": eq_step, "tokens": eq_step * per_step, "encoder_tokens": encoder_tokens},
            "examples": [{**it, **{k: g[i] for k, g in guesses.items()}} for i, it in enumerate(items[:40])]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 300, 1000, 3000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--words", type=int, default=500, help="blanked words")
    p.add_argument("--bert", type=Path, default=None, help="another checkpoint of scripts/pretrain_bert.py")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--words-only", action="store_true",
                   help="recompute only the blanked-word restoration in an existing --out file")
    p.add_argument("--smoke", action="store_true", help="tiny settings, for the test suite")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.seeds, args.lrs, args.steps, args.words = [20], [0], [1e-3], 3, 8
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    encoder, tok, info = bert.load_pretrained_bert(args.bert)
    words = blanked_words(args, encoder, tok, int(info.get("tokens", 0)))
    if args.words_only:                       # refresh the restoration part of an existing file, keep its runs
        data = json.loads(args.out.read_text())
        data["blanked_words"] = words
        args.out.write_text(json.dumps(data, indent=1))
        print(f"updated blanked_words in {args.out}")
        return data

    def job(method, n, seed, lr, **kw):
        build_args = {"pretrained": METHODS[method], "path": None if args.bert is None else str(args.bert)}
        return {"build": "llmcourse.bert:classifier", "build_args": build_args, "n": n, "seed": seed,
                "cfg": {"steps": args.steps, "batch_size": BATCH, "lr": lr, "schedule": "linear", "warmup": 0.1},
                "meta": {"method": method, "lr": lr}, **kw}

    sweep = run_jobs([job(m, 40 if args.smoke else 300, 0, lr, validation=True) for m in METHODS for lr in args.lrs],
                     args.jobs)
    lr = best_lr(sweep)
    print(f"learning rates: {lr}", flush=True)
    curve = run_jobs([job(m, n, s, lr[m]) for n in args.sizes for s in args.seeds for m in METHODS], args.jobs)
    for r in curve:
        print(f"{r['method']:18s} n={r['n']:5d} seed {r['seed']}: {r['accuracy']:.3f}", flush=True)
    data = {
        "settings": {"sizes": args.sizes, "seeds": args.seeds, "steps": args.steps, "batch_size": BATCH,
                     "schedule": "linear", "warmup": 0.1, "lr_grid": args.lrs, "lr": lr, "sweep_labelled": 300,
                     "sweep_valid": 500},
        "bert": {"val_loss": info.get("val_loss"), "steps": info.get("steps"), "cpu_seconds": info.get("cpu_seconds"),
                 "tokens": info.get("tokens")},
        "blanked_words": words, "sweep": sweep, "curve": curve,
    }
    return save_runs(args.out, data, t_start, args.jobs)


if __name__ == "__main__":
    main()
