"""A grid of tiny GPTs on isoFLOP lines: the data of chapters 14-15 (issue 19).

Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", arXiv:2203.15556,
section 3.2: at each of several compute budgets C, models of several sizes N are trained on
D = C / (FLOPs per token) tokens each, with the cosine schedule ending at the run's own
horizon; the final losses against log N are the isoFLOP profiles (paper Figure 3), the curves
of all runs together give approach 1's envelope, and the (N, D, L) triples approach 3's fit.

FLOPs are counted as in :func:`llmcourse.scaling.training_flops`: ``6 N D + 6 n_layer n_ctx
d_model D`` (Kaplan et al. 2020, eq. 2.2; N = non-embedding parameters). The models are the
course's GPT (``llmcourse.gpt``), trained by the course's loop (``llmcourse.train.train_lm``)
on the character-level Shakespeare corpus (``llmcourse.data.shakespeare_splits``: 1.05 M
training characters, so the largest runs see the corpus several times; the file records the
epochs of each run). Validation loss on the held-out 10% is recorded along each run.

    .venv/bin/python scripts/scaling_runs.py --estimate      # measure, print the plan and times
    .venv/bin/python scripts/scaling_runs.py --workers 2     # run (resumable), writes the JSON
    .venv/bin/python scripts/scaling_runs.py --smoke --out /tmp/smoke.json   # seconds: the pipeline

Resumable: the output file is rewritten after every finished run, and a rerun skips the
runs already in it (same id and settings). Each worker process uses one torch thread.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "llmcourse" / "data" / "scaling_runs.json"

# (n_layer, n_embd, n_head): non-embedding parameters from about 3 thousand to 3.7 million
SIZES = [(1, 16, 2), (1, 24, 2), (2, 32, 2), (2, 48, 4), (3, 64, 4), (4, 80, 4), (4, 112, 4), (5, 144, 4),
         (6, 176, 4), (7, 208, 4)]
BUDGETS = [3e11, 1e12, 3e12, 9e12]       # FLOPs
PER_BUDGET = 6                               # sizes per budget: the 6 consecutive SIZES centred on ...
CENTRE = 150.0                               # ... the size that would see about 150 tokens per parameter
# (not the paper's 20: on the --mini grid, 3e10 to 8e11 FLOPs, the smallest model of every budget won,
# at 150 to 300 tokens per parameter; models trained for a few hundred steps lose at this scale)
BATCH, BLOCK = 16, 128                       # 2,048 tokens a step
EVALS = 8                                    # validation points along each run (and the last step)
EVAL_ITERS = 16                              # batches per validation point

SMOKE_SIZES = [(1, 16, 2), (1, 24, 2), (2, 32, 2)]
SMOKE_BUDGETS = [2e9, 4e9]
# a small grid for writing the chapters' analysis before the real one has run (minutes; not shipped)
MINI_SIZES = [(1, 16, 2), (1, 24, 2), (2, 32, 2), (2, 48, 4), (3, 64, 4), (4, 80, 4)]
MINI_BUDGETS = [3e10, 9e10, 2.7e11, 8.1e11]


def lr_for(n_embd: int) -> float:
    """Peak learning rate: 3e-3 for the narrowest models, falling as 1/sqrt(width) to 1e-3."""
    return float(min(3e-3, max(1e-3, 3e-3 * math.sqrt(24 / n_embd))))


def plan(sizes=SIZES, budgets=BUDGETS, per_budget=PER_BUDGET, centre=CENTRE, block=BLOCK,
         batch=BATCH) -> list[dict]:
    """Every run of the grid: at each budget C, the ``per_budget`` consecutive sizes whose middle is
    nearest (in log N) to the N with C = 6 N (centre N): the window spans tokens per parameter
    from about centre / 30 to centre x 30, wide enough for an optimum far from the guess."""
    from llmcourse.scaling import non_embedding_params, training_flops

    runs = []
    logn = [math.log(non_embedding_params(L, d)) for L, d, _ in sizes]
    for C in budgets:
        target = 0.5 * math.log(C / (6 * centre))
        first = min(range(len(sizes) - per_budget + 1),
                    key=lambda i: abs(0.5 * (logn[i] + logn[i + per_budget - 1]) - target))
        for n_layer, n_embd, n_head in sizes[first:first + per_budget]:
            N = non_embedding_params(n_layer, n_embd)
            per_token = training_flops(N, n_layer, n_embd, block, 1)
            steps = max(10, round(C / per_token / (batch * block)))
            D = steps * batch * block
            runs.append({"id": f"C{C:.1e}_L{n_layer}_d{n_embd}", "budget": C, "n_layer": n_layer,
                         "n_embd": n_embd, "n_head": n_head, "N": N, "steps": steps, "D": D,
                         "flops": training_flops(N, n_layer, n_embd, block, D), "lr": lr_for(n_embd),
                         "batch_size": batch, "block_size": block})
    return runs


def _model(run, vocab_size):
    from llmcourse.gpt import GPT, GPTConfig

    return GPT(GPTConfig(vocab_size=vocab_size, block_size=run["block_size"], n_layer=run["n_layer"],
                         n_head=run["n_head"], n_embd=run["n_embd"], dropout=0.0))


def _data():
    from llmcourse.data import shakespeare_splits

    return shakespeare_splits()


def train_one(run: dict, seed: int = 0) -> dict:
    """Train one run of the grid; its final validation loss, its curve, its time."""
    import torch

    from llmcourse.scaling import training_flops
    from llmcourse.train import TrainConfig, set_seed, train_lm

    torch.set_num_threads(1)
    tok, train_ids, val_ids = _data()
    set_seed(seed)
    model = _model(run, tok.vocab_size)
    steps = run["steps"]
    cfg = TrainConfig(max_iters=steps, batch_size=run["batch_size"], block_size=run["block_size"], lr=run["lr"],
                      min_lr=run["lr"] / 10, warmup_iters=max(1, min(100, steps // 10)),
                      eval_interval=max(1, steps // EVALS), eval_iters=EVAL_ITERS, seed=seed)
    hist = train_lm(model, train_ids, val_ids, cfg, progress=False)
    tokens = [(s + 1) * cfg.batch_size * cfg.block_size for s in hist.eval_steps]
    flops = [training_flops(run["N"], run["n_layer"], run["n_embd"], run["block_size"], t) for t in tokens]
    tail = hist.train_loss[-max(1, steps // 20):]
    return {**run, "seed": seed, "final_loss": hist.val_loss[-1], "epochs": run["D"] / len(train_ids),
            "final_train_loss": sum(tail) / len(tail),                 # mean of the last 5% of steps
            "curve": {"step": hist.eval_steps, "tokens": tokens, "flops": flops, "val_loss": hist.val_loss},
            "seconds": round(hist.seconds, 1)}


def measure(runs: list[dict], steps: int = 6) -> dict:
    """Seconds per training step of each model shape, measured on this machine (one thread)."""
    import torch

    from llmcourse.data import get_batch
    from llmcourse.train import TrainConfig, make_optimizer

    torch.set_num_threads(1)
    tok, train_ids, _ = _data()
    out = {}
    for run in runs:
        key = (run["n_layer"], run["n_embd"], run["n_head"])
        if key in out:
            continue
        model = _model(run, tok.vocab_size)
        opt = make_optimizer(model, TrainConfig(lr=run["lr"]))
        g = torch.Generator().manual_seed(0)
        times = []
        for _ in range(steps + 2):
            x, y = get_batch(train_ids, run["batch_size"], run["block_size"], g)
            t0 = time.perf_counter()
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        out[key] = sorted(times[2:])[len(times[2:]) // 2]              # the median, after 2 warm-up steps
    return out


def estimate(runs: list[dict], workers: int) -> tuple[dict, float]:
    """Estimated seconds per run (steps x measured step time x 1.15 for the validation points)
    and the wall time of the whole grid on ``workers`` processes (longest first)."""
    per_step = measure(runs)
    est = {r["id"]: 1.15 * r["steps"] * per_step[(r["n_layer"], r["n_embd"], r["n_head"])] for r in runs}
    loads = [0.0] * workers
    for t in sorted(est.values(), reverse=True):
        loads[loads.index(min(loads))] += t
    return est, max(loads)


def load(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"meta": {}, "runs": []}


def save(path: Path, meta: dict, runs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    order = {r["id"]: i for i, r in enumerate(plan(**meta["grid"]))} if "grid" in meta else {}
    runs = sorted(runs, key=lambda r: order.get(r["id"], 1e9))
    tmp.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    os.replace(tmp, path)


def _same(a: dict, b: dict) -> bool:
    keys = ("n_layer", "n_embd", "n_head", "steps", "lr", "batch_size", "block_size", "budget")
    return all(a.get(k) == b.get(k) for k in keys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    ap.add_argument("--estimate", action="store_true", help="measure and print the plan and times, train nothing")
    ap.add_argument("--smoke", action="store_true", help="a 4-run grid of tiny budgets (seconds)")
    ap.add_argument("--mini", action="store_true", help="a 16-run grid of small budgets (minutes; not shipped)")
    ap.add_argument("--only", type=int, default=None, help="run at most this many of the missing runs, then stop")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    if args.smoke:
        grid = {"sizes": SMOKE_SIZES, "budgets": SMOKE_BUDGETS, "per_budget": 2, "centre": CENTRE}
    elif args.mini:
        grid = {"sizes": MINI_SIZES, "budgets": MINI_BUDGETS, "per_budget": 4, "centre": CENTRE}
    else:
        grid = {"sizes": SIZES, "budgets": BUDGETS, "per_budget": PER_BUDGET, "centre": CENTRE}
    runs = plan(**grid)
    est, wall = estimate(runs, args.workers)
    print(f"{len(runs)} runs on {len(grid['budgets'])} budgets; FLOPs = 6 N D + 6 n_layer n_ctx d_model D")
    print(f"{'run':24s} {'N':>9s} {'steps':>6s} {'D':>10s} {'tokens/param':>12s} {'est. s':>7s}")
    for r in runs:
        print(f"{r['id']:24s} {r['N']:9,d} {r['steps']:6d} {r['D']:10,d} {r['D'] / r['N']:12.1f} {est[r['id']]:7.0f}")
    print(f"estimated: {sum(est.values()) / 60:.1f} CPU-minutes, about {wall / 60:.1f} minutes on "
          f"{args.workers} worker(s) (measured now; on a shared machine it is longer)")
    if args.estimate:
        return 0

    stored = load(args.out)
    done = {r["id"]: r for r in stored["runs"]}
    todo = [r for r in runs if not (r["id"] in done and _same(done[r["id"]], r))]
    todo.sort(key=lambda r: -est[r["id"]])                         # the longest first: a better packing
    if args.only is not None:
        todo = todo[:args.only]
    kept = [done[r["id"]] for r in runs if r["id"] in done and _same(done[r["id"]], r)]
    meta = {"grid": grid, "batch_size": BATCH, "block_size": BLOCK, "evals": EVALS, "eval_iters": EVAL_ITERS,
            "flops": "6 N D + 6 n_layer n_ctx d_model D (Kaplan et al. 2020 eq. 2.2), N non-embedding",
            "corpus": "llmcourse.data.shakespeare_splits(): characters, 90% train / 10% validation",
            "script": "scripts/scaling_runs.py", "torch_threads_per_run": 1}
    print(f"{len(kept)} runs already in {args.out}, {len(todo)} to train")
    from llmcourse.train import progress_bar

    t0 = time.perf_counter()
    total = sum(est[r["id"]] for r in todo) or 1.0
    bar = progress_bar(total=round(total, 1), desc="grid (estimated seconds)", unit="s")
    with contextlib.ExitStack() as stack:
        if args.workers > 1:
            ex = stack.enter_context(ProcessPoolExecutor(max_workers=args.workers))
            results = (f.result() for f in as_completed([ex.submit(train_one, r) for r in todo]))
        else:                                                        # in this process, one after another
            results = (train_one(r) for r in todo)
        for res in results:
            kept.append(res)
            save(args.out, {**meta, "wall_seconds_last_invocation": round(time.perf_counter() - t0, 1)}, kept)
            bar.update(round(est[res["id"]], 1))
            bar.write(f"{res['id']}: loss {res['final_loss']:.4f} in {res['seconds']:.0f} s "
                      f"(estimated {est[res['id']]:.0f} s)")
    bar.close()
    print(f"done: {len(kept)} runs in {args.out} ({args.out.stat().st_size / 1024:.0f} kB); "
          f"{(time.perf_counter() - t0) / 60:.1f} minutes this invocation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
