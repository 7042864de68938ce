"""Chapter 22's longer runs: reward models from noisy comparisons, then PPO with a KL penalty.

Ziegler et al. (2019), arXiv:1909.08593, on the course's pretrained GPT. The task: continue
the opening words of a speech of the plays (64 characters at temperature 0.7); the labeller
(:class:`llmcourse.rlhf.labeller.PlainWordsLabeller`, Bradley-Terry temperature 0.5) prefers
plain, short words. Steps, all seeded:

1. four continuations of each prompt by the pretrained model rho, ranked by the noisy
   labeller (Plackett-Luce): 3,000 training prompts, 500 held out;
2. reward-model accuracy against the number of comparisons: K-wise rankings (all six pairs
   of a prompt in one batch element, InstructGPT eq. 1) and separate pairs (Bradley-Terry),
   several sizes and seeds, one epoch each; accuracy on the held-out rankings against the
   noisy labels and against the labeller's noiseless preference;
3. the reward model of every training ranking, normalised on rho's samples (mean 0, std 1);
   it is also saved (float16) as ``llmcourse/data/ch22_reward_model.pt`` for the chapter's
   live PPO run;
4. PPO against it with several fixed beta and with the adaptive controller at two target
   KLs, several seeds: per iteration the labeller's score, the reward model's, the KL, beta,
   clip fraction, entropy, samples;
5. the best reward for each KL, estimated by reweighting 128 samples of rho for each of 32
   prompts (the "optimal" curve of the paper's Fig. 3);
6. continuations of a few fixed prompts before and after.

Writes ``llmcourse/data/ch22_ziegler_runs.json`` (settings, seconds and load averages
included) and the reward model. Usage (the shipped files)::

    python scripts/ch22_ziegler_runs.py --jobs 2          # two processes, one thread each

Smoke run (a minute; writes elsewhere)::

    python scripts/ch22_ziegler_runs.py --smoke --out /tmp/ch22_smoke.json --rm-out /tmp/ch22_rm_smoke.pt
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

from llmcourse.gpt import load_pretrained
from llmcourse.rlhf.instructions import speech_openings
from llmcourse.rlhf.labeller import PlainWordsLabeller
from llmcourse.rlhf.ppo import PolicyWithValue, PPOTextConfig, optimal_frontier, train_ppo_text
from llmcourse.rlhf.reward import (Rankings, RewardModel, collect_rankings, join, pair_accuracy, ranking_scores,
                                   right_pad, rm_config, sample_responses, train_reward_model)
from llmcourse.train import run_jobs, set_seed

DATA = Path(__file__).resolve().parents[1] / "llmcourse" / "data"
SAMPLE_PROMPTS = ["KING RICHARD.\nWhat says your", "JULIET.\nO, I have", "FIRST CITIZEN.\nWe are accounted",
                  "PETRUCHIO.\nGood morrow, Kate;"]


def settings(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("out", "rm_out")}


# ----------------------------------------------------------------------------- the tasks (one process each)


def _rm_task(job: dict) -> dict:
    """Train one reward model (K-wise or pairs) on a prefix of the training data; held-out accuracy."""
    torch.set_num_threads(job["threads"])
    lm, _, _ = load_pretrained()
    data, val, val_scores = job["data"], job["val"], job["val_scores"]
    set_seed(1000 + job["seed"])                            # the head's initialisation, whatever process runs it
    rm = RewardModel(lm)
    t0 = time.perf_counter()
    hist = train_reward_model(rm, data, rm_config(lr=job["lr"], batch_size=job["batch"], seed=job["seed"]),
                              loss=job["loss"], progress=False)
    seconds = time.perf_counter() - t0
    s = ranking_scores(rm, val)
    better = val_scores[:, :, None] > val_scores[:, None, :]              # the labeller's noiseless preference
    diff = s[:, :, None] - s[:, None, :]
    out = {"method": job["loss"], "comparisons": job["comparisons"], "prompts": len(data), "seed": job["seed"],
           "acc_noisy": pair_accuracy(s, val.ranks),
           "acc_noiseless": float(((diff > 0).double() + 0.5 * (diff == 0).double())[better].mean()),
           "final_loss": sum(hist.loss[-10:]) / len(hist.loss[-10:]), "steps": len(hist.loss),
           "seconds": round(seconds, 1)}
    if job.get("keep"):
        out["state_dict"] = {k: v.half() for k, v in rm.state_dict().items()}
        out["loss_curve"] = [round(x, 4) for x in hist.loss]
    return out


def _ppo_task(job: dict) -> dict:
    """One PPO run against the saved reward model; its history and samples of fixed prompts."""
    torch.set_num_threads(job["threads"])
    lm, tok, _ = load_pretrained()
    rm = RewardModel(lm)
    rm.load_state_dict({k: v.float() for k, v in job["rm_state"].items()})
    rm.eval()
    policy = PolicyWithValue(copy.deepcopy(lm))
    cfg = PPOTextConfig(**job["cfg"])
    labeller = PlainWordsLabeller(job["labeller_temperature"])
    hist = train_ppo_text(policy, rm, job["prompts"], tok, cfg, ref=lm, labeller=labeller, progress=False)
    g = torch.Generator().manual_seed(1234)
    samples = sample_responses(policy.lm, tok, SAMPLE_PROMPTS, 2, cfg.max_new_tokens, cfg.temperature, g)
    out = hist.as_dict()
    out["samples"] = out["samples"][::max(1, len(out["samples"]) // 5)]     # a few iterations' samples
    out["final_samples"] = [[tok.decode(r) for r in rs] for rs in samples]
    out.update(name=job["name"], beta0=cfg.beta, target_kl=cfg.target_kl, seed=cfg.seed)
    return out




# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-prompts", type=int, default=3000)
    ap.add_argument("--val-prompts", type=int, default=500)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of rho and pi")
    ap.add_argument("--labeller-temperature", type=float, default=0.5)
    ap.add_argument("--kwise-prompts", type=int, nargs="+", default=[50, 100, 200, 400, 800, 1600, 3000])
    ap.add_argument("--pair-comparisons", type=int, nargs="+", default=[300, 600, 1200, 2400, 4800])
    ap.add_argument("--rm-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rm-lr", type=float, default=3e-4)
    ap.add_argument("--rm-batch", type=int, default=8, help="prompts per reward-model step (K-wise)")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    ap.add_argument("--targets", type=float, nargs="+", default=[3.0, 8.0], help="target KLs of the adaptive runs")
    ap.add_argument("--init-beta", type=float, default=0.1, help="starting beta of the adaptive runs")
    ap.add_argument("--horizon", type=int, default=2000)
    ap.add_argument("--ppo-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--minibatch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--frontier-prompts", type=int, default=32)
    ap.add_argument("--frontier-samples", type=int, default=128)
    ap.add_argument("--jobs", type=int, default=1, help="processes in parallel (one per core)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a tiny budget, for the tests")
    ap.add_argument("--out", type=Path, default=DATA / "ch22_ziegler_runs.json")
    ap.add_argument("--rm-out", type=Path, default=DATA / "ch22_reward_model.pt")
    args = ap.parse_args(argv)
    if args.smoke:
        args.train_prompts, args.val_prompts, args.kwise_prompts, args.pair_comparisons = 24, 8, [8, 24], [16]
        args.rm_seeds, args.betas, args.targets, args.ppo_seeds = [0], [0.03, 0.3], [3.0, 8.0], [0]
        args.iterations, args.batch, args.minibatch, args.new_tokens = 2, 8, 4, 16
        args.frontier_prompts, args.frontier_samples = 2, 8
    torch.set_num_threads(args.threads)
    t_start, load_before = time.time(), os.getloadavg()
    set_seed(args.seed)
    lm, tok, info = load_pretrained()
    labeller = PlainWordsLabeller(args.labeller_temperature)
    prompts = speech_openings()
    random.Random(args.seed).shuffle(prompts)
    val_p = prompts[:args.val_prompts]
    train_p = prompts[args.val_prompts:args.val_prompts + args.train_prompts]
    ppo_p = prompts[args.val_prompts:]                        # everything but the held-out prompts
    gen = torch.Generator().manual_seed(args.seed)

    # 1. comparisons from the pretrained model's samples
    t0 = time.time()
    kw = dict(K=args.K, max_new_tokens=args.new_tokens, temperature=args.temperature, generator=gen)
    val, val_scores = collect_rankings(lm, tok, val_p, labeller, **kw)
    train, train_scores = collect_rankings(lm, tok, train_p, labeller, **kw)
    t_sample = time.time() - t0
    print(f"sampled {args.K} x {len(train_p) + len(val_p)} continuations in {t_sample:.0f} s", flush=True)

    # 2. reward-model accuracy against the number of comparisons
    pairs_per_prompt = args.K // 2                          # disjoint pairs (0, 1), (2, 3), ...
    pair_data = Rankings([p for p in train.prompts for _ in range(pairs_per_prompt)],
                         [rs[2 * i:2 * i + 2] for rs in train.responses for i in range(pairs_per_prompt)],
                         torch.stack([rk[2 * i:2 * i + 2].argsort().argsort() for rk in train.ranks
                                      for i in range(pairs_per_prompt)]))
    common = dict(val=val, val_scores=val_scores, lr=args.rm_lr, threads=args.threads)
    jobs = [dict(common, data=train.subset(range(n)), loss="rankings", comparisons=n * args.K * (args.K - 1) // 2,
                 seed=s, batch=args.rm_batch, keep=(n == len(train) and s == args.rm_seeds[0]))
            for n in args.kwise_prompts if n <= len(train) for s in args.rm_seeds]
    jobs += [dict(common, data=pair_data.subset(range(n)), loss="pairs", comparisons=n, seed=s,
                  batch=args.rm_batch * args.K // 2)                # the same number of responses per step
             for n in args.pair_comparisons if n <= len(pair_data) for s in args.rm_seeds]
    jobs.sort(key=lambda j: -len(j["data"]) * j["data"].K)    # longest first: the pool finishes together
    t0 = time.time()
    rm_runs = run_jobs(_rm_task, jobs, args.jobs)
    t_rm = time.time() - t0
    final = next(r for r in rm_runs if "state_dict" in r)
    for r in sorted(rm_runs, key=lambda r: (r["method"], r["comparisons"], r["seed"])):
        print(f"reward model {r['method']:8s} {r['comparisons']:6d} comparisons seed {r['seed']}: held-out accuracy "
              f"{r['acc_noisy']:.3f} (noiseless {r['acc_noiseless']:.3f}), {r['seconds']:.0f} s", flush=True)

    # 3. the reward model of PPO, normalised on rho's samples (Ziegler et al., Sec. 2.2)
    rm = RewardModel(lm)
    rm.load_state_dict({k: v.float() for k, v in final.pop("state_dict").items()})
    ids, mask = right_pad([join(p, r) for p, rs in zip(train.prompts, train.responses) for r in rs])
    rm.normalize_(ids, mask)
    rm_state = {k: v.half() for k, v in rm.state_dict().items()}
    torch.save({"state_dict": rm_state, "config": asdict(lm.config),
                "about": "reward model of chapter 22 (scripts/ch22_ziegler_runs.py): the pretrained GPT's trunk "
                         "and a scalar head, trained on every training ranking, normalised on rho's samples",
                "pretrained_val_loss": info.get("val_loss")}, args.rm_out)

    # 4. PPO with fixed and adaptive beta
    base = dict(iterations=args.iterations, batch_size=args.batch, max_new_tokens=args.new_tokens,
                temperature=args.temperature, epochs=args.epochs, minibatch_size=args.minibatch, lr=args.lr,
                horizon=args.horizon)
    ppo_jobs = [dict(name=f"beta={b}", cfg=dict(base, beta=b, seed=s)) for b in args.betas for s in args.ppo_seeds]
    ppo_jobs += [dict(name=f"target={t}", cfg=dict(base, beta=args.init_beta, target_kl=t, seed=args.ppo_seeds[0]))
                 for t in args.targets]
    for j in ppo_jobs:
        j.update(rm_state=rm_state, prompts=ppo_p, labeller_temperature=args.labeller_temperature,
                 threads=args.threads)
    t0 = time.time()
    ppo_runs = run_jobs(_ppo_task, ppo_jobs, args.jobs)
    t_ppo = time.time() - t0
    for r in ppo_runs:
        print(f"PPO {r['name']:12s} seed {r['seed']}: labeller {r['labeller'][0]:.3f} -> {r['labeller'][-1]:.3f}, "
              f"KL {r['kl'][-1]:.2f}, beta {r['beta'][-1]:.4f}, {sum(r['seconds']):.0f} s", flush=True)

    # 5. the best reward for each KL, by reweighting samples of rho
    t0 = time.time()
    fp = ppo_p[:args.frontier_prompts]
    samples = sample_responses(lm, tok, fp, args.frontier_samples, args.new_tokens, args.temperature, gen)
    lab = labeller.score(None, [tok.decode(r) for rs in samples for r in rs]).view(len(fp), -1)
    fids, fmask = right_pad([join(tok.encode(p), r) for p, rs in zip(fp, samples) for r in rs])
    with torch.no_grad():                                   # (with autograd on, 4,096 samples' graphs took 24 GB)
        rm_scores = torch.cat([rm(fids[i:i + 256], fmask[i:i + 256])
                               for i in range(0, len(fids), 256)]).view(len(fp), -1)
    lams = [2.0 ** e for e in range(-6, 7)]
    kl_lab, v_lab = optimal_frontier(lab, lams)
    kl_rm, v_rm = optimal_frontier(rm_scores.detach(), lams)
    t_frontier = time.time() - t0

    # 6. continuations of fixed prompts by the pretrained model
    g = torch.Generator().manual_seed(1234)
    before = [[tok.decode(r) for r in rs] for rs in sample_responses(lm, tok, SAMPLE_PROMPTS, 2, args.new_tokens,
                                                                      args.temperature, g)]
    res = {
        "about": __doc__.split("\n\n")[0], "settings": settings(args),
        "pretrained": {"val_loss": info.get("val_loss"), "n_layer": lm.config.n_layer, "n_embd": lm.config.n_embd,
                       "block_size": lm.config.block_size, "params": lm.num_params()},
        "labeller": {"name": "PlainWordsLabeller", "temperature": args.labeller_temperature,
                     "train_mean": float(train_scores.mean()), "train_std": float(train_scores.std()),
                     "val_noise_ceiling": pair_accuracy(val_scores, val.ranks)},
        "reward_models": sorted(rm_runs, key=lambda r: (r["method"], r["comparisons"], r["seed"])),
        "ppo": ppo_runs,
        "frontier": {"lambdas": lams, "labeller": {"kl": kl_lab, "value": v_lab}, "reward_model": {"kl": kl_rm, "value": v_rm},
                     "prompts": len(fp), "samples": args.frontier_samples},
        "sample_prompts": SAMPLE_PROMPTS, "samples_before": before,
        "seconds": {"sampling": round(t_sample, 1), "reward_models": round(t_rm, 1), "ppo": round(t_ppo, 1),
                    "frontier": round(t_frontier, 1), "total": round(time.time() - t_start, 1)},
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "torch_version": torch.__version__,
        "command": "python scripts/ch22_ziegler_runs.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
    }
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) and {args.rm_out} in "
          f"{res['seconds']['total']:.0f} s", flush=True)
    return res


if __name__ == "__main__":
    main()
