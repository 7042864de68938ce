"""Regenerate ``llmcourse/data/rl_sweeps.json``: the longer CartPole sweeps of chapters
20 (A3C/A2C) and 21 (PPO), which the chapters load and then rerun in reduced form live.

Experiments (every run on CartPole-v1, one torch thread, seeds 1..S):

- ``workers``: A2C with 1, 4 and 16 synchronous environments ("workers"), same budget of
  environment steps (the A3C paper's one-thread-against-several comparison).
- ``compare``: PPO (clip 0.2) against PPO without clipping and against A2C (8 envs).
- ``clip``: PPO with clip range 0.1, 0.2, 0.3 and none (the PPO paper's Table 1 rows).

Per run we keep the training-episode return on a grid of environment steps (mean of
the last 20 episodes), the training seconds at the same grid points (measured, greedy
evaluations excluded), the greedy evaluations, wall time and, for PPO, clip fraction and
approximate KL per update. The hyperparameters are the package defaults (``A2CConfig``,
``PPOConfig``), stored in the file. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/rl_sweeps.py            # about 40 min, one core
    .venv/bin/python scripts/rl_sweeps.py --quick --out /tmp/rl.json  # smoke run
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from llmcourse.rl import A2CConfig, PPOConfig, train_a2c, train_ppo

OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "rl_sweeps.json"


def summarise(hist, grid, with_ppo_stats=False) -> dict:
    out = {"curve": [None if np.isnan(x) else round(float(x), 1) for x in hist.curve(grid)],
           "time_curve": [round(float(x), 3) for x in hist.seconds_at(grid)],
           "evals": [[int(s), round(float(r), 1)] for s, r in hist.evals],
           "solved_step": hist.solved_step, "seconds": round(hist.seconds, 1),
           "train_seconds": round(hist.seconds - hist.eval_seconds, 3),
           "mean_return": round(float(np.mean([r for _, r in hist.episodes])), 1),
           "last100": round(float(np.mean([r for _, r in hist.episodes[-100:]])), 1)}
    if with_ppo_stats:
        for k in ("clip_fraction", "approx_kl"):
            out[k] = [round(s[k], 5) for s in hist.stats]
        out["stat_steps"] = [s["step"] for s in hist.stats]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60_000)
    ap.add_argument("--worker-steps", type=int, default=50_000)
    ap.add_argument("--quick", action="store_true", help="tiny budget, for the tests")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.seeds, args.steps, args.worker_steps = 1, 1024, 400
    seeds = list(range(1, args.seeds + 1))
    grid = np.linspace(args.steps / 30, args.steps, 30).astype(int)
    wgrid = np.linspace(args.worker_steps / 25, args.worker_steps, 25).astype(int)
    res = {"about": __doc__.splitlines()[0], "seeds": seeds, "steps": args.steps,
           "grid": grid.tolist(), "worker_steps": args.worker_steps,
           "worker_grid": wgrid.tolist(), "ppo_config": PPOConfig().__dict__,
           "a2c_config": A2CConfig().__dict__, "workers": {}, "compare": {}, "clip": {}}
    t0 = time.time()
    for n in (1, 4, 16):
        res["workers"][str(n)] = [summarise(train_a2c(A2CConfig(
            num_envs=n, total_steps=args.worker_steps, seed=s,
            eval_every=max(1, 2000 // (5 * n))), progress=False), wgrid) for s in seeds]
        print(f"workers={n} done at {time.time() - t0:.0f}s", flush=True)
    ppo_runs = {}
    for clip in (0.1, 0.2, 0.3, None):
        ppo_runs[clip] = [summarise(train_ppo(PPOConfig(
            clip_eps=clip, total_steps=args.steps, seed=s, eval_every=8), progress=False),
            grid, with_ppo_stats=True) for s in seeds]
        res["clip"]["none" if clip is None else str(clip)] = ppo_runs[clip]
        print(f"clip={clip} done at {time.time() - t0:.0f}s", flush=True)
    res["compare"] = {"PPO (clip 0.2)": "clip/0.2", "PPO, no clipping": "clip/none",
                      "A2C": [summarise(train_a2c(A2CConfig(
                          total_steps=args.steps, seed=s, eval_every=50), progress=False),
                          grid) for s in seeds]}
    res["seconds"] = round(time.time() - t0)
    args.out.write_text(json.dumps(res, separators=(",", ":")))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB) in {res['seconds']} s")


if __name__ == "__main__":
    main()
