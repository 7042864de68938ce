"""Benchmark: PPO solves CartPole-v1 within 100k environment steps and 2 minutes.

"Solved" = mean greedy return >= 475 over 20 evaluation episodes (evaluated every
``--eval-every`` updates of 256 steps). Each seed runs in a fresh Python process with
one torch thread; the wall time reported per seed covers the whole process (imports,
environment creation, training and evaluations up to the solving evaluation, plus a
check of the solving policy on 100 fresh episodes, reported but not part of the
criterion).

    .venv/bin/python benchmarks/ppo_cartpole.py            # seeds 1-5
    .venv/bin/python benchmarks/ppo_cartpole.py --seeds 1 2
    .venv/bin/python benchmarks/ppo_cartpole.py --out llmcourse/data/ppo_benchmark.json   # the shipped
                                                  # file chapter 21 loads (also records the load average)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

MAX_STEPS, MAX_SECONDS = 100_000, 120.0


def run_one(seed: int, eval_every: int) -> dict:
    """Inside the child process: train until solved or out of budget."""
    import torch
    torch.set_num_threads(1)
    from llmcourse.rl import PPOConfig, evaluate, train_ppo
    cfg = PPOConfig(seed=seed, total_steps=MAX_STEPS, eval_every=eval_every,
                    stop_when_solved=True)
    hist = train_ppo(cfg, progress=False)
    best = max(s for _, s in hist.evals)
    # not part of the criterion: the solving policy on 100 fresh episodes (other seeds)
    confirm = evaluate(hist.model, episodes=100, seed=50_000 + seed)
    return {"seed": seed, "solved_step": hist.solved_step, "train_seconds": hist.seconds,
            "best_eval": best, "evals": len(hist.evals), "confirm": confirm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(run_one(args.child, args.eval_every)))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    print(f"{'seed':>4} {'solved':>6} {'steps':>7} {'process s':>9} {'train s':>7} "
          f"{'best eval':>9} {'100 fresh eps':>13}")
    ok, rows, load_before, t_all = 0, [], os.getloadavg(), time.perf_counter()
    for seed in args.seeds:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", str(seed),
                              "--eval-every", str(args.eval_every)],
                             env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        r = json.loads(out.stdout.strip().splitlines()[-1])
        solved = (r["solved_step"] is not None and r["solved_step"] <= MAX_STEPS
                  and wall <= MAX_SECONDS)
        ok += solved
        rows.append(dict(r, process_seconds=round(wall, 2), solved=bool(solved)))
        steps = r["solved_step"] if r["solved_step"] is not None else "-"
        print(f"{seed:>4} {'yes' if solved else 'no':>6} {steps:>7} {wall:>9.1f} "
              f"{r['train_seconds']:>7.1f} {r['best_eval']:>9.1f} {r['confirm']:>13.1f}", flush=True)
    print(f"solved {ok}/{len(args.seeds)} seeds (target: >= 4 of 5; <= {MAX_STEPS} steps, "
          f"<= {MAX_SECONDS:.0f} s each)")
    if args.out:
        import torch
        with open(args.out, "w") as f:
            json.dump({"about": __doc__.splitlines()[0], "command": " ".join(["benchmarks/ppo_cartpole.py", *sys.argv[1:]]),
                       "max_steps": MAX_STEPS, "max_seconds": MAX_SECONDS, "min_solved": min(4, len(args.seeds)),
                       "eval_every": args.eval_every,
                       "seeds": rows, "solved": ok, "seconds": round(time.perf_counter() - t_all, 1),
                       "load_average_before": [round(x, 2) for x in load_before],
                       "load_average_after": [round(x, 2) for x in os.getloadavg()],
                       "cpu_count": os.cpu_count(), "machine": platform.machine(),
                       "torch": torch.__version__}, f, indent=1)
        print(f"wrote {args.out}")
    sys.exit(0 if ok >= min(4, len(args.seeds)) else 1)


if __name__ == "__main__":
    main()
