"""Chapter 24's shipped runs: the whole InstructGPT pipeline, with its default settings, for several seeds.

Each seed is one run of ``python -m llmcourse.rlhf.pipeline --out RUNS/seed<N> --seed N
--threads 1`` (:mod:`llmcourse.rlhf.pipeline`: SFT, a reward model on K = 4 rankings, PPO and
PPO-ptx), ``--jobs`` of them at a time, one process and one thread each. A seed whose folder
already holds a complete run with these settings is not run again: the pipeline resumes, finds
every stage done and the script collects it (its stage seconds still say what it took).

Writes ``llmcourse/data/ch24_pipeline_runs.json``: per seed the pipeline's metrics (the
responses to the held-out examples dropped, but one example of each kind kept), the run's wall
time in this script when it ran here, the sum of its stages' seconds, load averages, and the
command. Usage (the shipped file)::

    python scripts/ch24_pipeline_runs.py --jobs 2          # seeds 0 1 2, two at a time

Smoke run (the pipeline's --quick settings; writes elsewhere)::

    python scripts/ch24_pipeline_runs.py --smoke --runs /tmp/ch24_runs --out /tmp/ch24_smoke.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch

from llmcourse.rlhf import instructions as I
from llmcourse.rlhf.pipeline import QUICK, STAGES, PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "llmcourse" / "data" / "ch24_pipeline_runs.json"


def run_seed(seed: int, runs: Path, smoke: bool) -> dict:
    """One pipeline run in its own process (one thread); its wall time and output."""
    cmd = [sys.executable, "-m", "llmcourse.rlhf.pipeline", "--out", str(runs / f"seed{seed}"), "--seed", str(seed),
           "--threads", "1", "--no-progress"] + (["--quick"] if smoke else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    t0, load = time.time(), os.getloadavg()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    print(f"seed {seed}: exit {r.returncode} after {time.time() - t0:.0f} s\n{r.stdout}{r.stderr[-2000:]}", flush=True)
    if r.returncode != 0:
        raise SystemExit(f"seed {seed} failed: {' '.join(cmd)}")
    return {"wall_seconds": round(time.time() - t0, 1), "load_average_before": list(load),
            "resumed": "resuming run" in r.stdout, "log": r.stdout}


def shrink(metrics: dict, evals) -> dict:
    """A run's metrics without the responses to every held-out example (one per kind kept)."""
    first = {k: next(i for i, e in enumerate(evals) if e.kind == k) for k in I.KINDS}
    out = {}
    for name, entry in metrics.items():
        entry = json.loads(json.dumps(entry))
        for ev in (entry.get("evaluation"), entry.get("pretrained")):
            if ev and "responses" in ev:
                ev["examples"] = {k: ev["responses"][i] for k, i in first.items()}
                del ev["responses"]
        out[name] = entry
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "ch24", help="the pipeline runs' folders")
    ap.add_argument("--smoke", action="store_true", help="the pipeline's --quick settings")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0, load_before = time.time(), os.getloadavg()
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda s: run_seed(s, args.runs, args.smoke), args.seeds))
    cfg = PipelineConfig(**(QUICK if args.smoke else {}))
    _, evals = I.load_instructions()
    evals = [e for k in I.KINDS for e in [x for x in evals if x.kind == k][:cfg.n_eval]]
    before = {}                        # a resumed run keeps the wall time its first collection measured
    if args.out.exists():
        prev = json.loads(args.out.read_text())
        before = {r["run_id"]: {"wall_command": prev.get("command"), **r} for r in prev.get("runs", [])}
    runs = []
    for seed, d in zip(args.seeds, done):
        folder = args.runs / f"seed{seed}"
        manifest = json.loads((folder / "manifest.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        old = before.get(manifest["run_id"], {}) if d["resumed"] else {}
        runs.append({"seed": seed, "run_id": manifest["run_id"], "settings": manifest["settings"],
                     "wall_seconds": old.get("wall_seconds") if d["resumed"] else d["wall_seconds"],
                     "wall_command": old.get("wall_command") if d["resumed"] else "python scripts/ch24_pipeline_runs.py "
                     + " ".join(argv if argv is not None else sys.argv[1:]),
                     "stage_seconds": round(sum(m["seconds"] for m in metrics.values()), 1),
                     "load_average_before": old.get("load_average_before", d["load_average_before"]),
                     "stages": shrink(metrics, evals)})
    res = {"about": __doc__.split("\n\n")[0],
           "settings": {k: v for k, v in asdict(cfg).items() if k != "seed"},
           "stages": [asdict(s) for s in STAGES], "kinds": list(I.KINDS), "trained": list(I.TRAINED),
           "held_out": list(I.HELD_OUT), "eval_examples": {k: evals[[e.kind for e in evals].index(k)].prompt
                                                          for k in I.KINDS},
           "runs": runs, "seconds": round(time.time() - t0, 1), "jobs": args.jobs,
           "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
           "torch_version": torch.__version__,
           "command": "python scripts/ch24_pipeline_runs.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for r in runs:
        ev = {k: r["stages"][k]["evaluation"] for k in ("sft", "ppo", "ppo_ptx")}
        print(f"seed {r['seed']}: win rate against SFT: PPO {ev['ppo']['win_rate']:.3f}, PPO-ptx "
              f"{ev['ppo_ptx']['win_rate']:.3f}; Shakespeare loss SFT {ev['sft']['val_loss']:.3f}, PPO "
              f"{ev['ppo']['val_loss']:.3f}, PPO-ptx {ev['ppo_ptx']['val_loss']:.3f}; {r['stage_seconds']:.0f} s")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) in {res['seconds']:.0f} s")
    return res


if __name__ == "__main__":
    main()
