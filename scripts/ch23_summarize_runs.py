"""Chapter 23's longer runs: SFT on reference summaries, reward models from noisy comparisons,
then PPO against them far from the SFT policy (reward over-optimisation).

Stiennon et al. (2020), arXiv:2009.01325, on the course's pretrained GPT and the task of
:mod:`llmcourse.rlhf.summaries` (a speaker's line in, the name and key words out; the
labeller :class:`~llmcourse.rlhf.summaries.SummaryLabeller`). Steps, all seeded:

1. SFT: the pretrained GPT fine-tuned on the reference summaries of the training passages
   (loss on the summary tokens only);
2. comparisons: two summaries of each of ``--comparisons`` training passages sampled from
   the SFT policy (temperature 1), judged by the noisy labeller (Bradley-Terry), and of
   ``--val-prompts`` other passages for held-out accuracy;
3. reward models, initialised from the SFT model, one epoch of Bradley-Terry on the first
   ``n`` comparisons for each ``n`` of ``--rm-sizes``, normalised on the SFT samples they
   were trained on (mean 0, std 1);
4. PPO from the SFT policy against each reward model with a small fixed beta (KL to the
   SFT policy), several seeds: per iteration the reward model's score, the labeller's score
   and its terms, the KL, and the labeller's expected preference over the reference
   summaries of the same passages; and every ``--eval-every`` updates a held-out evaluation
   (one summary of each evaluation passage, the same seed each time): the labeller's score
   and its expected preference for the policy's summaries over the SFT policy's and over the
   references.

Writes ``llmcourse/data/ch23_summarize_runs.json`` (settings, seconds, load averages).
Usage (the shipped file; the serial steps use two threads, the parallel ones two processes)::

    python scripts/ch23_summarize_runs.py --jobs 2 --threads 2

Prints a time estimate first. Smoke run (seconds; writes elsewhere)::

    python scripts/ch23_summarize_runs.py --smoke --out /tmp/ch23_smoke.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import time
from pathlib import Path

import torch

from llmcourse.gpt import load_pretrained
from llmcourse.rlhf import summaries as S
from llmcourse.rlhf.labeller import preference_probability
from llmcourse.rlhf.ppo import PolicyWithValue, PPOTextConfig, train_ppo_text
from llmcourse.rlhf.reward import (RewardModel, collect_rankings, join, pair_accuracy, ranking_scores, right_pad,
                                   rm_config, sample_responses, train_reward_model)
from llmcourse.rlhf.sft import SFTData, sft_config, train_sft
from llmcourse.train import run_jobs, set_seed

OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "ch23_summarize_runs.json"
N_EXAMPLES = 4                                         #: evaluation passages whose summaries are kept


def _state(model) -> bytes:
    return pickle.dumps({k: v.clone() for k, v in model.state_dict().items()})


def _load(model, blob: bytes):
    model.load_state_dict(pickle.loads(blob))
    return model.eval()


@torch.no_grad()
def summaries_of(model, tok, passages, temperature: float, seed: int) -> list[str]:
    """One summary of each passage (end marker included when it came), seeded."""
    g = torch.Generator().manual_seed(seed)
    out = sample_responses(model, tok, [p.prompt for p in passages], 1, S.MAX_NEW_TOKENS, temperature, g,
                           eos_id=tok.stoi[S.END])
    return [tok.decode(rs[0]) for rs in out]


def evaluate(labeller, passages, texts, sft_texts) -> dict:
    """Mean labeller score and terms, and expected preference over SFT and over the references."""
    prompts = [p.prompt for p in passages]
    s = labeller.score(prompts, texts)
    terms = [labeller.terms(p, t) for p, t in zip(passages, texts)]
    ref = labeller.score(prompts, [p.response for p in passages])
    out = {"score": float(s.mean()), "vs_reference": float(preference_probability(s, ref, labeller.temperature).mean())}
    if sft_texts is not None:
        out["vs_sft"] = labeller.win_rate(prompts, texts, sft_texts)
    for key in ("coverage", "over_budget", "invented", "ended"):
        out[key] = sum(float(getattr(t, key)) for t in terms) / len(terms)
    out["length"] = sum(len(t.partition(S.END)[0]) for t in texts) / len(texts)
    return out


# ----------------------------------------------------------------------------- the tasks (one process each)


def _rm_task(job: dict) -> dict:
    """One reward model on the first ``n`` comparisons: held-out accuracy; normalised state."""
    torch.set_num_threads(job["threads"])
    lm, _, _ = load_pretrained()
    sft = _load(lm, job["sft_state"])
    data, val, val_scores = job["data"], job["val"], job["val_scores"]
    set_seed(1000 + job["seed"])                        # the head's initialisation, whatever process runs it
    rm = RewardModel(sft)
    t0 = time.perf_counter()
    hist = train_reward_model(rm, data, rm_config(lr=job["lr"], batch_size=job["batch"], seed=job["seed"]),
                              loss="pairs", progress=False)
    s = ranking_scores(rm, val)
    clean = val_scores[:, 0] != val_scores[:, 1]        # the labeller's noiseless preference, where it has one
    right = ((s[:, 0] - s[:, 1]) * (val_scores[:, 0] - val_scores[:, 1]) > 0).double()
    ids, mask = right_pad([join(p, r) for p, rs in zip(data.prompts, data.responses) for r in rs])
    rm.normalize_(ids, mask)
    return {"comparisons": len(data), "seed": job["seed"], "acc_noisy": pair_accuracy(s, val.ranks),
            "acc_noiseless": float(right[clean].mean()), "noiseless_pairs": int(clean.sum()),
            "final_loss": sum(hist.loss[-20:]) / len(hist.loss[-20:]), "steps": len(hist.loss),
            "loss_curve": [round(x, 4) for x in hist.loss[::5]], "seconds": round(time.perf_counter() - t0, 1),
            "state": _state(rm)}


class _HeldOutLog(S.LabellerLog):
    """The labeller's log of PPO, and every ``every`` updates the held-out evaluation of the
    policy as it is then (one summary of each evaluation passage, the same seed each time)."""

    def __init__(self, labeller, policy, tok, evals, sft_texts, every: int, iterations: int, temperature: float,
                 seed: int):
        super().__init__(labeller)
        self.policy, self.tok, self.evals, self.sft_texts = policy, tok, evals, sft_texts
        self.every, self.iterations, self.temperature, self.seed = every, iterations, temperature, seed
        self.held_out = []

    def __call__(self, prompts, responses):
        scores = super().__call__(prompts, responses)
        updates = len(self.log["score"])                   # train_ppo_text calls this after each update
        if updates % self.every == 0 or updates == self.iterations:
            texts = summaries_of(self.policy.lm, self.tok, self.evals, self.temperature, self.seed)
            self.held_out.append(dict(updates=updates, **evaluate(self.labeller, self.evals, texts, self.sft_texts)))
            self.last_texts = texts
        return scores


def _ppo_task(job: dict) -> dict:
    """One PPO run from the SFT policy against one reward model; the labeller's log; held-out evaluation."""
    torch.set_num_threads(job["threads"])
    lm, tok, _ = load_pretrained()
    sft = _load(lm, job["sft_state"])
    rm = _load(RewardModel(sft), job["rm_state"])
    policy = PolicyWithValue(copy.deepcopy(sft))
    cfg = PPOTextConfig(**job["cfg"], eos_id=tok.stoi[S.END])
    labeller = S.SummaryLabeller(job["labeller_temperature"])
    train, evals = S.build()
    evals = evals[:job["eval_passages"]]
    log = _HeldOutLog(labeller, policy, tok, evals, job["sft_eval_texts"], job["eval_every"], cfg.iterations,
                      cfg.temperature, job["eval_seed"])
    hist = train_ppo_text(policy, rm, [p.prompt for p in train], tok, cfg, ref=sft, labeller=log, progress=False)
    texts = log.last_texts
    out = {k: v for k, v in hist.as_dict().items() if k not in ("samples", "generate_seconds", "score_seconds",
                                                                  "update_seconds", "tokens", "ptx_loss")}
    out = {k: [round(x, 5) for x in v] if isinstance(v, list) else v for k, v in out.items()}
    out["terms"] = {k: [round(x, 5) for x in v] for k, v in log.log.items()}
    out["samples"] = [hist.samples[i] for i in sorted({0, len(hist.samples) // 2, len(hist.samples) - 1})]
    out["held_out"] = log.held_out
    out["final_eval"] = log.held_out[-1]
    out["final_examples"] = texts[:N_EXAMPLES]
    out.update(rm_comparisons=job["rm_comparisons"], seed=cfg.seed, beta=cfg.beta)
    return out




# ----------------------------------------------------------------------------- main


def estimate_minutes(a) -> tuple[float, float]:
    """(wall minutes, core minutes), from per-unit costs measured in a pilot run (one thread, shared machine)."""
    sft = a.sft_steps * a.sft_batch / 32 * 0.64
    sample = (2 * (a.comparisons + a.val_prompts) + 2 * a.eval_passages) * 0.0095
    rms = sum(a.rm_sizes) * 0.047
    ppo = len(a.rm_sizes) * len(a.ppo_seeds) * (a.iterations * a.batch / 64 * 5.0 + a.iterations / a.eval_every * 0.02 * a.eval_passages)
    serial = (sft + sample) / max(1, min(a.threads, 2) * 0.75)
    wall = serial + max(rms / min(a.jobs, len(a.rm_sizes)), sum(a.rm_sizes[:1]) * 0.047) + ppo / a.jobs
    return wall / 60, (serial * max(a.jobs, a.threads) + rms + ppo) / 60


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sft-steps", type=int, default=350)
    ap.add_argument("--sft-batch", type=int, default=32)
    ap.add_argument("--sft-lr", type=float, default=1e-3)
    ap.add_argument("--comparisons", type=int, default=2400, help="training passages with two SFT summaries each")
    ap.add_argument("--val-prompts", type=int, default=400, help="held-out comparisons for reward-model accuracy")
    ap.add_argument("--rm-sizes", type=int, nargs="+", default=[2400, 600], help="comparisons per reward model")
    ap.add_argument("--rm-lr", type=float, default=3e-4)
    ap.add_argument("--rm-batch", type=int, default=16, help="comparisons per reward-model step")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the SFT policy and PPO")
    ap.add_argument("--labeller-temperature", type=float, default=0.15)
    ap.add_argument("--beta", type=float, default=0.01, help="KL coefficient (to the SFT policy), fixed")
    ap.add_argument("--ppo-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--minibatch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--jobs", type=int, default=1, help="processes in parallel (one per core)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the serial steps (workers: one)")
    ap.add_argument("--eval-passages", type=int, default=200, help="held-out passages of the evaluations (at most 200)")
    ap.add_argument("--eval-every", type=int, default=5, help="PPO updates between held-out evaluations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a tiny budget, for the tests")
    ap.add_argument("--out", type=Path, default=OUT)
    return ap


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    if args.smoke:
        args.sft_steps, args.sft_batch, args.comparisons, args.val_prompts = 3, 4, 12, 6
        args.rm_sizes, args.ppo_seeds, args.iterations, args.batch, args.minibatch = [12, 6], [0], 2, 8, 4
        args.eval_passages, args.eval_every = 8, 1
    args.rm_sizes = [n for n in args.rm_sizes if n <= args.comparisons]
    wall, core = estimate_minutes(args)
    print(f"estimate: about {wall:.0f} minutes ({core:.0f} core-minutes) with --jobs {args.jobs} "
          f"--threads {args.threads}", flush=True)
    t_start, load_before = time.time(), os.getloadavg()
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    lm, tok, info = load_pretrained()
    train, evals = S.build()
    evals = evals[:args.eval_passages]
    labeller = S.SummaryLabeller(args.labeller_temperature)
    end = tok.stoi[S.END]
    seconds = {}

    # 1. SFT on the reference summaries
    t0 = time.time()
    sft = copy.deepcopy(lm)
    sft_eval = SFTData.from_pairs(tok, evals)
    hist = train_sft(sft, SFTData.from_pairs(tok, train),
                     sft_config(max_iters=args.sft_steps, batch_size=args.sft_batch, lr=args.sft_lr,
                                min_lr=args.sft_lr / 10, warmup_iters=min(30, args.sft_steps), seed=args.seed),
                     progress=False)
    sft.eval()
    sft_texts = summaries_of(sft, tok, evals, args.temperature, args.seed + 7)
    greedy = summaries_of(sft, tok, evals, 0.0, args.seed + 7)
    sft_res = {"train_loss": [round(x, 4) for x in hist.train_loss[::10]], "eval_loss": sft_eval.loss(sft),
               "pretrained_eval_loss": sft_eval.loss(lm),
               "eval": evaluate(labeller, evals, sft_texts, None), "greedy_eval": evaluate(labeller, evals, greedy, None),
               "examples": sft_texts[:N_EXAMPLES]}
    seconds["sft"] = round(time.time() - t0, 1)
    print(f"SFT: eval loss {sft_res['pretrained_eval_loss']:.3f} -> {sft_res['eval_loss']:.3f}; labeller "
          f"{sft_res['eval']['score']:.3f} (preferred to the reference {sft_res['eval']['vs_reference']:.3f}); "
          f"{seconds['sft']:.0f} s", flush=True)

    # 2. comparisons of two SFT summaries of each passage
    t0 = time.time()
    gen = torch.Generator().manual_seed(args.seed)
    kw = dict(K=2, max_new_tokens=S.MAX_NEW_TOKENS, temperature=args.temperature, generator=gen, eos_id=end)
    val, val_scores = collect_rankings(sft, tok, [p.prompt for p in train[-args.val_prompts:]], labeller, **kw)
    data, data_scores = collect_rankings(sft, tok, [p.prompt for p in train[:args.comparisons]], labeller, **kw)
    seconds["comparisons"] = round(time.time() - t0, 1)
    ceiling = pair_accuracy(val_scores, val.ranks)
    ties = float((data_scores[:, 0] == data_scores[:, 1]).double().mean())
    print(f"comparisons: {len(data)} + {len(val)} held out; the labeller's noiseless score agrees with its noisy "
          f"labels on {ceiling:.3f}; {100 * ties:.0f}% ties; {seconds['comparisons']:.0f} s", flush=True)

    # 3. reward models
    t0 = time.time()
    sft_state = _state(sft)
    jobs = [dict(data=data.subset(range(n)), val=val, val_scores=val_scores, sft_state=sft_state, seed=args.seed,
                 lr=args.rm_lr, batch=args.rm_batch, threads=1) for n in args.rm_sizes]
    rms = run_jobs(_rm_task, jobs, args.jobs)
    seconds["reward_models"] = round(time.time() - t0, 1)
    for r in rms:
        print(f"reward model on {r['comparisons']} comparisons: held-out accuracy {r['acc_noisy']:.3f} "
              f"(noiseless {r['acc_noiseless']:.3f}), {r['seconds']:.0f} s", flush=True)

    # 4. PPO against each reward model
    t0 = time.time()
    base = dict(iterations=args.iterations, batch_size=args.batch, max_new_tokens=S.MAX_NEW_TOKENS,
                temperature=args.temperature, epochs=args.epochs, minibatch_size=args.minibatch, lr=args.lr,
                beta=args.beta)
    ppo_jobs = [dict(cfg=dict(base, seed=s), sft_state=sft_state, rm_state=r["state"], rm_comparisons=r["comparisons"],
                     labeller_temperature=args.labeller_temperature, eval_seed=args.seed + 7, sft_eval_texts=sft_texts,
                     eval_passages=args.eval_passages, eval_every=args.eval_every, threads=1) for r in rms for s in args.ppo_seeds]
    ppo = run_jobs(_ppo_task, ppo_jobs, args.jobs)
    seconds["ppo"] = round(time.time() - t0, 1)
    for r in ppo:
        t, e = r["terms"], r["final_eval"]
        print(f"PPO rm={r['rm_comparisons']} seed {r['seed']}: RM {r['score'][0]:.2f} -> {r['score'][-1]:.2f}, "
              f"labeller {t['score'][0]:.3f} -> max {max(t['score']):.3f} -> {t['score'][-1]:.3f}, KL {r['kl'][-1]:.1f}, "
              f"length {t['length'][-1]:.0f}; held out: vs SFT {e['vs_sft']:.3f}, vs reference {e['vs_reference']:.3f}",
              flush=True)
    for r in rms:
        del r["state"]

    res = {
        "about": __doc__.split("\n\n")[0], "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "pretrained": {"val_loss": info.get("val_loss"), "params": lm.num_params(), "block_size": lm.config.block_size},
        "task": {"format": S.PROMPT_FORMAT, "end": S.END, "budget": S.BUDGET, "n_key": S.N_KEY,
                 "max_passage": S.MAX_PASSAGE, "max_new_tokens": S.MAX_NEW_TOKENS, "train_passages": len(train),
                 "eval_passages": len(evals), "examples": [[p.prompt, p.response] for p in evals[:N_EXAMPLES]]},
        "labeller": {"temperature": labeller.temperature, "length_penalty": labeller.length_penalty,
                     "invented_penalty": labeller.invented_penalty, "no_end_penalty": labeller.no_end_penalty,
                     "reference_eval": evaluate(labeller, evals, [p.response for p in evals], None),
                     "val_noise_ceiling": ceiling, "comparison_ties": ties,
                     "comparison_scores_mean": float(data_scores.mean()), "comparison_scores_std": float(data_scores.std())},
        "sft": sft_res, "reward_models": rms, "ppo": ppo, "seconds": {**seconds, "total": round(time.time() - t_start, 1)},
        "estimate_minutes": round(wall, 1), "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()), "torch_version": torch.__version__,
        "command": "python scripts/ch23_summarize_runs.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
    }
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) in {res['seconds']['total']:.0f} s", flush=True)
    return res


if __name__ == "__main__":
    main()
