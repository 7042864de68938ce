"""Benchmark: one PPO-for-text iteration on the pretrained GPT, generation and update apart.

Ziegler et al. (2019), arXiv:1909.08593, as built by :func:`llmcourse.rlhf.ppo.train_ppo_text`:
each iteration samples ``--batch`` responses of ``--new-tokens`` tokens from the policy (one
batched, KV-cached :func:`llmcourse.generation.generate` call; no end token, so every row
runs to the end), scores them (log-probabilities of the policy and the reference, values,
the reward model's score, GAE), then takes ``--epochs`` passes of clipped PPO steps in
minibatches of ``--minibatch`` episodes. The prompts are the openings of the plays' speeches
(:func:`llmcourse.rlhf.instructions.speech_openings`). The reward model is the pretrained
trunk with a fresh scalar head: speed does not depend on what it has learnt.

Prints, per phase, the seconds of one iteration and the response tokens per second
(``batch x new tokens`` divided by the phase's seconds; the update processes each token
``epochs`` times), the best of ``--iterations`` after one warm-up iteration. With
``--chapter-script`` it also runs ``scripts/ch22_ziegler_runs.py --jobs <threads>`` (the
chapter's shipped runs, to a temporary directory) and prints its seconds; without it, it
prints the seconds recorded in the shipped ``llmcourse/data/ch22_ziegler_runs.json``.

Usage::

    python benchmarks/rlhf_ppo.py --threads 2                     # 64 x 64 tokens, 3 timed iterations
    python benchmarks/rlhf_ppo.py --threads 2 --chapter-script    # and the whole chapter-22 script
    python benchmarks/rlhf_ppo.py --quick                         # 8 x 8 tokens, a smoke test
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_T0 = time.perf_counter()                     # whole process: imports and loading count

import torch  # noqa: E402

from llmcourse.data import data_path  # noqa: E402
from llmcourse.gpt import load_pretrained  # noqa: E402
from llmcourse.rlhf.instructions import speech_openings  # noqa: E402
from llmcourse.rlhf.ppo import PolicyWithValue, PPOTextConfig, train_ppo_text  # noqa: E402
from llmcourse.rlhf.reward import RewardModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64, help="prompts (episodes) per iteration")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens sampled per response")
    p.add_argument("--epochs", type=int, default=4, help="PPO passes over each rollout")
    p.add_argument("--minibatch", type=int, default=16, help="episodes per gradient step")
    p.add_argument("--iterations", type=int, default=3, help="timed iterations after one warm-up; the best counts")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (and --jobs of the chapter script)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chapter-script", action="store_true", help="also time scripts/ch22_ziegler_runs.py")
    p.add_argument("--quick", action="store_true", help="8 prompts x 8 new tokens, 1 epoch, 1 timed iteration")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.new_tokens, args.epochs, args.minibatch, args.iterations = 8, 8, 1, 4, 1
    return args


def chapter_script_seconds(args) -> dict:
    """Run the chapter-22 script (to a temporary directory) and return its own record of seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out, rm = Path(tmp) / "ch22.json", Path(tmp) / "rm.pt"
        t = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "scripts" / "ch22_ziegler_runs.py"), "--jobs", str(args.threads),
                        "--out", str(out), "--rm-out", str(rm)], check=True, cwd=REPO)
        rec = json.loads(out.read_text())
        return {"wall_seconds": round(time.perf_counter() - t, 1), "phases": rec["seconds"],
                "jobs": args.threads, "source": "run now"}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    lm, tok, _ = load_pretrained()
    policy, rm = PolicyWithValue(lm), RewardModel(lm)     # RewardModel copies the trunk
    prompts = speech_openings()
    cfg = PPOTextConfig(iterations=args.iterations + 1, batch_size=args.batch, max_new_tokens=args.new_tokens,
                        eos_id=None, epochs=args.epochs, minibatch_size=args.minibatch, seed=args.seed)
    hist = train_ppo_text(policy, rm, prompts, tok, cfg, progress=False)
    timed = range(1, cfg.iterations)                        # iteration 0 warms up
    tokens = args.batch * args.new_tokens
    assert all(hist.tokens[i] == tokens for i in timed), hist.tokens
    phases = {"generate": hist.generate_seconds, "score": hist.score_seconds, "update": hist.update_seconds,
              "iteration": hist.seconds}
    best = {k: min(v[i] for i in timed) for k, v in phases.items()}
    res = {"batch": args.batch, "new_tokens": args.new_tokens, "epochs": args.epochs, "minibatch": args.minibatch,
           "threads": args.threads, "parameters": sum(p.numel() for p in lm.parameters()),
           "seconds": {k: round(v, 3) for k, v in best.items()},
           "tokens_per_second": {k: round(tokens / v) for k, v in best.items()},
           "torch_version": torch.__version__}
    print(f"PPO for text, {args.batch} x {args.new_tokens} new tokens, {args.epochs} epochs of minibatches of "
          f"{args.minibatch}, {args.threads} thread(s), best of {len(timed)}:")
    for k in phases:
        print(f"  {k:9s} {best[k]:7.2f} s   {tokens / best[k]:9.0f} response tokens/s")
    if args.chapter_script:
        res["chapter_22"] = chapter_script_seconds(args)
    else:
        path = data_path("ch22_ziegler_runs.json")
        if path.exists():
            rec = json.loads(path.read_text())
            res["chapter_22"] = {"phases": rec["seconds"], "jobs": rec["settings"].get("jobs"),
                                 "load_average_before": rec.get("load_average_before"),
                                 "source": f"shipped ({rec['command']})"}
    if "chapter_22" in res:
        c = res["chapter_22"]
        print(f"chapter-22 script ({c['source']}, --jobs {c['jobs']}): {c['phases']['total']:.0f} s "
              f"(" + ", ".join(f"{k} {v:.0f} s" for k, v in c["phases"].items() if k != "total") + ")")
    res["process_seconds"] = round(time.perf_counter() - _T0, 1)
    print(f"whole process: {res['process_seconds']:.1f} s")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
