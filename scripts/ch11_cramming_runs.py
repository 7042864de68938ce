"""Chapter 11's shipped runs: masked-LM encoders trained under one fixed CPU budget.

Cramming (Geiping and Goldstein 2022, arXiv:2212.14034) trains BERT-style models for one GPU-day
and asks what helps when the budget, not the data, is fixed. Scaled down to one CPU thread and
``--seconds`` of CPU time per run, on the shipped Shakespeare (characters, 15% masking):

1. **sizes**: five encoders from 32 to 192 wide, the "crammed" recipe, same budget: validation
   masked-LM loss against tokens seen and against CPU seconds;
2. **ablations**: the crammed recipe with one of the paper's modifications undone or added
   (Post-LN, biases, dropout, a constant learning rate, gated linear units, a batch-size ramp,
   longer sequences at the same tokens per step), same budget.

Every configuration runs for each seed in ``--seeds``. The result, a few tens of kB of JSON,
ships as ``llmcourse/data/ch11_cramming_runs.json``; the chapter loads it and reruns a reduced
version live. Run it on an otherwise idle core (the budget is this process's CPU time, so a
shared machine changes little, but memory bandwidth is shared)::

    .venv/bin/python scripts/ch11_cramming_runs.py --jobs 2          # two runs at a time: about 35 minutes
    .venv/bin/python scripts/ch11_cramming_runs.py --quick --out /tmp/smoke.json   # seconds
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmcourse.data import shakespeare_splits  # noqa: E402
from llmcourse.mlm import BudgetConfig, MLMConfig, MLMEncoder, fixed_batches, train_budget  # noqa: E402

SEQ_LEN, BATCH = 32, 64                      # 2,048 tokens per step
#: the "crammed" recipe: Pre-LN, no biases, no dropout, one-cycle schedule over the budget
CRAMMED = dict(norm="pre", bias=False, glu=False, dropout=0.0)
SIZES = {                                    # name -> (width, layers, heads)
    "d32-L2": (32, 2, 2),
    "d64-L2": (64, 2, 4),
    "d96-L3": (96, 3, 4),
    "d128-L4": (128, 4, 4),
    "d192-L6": (192, 6, 6),
}
BASE_SIZE = "d64-L2"
#: name -> (changes to the model config, changes to the budget config, changes to (seq_len, batch))
ABLATIONS = {
    "crammed (baseline)": ({}, {}, {}),
    "Post-LN (BERT)": ({"norm": "post"}, {}, {}),
    "with biases (BERT)": ({"bias": True}, {}, {}),
    "dropout 0.1 (BERT)": ({"dropout": 0.1}, {}, {}),
    "constant learning rate": ({}, {"schedule": "constant", "lr": 3e-3}, {}),
    "gated linear units": ({"glu": True}, {}, {}),
    "batch-size ramp": ({}, {"ramp": True}, {}),
    "sequence length 128": ({}, {}, {"seq_len": 128, "batch": 16}),
}


def model_config(vocab: int, size: str, seq_len: int, **changes) -> MLMConfig:
    d, L, H = SIZES[size]
    return MLMConfig(vocab_size=vocab, seq_len=seq_len, d_model=d, n_layers=L, n_heads=H, d_ff=4 * d,
                     **{**CRAMMED, **changes})


_DATA = None


def one_run(kind: str, name: str, size: str, seed: int, seconds: float, changes=({}, {}, {}), threads: int = 1) -> dict:
    global _DATA
    if _DATA is None:                                    # once per process
        _DATA = shakespeare_splits()
    torch.set_num_threads(threads)
    tok, train_ids, val_ids = _DATA
    vocab, mask_id = tok.vocab_size + 1, tok.vocab_size
    m_changes, b_changes, shape = changes
    seq_len, batch = shape.get("seq_len", SEQ_LEN), shape.get("batch", BATCH)
    cfg = model_config(vocab, size, seq_len, **m_changes)
    budget = replace(BudgetConfig(seconds=seconds, batch_size=batch, lr=1e-2, evals=12, seed=seed), **b_changes)
    # the same validation text for every run: 8 batches of 2,048 characters, masked once
    val = fixed_batches(val_ids, 8 * SEQ_LEN // seq_len, BATCH * SEQ_LEN // seq_len, seq_len, mask_id, vocab, seed=1234)
    torch.manual_seed(seed)
    model = MLMEncoder(cfg)
    t0 = time.perf_counter()
    run = train_budget(model, train_ids, val, budget, mask_id)
    print(f"{kind:9s} {name:24s} seed {seed}: {run.params:>9,d} params, {run.steps[-1]:5d} steps, "
          f"{run.tokens_per_second:8.0f} tokens/s, loss {run.val_loss[0]:.3f} -> {run.val_loss[-1]:.3f} "
          f"({time.perf_counter() - t0:.0f} s wall)", flush=True)
    return {"kind": kind, "name": name, "size": size, "seed": seed, "params": run.params,
            "seconds": [round(s, 3) for s in run.seconds], "tokens": run.tokens, "steps": run.steps,
            "val_loss": [round(x, 4) for x in run.val_loss], "tokens_per_second": round(run.tokens_per_second, 1),
            "model": run.config["model"], "budget": run.config["budget"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=90.0, help="CPU seconds of training per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each (one per core)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 s per run, one seed, two sizes, two ablations")
    ap.add_argument("--out", type=Path, default=ROOT / "llmcourse" / "data" / "ch11_cramming_runs.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes, ablations, seeds, seconds = list(SIZES), list(ABLATIONS), args.seeds, args.seconds
    if args.quick:
        sizes, ablations, seeds, seconds = ["d32-L2", "d64-L2"], ["crammed (baseline)", "Post-LN (BERT)"], [0], 1.0
    t0 = time.perf_counter()
    todo = [("size", s, s, seed, seconds, ({}, {}, {}), args.threads) for seed in seeds for s in sizes]
    todo += [("ablation", a, BASE_SIZE, seed, seconds, ABLATIONS[a], args.threads) for seed in seeds for a in ablations
             if not (a == "crammed (baseline)" and BASE_SIZE in sizes)]   # the baseline is the size run
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            runs = pool.starmap(one_run, todo, chunksize=1)
    else:
        runs = [one_run(*t) for t in todo]
    result = {
        "settings": {"seconds": seconds, "seeds": seeds, "seq_len": SEQ_LEN, "batch_size": BATCH, "lr": 1e-2,
                     "crammed": CRAMMED, "sizes": {s: SIZES[s] for s in sizes}, "base_size": BASE_SIZE,
                     "ablations": {a: ABLATIONS[a] for a in ablations}, "threads": args.threads, "jobs": args.jobs,
                     "masking": "BERT's: 15% of characters, 80/10/10", "data": "shakespeare.txt.gz, first 90% / last 10%"},
        "machine": {"torch": torch.__version__, "python": platform.python_version(), "processor": platform.machine()},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} kB) in {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
