"""Models of several sizes on a world of facts and arithmetic: the data of chapter 14 (issue 19).

Rae et al. (2021), "Scaling Language Models: Methods, Analysis & Insights from Training
Gopher", arXiv:2112.11446, section 4 and Figure 3: going from 417M to 280B parameters helped
knowledge-heavy tasks (fact checking, general knowledge, reading comprehension) far more than
mathematical and logical reasoning. The toy: one corpus (``llmcourse.toydata.gopher_corpus``)
mixing the facts of a generated world with two-digit additions and comparisons, the course's
GPT at several sizes trained for the same number of steps on the same batches (as Gopher's
family was trained on the same 300B tokens), and greedy-completion accuracy per family at
checkpoints: facts that were in the training data, and sums and maxima of operand pairs that
were held out of it.

    .venv/bin/python scripts/gopher_runs.py --jobs 2        # writes llmcourse/data/gopher_runs.json
    .venv/bin/python scripts/gopher_runs.py --jobs 2 --entities 1024 --out llmcourse/data/gopher_runs_large.json
    .venv/bin/python scripts/gopher_runs.py --smoke --out /tmp/g.json

The default world has 64 entities (256 facts, about 690 readings of each over the run), which
every model from 100 thousand parameters recalls entirely; ``--entities 1024`` (4,096 facts,
about 43 readings each, as chapter 14 computes) is a world too large for the smaller models to hold.

Resumable: a size already in the output file (same settings) is skipped. With ``--jobs 2`` the
sizes train in two one-thread worker processes, the largest first, and the file is written when
they are all done; with ``--jobs 1`` after each size.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "llmcourse" / "data" / "gopher_runs.json"

SIZES = [(1, 32, 2), (2, 64, 4), (3, 128, 4), (4, 192, 6)]     # (n_layer, n_embd, n_head)
SETTINGS = {"n_lines": 30000, "steps": 4000, "batch_size": 32, "block_size": 64, "lr": 3e-3, "checkpoints": 8,
            "n_eval": 200, "world_seed": 0, "corpus_seed": 0, "seed": 0}
SMOKE = {**SETTINGS, "n_lines": 2000, "steps": 40, "checkpoints": 2, "n_eval": 20}
SMOKE_SIZES = [(1, 16, 2), (1, 32, 2)]


def run_size(shape, s: dict) -> dict:
    import torch

    from llmcourse.gpt import GPT, GPTConfig
    from llmcourse.toydata import FAMILIES, accuracy, gopher_corpus, gopher_eval, make_world, toy_tokenizer
    from llmcourse.data import get_batch
    from llmcourse.train import TrainConfig, cosine_lr, make_optimizer, set_seed

    torch.set_num_threads(1)
    tok = toy_tokenizer()
    world = make_world(n_entities=s.get("n_entities", 64), seed=s["world_seed"])
    ids = tok.encode(gopher_corpus(world, s["n_lines"], seed=s["corpus_seed"]))
    evals = {f: gopher_eval(world, f, n=s["n_eval"]) for f in FAMILIES}
    n_layer, n_embd, n_head = shape
    set_seed(s["seed"])
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=s["block_size"], n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd))
    every = s["steps"] // s["checkpoints"]
    cfg = TrainConfig(max_iters=s["steps"], batch_size=s["batch_size"], block_size=s["block_size"], lr=s["lr"],
                      min_lr=s["lr"] / 10, warmup_iters=min(100, s["steps"] // 10), seed=s["seed"])
    # train_lm's loop (AdamW, warm-up and cosine decay, clipping), with accuracy read at checkpoints
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    record = {"step": [], "train_loss": [], **{f: [] for f in FAMILIES}}
    losses = []
    t0 = time.perf_counter()
    model.train()
    for step in range(cfg.max_iters):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.max_iters)
        x, y = get_batch(ids, cfg.batch_size, cfg.block_size, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == cfg.max_iters:
            record["step"].append(step + 1)
            record["train_loss"].append(sum(losses[-20:]) / len(losses[-20:]))
            for f, pairs in evals.items():
                record[f].append(accuracy(model, tok, pairs))
            model.train()
    return {"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "N": model.num_params(),
            "record": record, "seconds": round(time.perf_counter() - t0, 1)}


def _run_job(job):
    shape, s = job
    return run_size(shape, s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, one torch thread each")
    ap.add_argument("--entities", type=int, default=None, help="entities of the world (default 64)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    s, sizes = (SMOKE, SMOKE_SIZES) if args.smoke else (SETTINGS, SIZES)
    if args.entities is not None:
        s = {**s, "n_entities": args.entities}
    data = json.loads(args.out.read_text()) if args.out.is_file() else {"settings": s, "runs": []}
    if data.get("settings") != s:
        data = {"settings": s, "runs": []}
    done = {(r["n_layer"], r["n_embd"], r["n_head"]) for r in data["runs"]}
    todo = [tuple(shape) for shape in sizes if tuple(shape) not in done]
    for shape in sizes:
        if tuple(shape) in done:
            print(f"{shape}: already in {args.out}")
    todo.sort(key=lambda shape: -shape[0] * shape[1] ** 2)          # the largest first: a better packing
    t0 = time.perf_counter()
    if args.jobs > 1:
        from llmcourse.train import run_jobs

        results = run_jobs(_run_job, [(shape, s) for shape in todo], args.jobs)
    else:
        results = (_run_job((shape, s)) for shape in todo)
    for r in results:
        data["runs"].append(r)
        data["runs"].sort(key=lambda r: r["N"])
        data["note"] = ("accuracy by greedy completion of 200 prompts a family; the facts were in the training "
                        "data, the addition and comparison operand pairs were held out of it")
        data["jobs"] = args.jobs
        data["wall_seconds_last_invocation"] = round(time.perf_counter() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1))
        last = {f: r["record"][f][-1] for f in ("facts", "addition", "comparison")}
        print(f"{(r['n_layer'], r['n_embd'], r['n_head'])}: N = {r['N']:,}, {r['seconds']:.0f} s, "
              f"final accuracy {last}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
