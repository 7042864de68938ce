"""The InstructGPT pipeline in one command: SFT, a reward model on K-wise rankings, PPO and PPO-ptx.

Ouyang et al. (2022), "Training language models to follow instructions with human
feedback", arXiv:2203.02155, Fig. 2 and Sec. 3.5, on the course's pretrained GPT and the
shipped instruction data (:mod:`llmcourse.rlhf.instructions`):

1. **SFT**: fine-tune the pretrained model on the demonstrations (:mod:`~llmcourse.rlhf.sft`).
2. **Reward model**: sample K = 4 responses per prompt from the SFT model, have the noisy
   labeller rank them (:class:`~llmcourse.rlhf.labeller.InstructionLabeller`), train a reward
   model initialised from the SFT model on the rankings, all K(K-1)/2 pairs of a prompt in one
   batch element (eq. 1), and normalise it on the SFT model's samples
   (:mod:`~llmcourse.rlhf.reward`).
3. **PPO** from the SFT policy against the reward model, with the per-token KL penalty to the
   SFT model; and **PPO-ptx**, the same run (same seed) with the pretraining loss on Shakespeare
   mixed into every step with coefficient ``ptx_coef`` (eq. 2; :mod:`~llmcourse.rlhf.ppo`).

Each stage (:data:`STAGES`) writes its checkpoint (a state dict) and then its entry of
``metrics.json``: its settings, seconds and evaluation (success per instruction kind on
held-out examples, the labeller's win rate against SFT, the Shakespeare validation loss; the
reward model's accuracy on held-out rankings). ``manifest.json`` identifies the run (its
settings and a run id): running again with the same settings resumes after the last completed
stage; a folder holding another run's files, or files of its own, is refused unless
``--overwrite`` is given. Every stage seeds itself and reads its inputs from the checkpoints
on disk, so a resumed run computes what an uninterrupted one does.

Usage::

    python -m llmcourse.rlhf.pipeline --out runs/instructgpt          # the full run
    python -m llmcourse.rlhf.pipeline --out /tmp/instructgpt --quick  # tiny settings, seconds

Checked by ``tests/test_rlhf_pipeline.py``; the shipped runs of chapter 24 come from
``scripts/ch24_pipeline_runs.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from . import instructions as I
from .labeller import InstructionLabeller
from .ppo import PolicyWithValue, PPOTextConfig, train_ppo_text
from .reward import RewardModel, collect_rankings, join, pair_accuracy, ranking_scores, right_pad, rm_config, \
    train_reward_model
from .sft import SFTData, sft_config, train_sft


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of a run (the manifest stores them; a resumed run must have the same)."""

    seed: int = 0                       #: seeds every stage (stage i uses seed * 100 + i)
    # step 1: SFT
    sft_steps: int = 300                #: optimizer steps on the demonstrations
    sft_batch: int = 32                 #: demonstrations per step
    sft_lr: float = 1e-3                #: peak learning rate (cosine decay to a tenth)
    # step 2: rankings and the reward model
    K: int = 4                          #: responses ranked per prompt
    rank_prompts: int = 500             #: training prompts ranked (trained kinds)
    rank_val_prompts: int = 120         #: held-out prompts ranked (trained kinds, evaluation lines)
    sample_temperature: float = 1.0     #: sampling temperature of the rankings' responses and of PPO
    max_new_tokens: int = 40            #: longest response
    labeller_temperature: float = 0.1   #: the labeller's Bradley-Terry / Plackett-Luce noise
    rm_lr: float = 3e-4                 #: reward-model learning rate
    rm_batch: int = 8                   #: prompts (K responses each) per reward-model step
    rm_epochs: int = 2                  #: passes over the rankings
    # step 3: PPO and PPO-ptx
    ppo_iterations: int = 20            #: rollout-and-update rounds
    ppo_batch: int = 64                 #: prompts per rollout
    ppo_minibatch: int = 16             #: episodes per gradient step
    ppo_epochs: int = 4                 #: passes over each rollout
    ppo_lr: float = 3e-5                #: Adam learning rate
    beta: float = 0.1                   #: KL coefficient (fixed) to the SFT model
    ptx_coef: float = 1.0               #: PPO-ptx: weight of the Shakespeare loss (InstructGPT's gamma)
    ptx_batch: int = 4                  #: Shakespeare windows of block_size characters per PPO step
    # evaluation
    n_eval: int = 50                    #: held-out examples per instruction kind (greedy)
    val_batches: int = 20               #: batches of 32 windows for the Shakespeare validation loss


QUICK = dict(sft_steps=20, sft_batch=8, rank_prompts=16, rank_val_prompts=12, rm_batch=8, rm_epochs=1,
             ppo_iterations=2, ppo_batch=8, ppo_minibatch=8, ppo_epochs=1, ptx_batch=2, n_eval=4, val_batches=2)
"""The ``--quick`` settings: every stage runs, in seconds (the numbers mean little)."""


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline: InstructGPT's step it belongs to, what it reads and writes."""

    name: str                           #: key in metrics.json; its checkpoint is ``<name>.pt``
    step: int                           #: InstructGPT's step (Fig. 2): 1, 2 or 3
    title: str
    inputs: tuple                       #: what it starts from
    output: str                         #: the model it makes


STAGES = (
    Stage("sft", 1, "Supervised fine-tuning", ("pretrained GPT", "demonstrations"), "SFT policy"),
    Stage("reward", 2, "Reward model", ("SFT policy", f"K = {PipelineConfig.K} samples ranked by the labeller"),
          "reward model"),
    Stage("ppo", 3, "PPO", ("SFT policy", "reward model", "KL penalty to SFT"), "PPO policy"),
    Stage("ppo_ptx", 3, "PPO-ptx", ("SFT policy", "reward model", "KL penalty to SFT", "Shakespeare loss"),
          "PPO-ptx policy"),
)
OWN_FILES = ("manifest.json", "metrics.json") + tuple(f"{s.name}.pt" for s in STAGES)


class FolderInUse(Exception):
    """The output folder holds another run's files or files of its own."""


# ----------------------------------------------------------------------------- shared pieces


class Context:
    """What every stage needs: the pretrained model, tokenizer, data and labeller (read once)."""

    def __init__(self, cfg: PipelineConfig):
        from ..data import shakespeare_splits
        from ..gpt import load_pretrained
        from ..train import TrainConfig

        self.cfg = cfg
        self.pretrained, self.tok, _ = load_pretrained()
        self.train, evals = I.load_instructions()
        self.evals = [e for k in I.KINDS for e in [x for x in evals if x.kind == k][:cfg.n_eval]]
        _, self.train_ids, self.val_ids = shakespeare_splits()
        self.val_cfg = TrainConfig(batch_size=32, block_size=self.pretrained.config.block_size,
                                   eval_iters=cfg.val_batches)
        self.labeller = InstructionLabeller(cfg.labeller_temperature)
        self.end = self.tok.stoi[I.END]
        # prompts of the trained kinds: the first rank_prompts are ranked, the rest are PPO's
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        self.rank_prompts = [self.train[i].prompt for i in order[:cfg.rank_prompts]]
        self.ppo_prompts = [self.train[i].prompt for i in order[cfg.rank_prompts:]]
        held = [e for k in I.TRAINED for e in [x for x in evals if x.kind == k][cfg.n_eval:]]
        pick = torch.randperm(len(held), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.rank_val_prompts]
        self.rank_val_prompts = [held[i].prompt for i in pick.tolist()]

    def model(self, state_dict=None):
        """A copy of the pretrained GPT, with ``state_dict`` loaded if given."""
        import copy

        lm = copy.deepcopy(self.pretrained)
        if state_dict is not None:
            lm.load_state_dict(state_dict)
        return lm.eval()

    def evaluate(self, lm, sft_responses=None) -> dict:
        """Greedy success per kind on the held-out examples, the Shakespeare validation loss, the
        labeller's mean score and, given the SFT model's responses to the same examples, the
        labeller's win rate against them (overall and per kind). The responses are kept."""
        from ..train import estimate_loss

        ev = I.evaluate(lm, self.tok, self.evals, max_new_tokens=self.cfg.max_new_tokens)
        prompts = [e.prompt for e in self.evals]
        out = {"success": {k: ev.rate(self.evals, k) for k in I.KINDS},
               "ended": {k: ev.rate(self.evals, k, "ended") for k in I.KINDS},
               "success_trained": _mean([ev.rate(self.evals, k) for k in I.TRAINED]),
               "success_held_out": _mean([ev.rate(self.evals, k) for k in I.HELD_OUT]),
               "val_loss": estimate_loss(lm, self.val_ids, self.val_cfg),
               "labeller_score": float(self.labeller.score(prompts, ev.responses).mean())}
        if sft_responses is not None:
            out.update(self.wins(ev.responses, sft_responses))
        out["responses"] = ev.responses
        return out

    def wins(self, responses, sft_responses) -> dict:
        """The labeller's expected win rate of ``responses`` against the SFT model's, overall and per kind."""
        prompts = [e.prompt for e in self.evals]
        by_kind = {k: self.labeller.win_rate(*[[x for x, e in zip(col, self.evals) if e.kind == k]
                                               for col in (prompts, responses, sft_responses)]) for k in I.KINDS}
        return {"win_rate": self.labeller.win_rate(prompts, responses, sft_responses), "win_rate_by_kind": by_kind}


def _mean(xs) -> float:
    return sum(xs) / len(xs)


def _save(path: Path, module: torch.nn.Module) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- the stages


def run_sft(ctx: Context, out: Path, metrics: dict, progress: bool) -> dict:
    """Step 1: fine-tune the pretrained GPT on the demonstrations (loss on the responses only)."""
    cfg = ctx.cfg
    lm = ctx.model()
    tcfg = sft_config(max_iters=cfg.sft_steps, batch_size=cfg.sft_batch, lr=cfg.sft_lr, min_lr=cfg.sft_lr / 10,
                      warmup_iters=min(30, cfg.sft_steps), eval_interval=10 ** 9, seed=cfg.seed)
    hist = train_sft(lm, SFTData.from_pairs(ctx.tok, ctx.train), tcfg, progress=progress)
    _save(out / "sft.pt", lm)
    after = ctx.evaluate(lm)
    after.update(ctx.wins(after["responses"], after["responses"]))        # against itself: 0.5
    before = ctx.evaluate(ctx.pretrained, sft_responses=after["responses"])
    return {"settings": {"steps": cfg.sft_steps, "batch": cfg.sft_batch, "lr": cfg.sft_lr},
            "train_loss": [round(x, 4) for x in hist.train_loss[::max(1, cfg.sft_steps // 50)]],
            "pretrained": before, "evaluation": after}


def run_reward(ctx: Context, out: Path, metrics: dict, progress: bool) -> dict:
    """Step 2: K responses per prompt from the SFT model, ranked by the noisy labeller; a reward
    model initialised from the SFT model, trained on the rankings (eq. 1) and normalised."""
    cfg = ctx.cfg
    sft = ctx.model(_load(out / "sft.pt"))
    gen = torch.Generator().manual_seed(cfg.seed * 100 + 2)
    common = dict(K=cfg.K, max_new_tokens=cfg.max_new_tokens, temperature=cfg.sample_temperature,
                  generator=gen, eos_id=ctx.end)
    data, scores = collect_rankings(sft, ctx.tok, ctx.rank_prompts, ctx.labeller, **common)
    val, val_scores = collect_rankings(sft, ctx.tok, ctx.rank_val_prompts, ctx.labeller, **common)
    rm = RewardModel(sft)
    hist = train_reward_model(rm, data, rm_config(lr=cfg.rm_lr, min_lr=cfg.rm_lr / 10, batch_size=cfg.rm_batch,
                                                  seed=cfg.seed), loss="rankings", epochs=cfg.rm_epochs,
                              progress=progress)
    rows = [join(p, r) for p, rs in zip(data.prompts, data.responses) for r in rs]
    rm.normalize_(*right_pad(rows))                       # mean 0, std 1 on the SFT model's samples
    _save(out / "reward.pt", rm)
    s = ranking_scores(rm, val)
    better = val_scores[:, :, None] > val_scores[:, None, :]         # the labeller's noiseless preference
    diff = s[:, :, None] - s[:, None, :]
    return {"settings": {"K": cfg.K, "prompts": len(data), "val_prompts": len(val), "lr": cfg.rm_lr,
                         "batch": cfg.rm_batch, "epochs": cfg.rm_epochs,
                         "labeller_temperature": cfg.labeller_temperature,
                         "sample_temperature": cfg.sample_temperature},
            "train_loss": [round(x, 4) for x in hist.loss],
            "evaluation": {"accuracy": pair_accuracy(s, val.ranks),
                           "accuracy_noiseless": float(((diff > 0).double() + 0.5 * (diff == 0).double())[better].mean()),
                           "labeller_ceiling": pair_accuracy(val_scores, val.ranks),
                           "sample_labeller_score": float(scores.mean())}}


def _run_ppo(ctx: Context, out: Path, metrics: dict, progress: bool, ptx: bool) -> dict:
    from ..data import get_batch

    cfg = ctx.cfg
    name = "ppo_ptx" if ptx else "ppo"
    sft = ctx.model(_load(out / "sft.pt"))
    rm = RewardModel(sft)
    rm.load_state_dict(_load(out / "reward.pt"))
    rm.eval().requires_grad_(False)
    policy = PolicyWithValue(ctx.model(_load(out / "sft.pt")))
    pcfg = PPOTextConfig(iterations=cfg.ppo_iterations, batch_size=cfg.ppo_batch, max_new_tokens=cfg.max_new_tokens,
                         temperature=cfg.sample_temperature, eos_id=ctx.end, epochs=cfg.ppo_epochs,
                         minibatch_size=cfg.ppo_minibatch, lr=cfg.ppo_lr, beta=cfg.beta, seed=cfg.seed,
                         ptx_coef=cfg.ptx_coef if ptx else 0.0)
    batches = None
    if ptx:
        ptx_gen = torch.Generator().manual_seed(cfg.seed * 100 + 4)      # its own: the rollouts stay PPO's
        block = sft.config.block_size

        def batches():
            return get_batch(ctx.train_ids, cfg.ptx_batch, block, ptx_gen)
    hist = train_ppo_text(policy, rm, ctx.ppo_prompts, ctx.tok, pcfg, ref=sft, labeller=ctx.labeller,
                          progress=progress, pretrain_batch=batches)
    _save(out / f"{name}.pt", policy.lm)
    ev = ctx.evaluate(policy.lm, sft_responses=metrics["sft"]["evaluation"]["responses"])
    h = hist.as_dict()
    keep = ("labeller", "score", "kl", "entropy", "length", "clip_fraction", "ptx_loss", "seconds")
    return {"settings": {"iterations": pcfg.iterations, "batch": pcfg.batch_size, "minibatch": pcfg.minibatch_size,
                         "epochs": pcfg.epochs, "lr": pcfg.lr, "beta": pcfg.beta, "ptx_coef": pcfg.ptx_coef,
                         "ptx_batch": cfg.ptx_batch if ptx else 0, "temperature": pcfg.temperature},
            "history": {k: [round(x, 4) for x in h[k]] for k in keep},
            "samples": h["samples"][-1], "evaluation": ev}


def run_ppo(ctx: Context, out: Path, metrics: dict, progress: bool) -> dict:
    """Step 3: PPO from the SFT policy against the reward model, KL penalty to the SFT model."""
    return _run_ppo(ctx, out, metrics, progress, ptx=False)


def run_ppo_ptx(ctx: Context, out: Path, metrics: dict, progress: bool) -> dict:
    """Step 3 with the pretraining mix: PPO-ptx, the same seed, Shakespeare batches in every step."""
    return _run_ppo(ctx, out, metrics, progress, ptx=True)


RUNNERS = {"sft": run_sft, "reward": run_reward, "ppo": run_ppo, "ppo_ptx": run_ppo_ptx}


def draw_stages(stages=STAGES):
    """A diagram of the pipeline drawn from :data:`STAGES`: one column per InstructGPT step, one
    box per stage (its title, inputs, output and the function that runs it), arrows between steps."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    steps = sorted({s.step for s in stages})
    fig, ax = plt.subplots(figsize=(7.2, 4.4))       # at most 7.5 in: it must fit a phone (tests/test_book_html.py)
    ax.set_axis_off()
    ax.set_xlim(0, len(steps))
    ax.set_ylim(0, 1)
    boxes = {}
    for j, step in enumerate(steps):
        group = [s for s in stages if s.step == step]
        ax.text(j + 0.5, 0.99, f"Step {step}", ha="center", va="top", fontsize=11, weight="bold")
        h = 0.9 / len(group)
        for i, stage in enumerate(group):
            y0, y1 = 0.92 - (i + 1) * h + 0.02, 0.92 - i * h - 0.02
            ax.add_patch(FancyBboxPatch((j + 0.06, y0), 0.88, y1 - y0, boxstyle="round,pad=0.01", fc=f"C{j}",
                                        ec=f"C{j}", alpha=0.18))
            lines = [*(f"+ {x}" for x in stage.inputs), f"-> {stage.output}"]
            ax.text(j + 0.5, y1 - 0.02, stage.title, ha="center", va="top", fontsize=9, weight="bold")
            ax.text(j + 0.1, y1 - 0.08, "\n".join(lines), ha="left", va="top", fontsize=6.5, linespacing=1.3)
            ax.text(j + 0.5, y0 + 0.015, f"{RUNNERS[stage.name].__name__}()", ha="center", va="bottom",
                    fontsize=7, family="monospace")
            boxes[stage.name] = (j, (y0 + y1) / 2)
    for a in stages:
        for b in stages:
            if b.step == a.step + 1:
                (ja, ya), (jb, yb) = boxes[a.name], boxes[b.name]
                ax.add_patch(FancyArrowPatch((ja + 0.95, ya), (jb + 0.05, yb), arrowstyle="-|>", mutation_scale=12,
                                             color="0.3"))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the run folder


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def settings_id(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def prepare(out: Path, cfg: PipelineConfig, overwrite: bool = False) -> tuple[dict, dict]:
    """The run's ``(manifest, metrics)``: the existing ones when ``out`` holds a run with these
    settings (resume), new ones in an empty or new folder. Raises :class:`FolderInUse` when
    ``out`` holds another run or other files, unless ``overwrite`` (which removes this
    pipeline's files from ``out``, a previous run's manifest, metrics and checkpoints, and
    leaves any other file alone)."""
    settings = asdict(cfg)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path, metrics_path = out / "manifest.json", out / "metrics.json"
    if manifest_path.exists() and not overwrite:
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
        if manifest.get("settings") == settings:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
            done = {}                     # the completed stages: a prefix of STAGES, each with its checkpoint
            for stage in STAGES:
                if stage.name not in metrics or not (out / f"{stage.name}.pt").exists():
                    break
                done[stage.name] = metrics[stage.name]
            return manifest, done
        changed = sorted(k for k in settings if manifest.get("settings", {}).get(k) != settings[k])
        raise FolderInUse(f"{out} holds another pipeline run (run id {manifest.get('run_id')}; different "
                          f"settings: {', '.join(changed) or 'unreadable manifest'}). Pass --overwrite to replace "
                          f"it, or choose another folder with --out.")
    if not overwrite and any(out.iterdir()):
        names = sorted(p.name for p in out.iterdir())[:5]
        raise FolderInUse(f"{out} is not empty and holds no pipeline run ({', '.join(names)}, ...). "
                          f"Pass --overwrite to write the run there anyway (files that are not the pipeline's "
                          f"are left alone), or choose another folder with --out.")
    for name in OWN_FILES:
        (out / name).unlink(missing_ok=True)
    manifest = {"pipeline": "llmcourse.rlhf.pipeline", "run_id": uuid.uuid4().hex[:12],
                "settings_id": settings_id(settings), "settings": settings,
                "stages": [s.name for s in STAGES], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "torch_version": torch.__version__}
    _write_json(manifest_path, manifest)
    return manifest, {}


def run(out, cfg: PipelineConfig = PipelineConfig(), overwrite: bool = False, until: str | None = None,
        progress: bool = True, log=print) -> dict:
    """Run (or resume) the pipeline in folder ``out``; returns the metrics (as in ``metrics.json``).
    ``until``: stop after that stage (the next call resumes after it)."""
    out = Path(out)
    if until is not None and until not in RUNNERS:
        raise ValueError(f"until must be one of {list(RUNNERS)}, not {until!r}")
    manifest, metrics = prepare(out, cfg, overwrite)
    done = [s.name for s in STAGES if s.name in metrics]
    if done:
        log(f"resuming run {manifest['run_id']} in {out}: done {', '.join(done)}")
    ctx = None
    for i, stage in enumerate(STAGES, start=1):
        if stage.name not in metrics:
            if ctx is None:
                ctx = Context(cfg)
            log(f"step {stage.step}: {stage.title} ...")
            from ..train import set_seed

            set_seed(cfg.seed * 100 + i)
            t0, load = time.perf_counter(), os.getloadavg()
            entry = RUNNERS[stage.name](ctx, out, metrics, progress)
            entry.update(stage=stage.name, step=stage.step, seconds=round(time.perf_counter() - t0, 1),
                         load_average=[round(x, 2) for x in load], threads=torch.get_num_threads())
            metrics[stage.name] = entry
            _write_json(out / "metrics.json", metrics)
            ev = entry["evaluation"]
            log(f"step {stage.step}: {stage.title} done in {entry['seconds']:.0f} s: " + _summary(ev))
        if stage.name == until:
            break
    return metrics


def _summary(ev: dict) -> str:
    if "accuracy" in ev:
        return f"held-out ranking accuracy {ev['accuracy']:.2f} (noiseless {ev['accuracy_noiseless']:.2f})"
    win = f", win rate against SFT {ev['win_rate']:.2f}" if "win_rate" in ev else ""
    return (f"success trained {ev['success_trained']:.2f}, held out {ev['success_held_out']:.2f}{win}, "
            f"Shakespeare val loss {ev['val_loss']:.3f}")


def main(argv=None, prog: str = "python -m llmcourse.rlhf.pipeline") -> dict:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the run's folder (created if needed)")
    ap.add_argument("--quick", action="store_true", help="tiny settings: every stage in seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true",
                    help="replace a previous run's files in --out (other files are left alone)")
    ap.add_argument("--until", choices=list(RUNNERS), help="stop after this stage (run again to resume)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    for f in fields(PipelineConfig):
        if f.name != "seed":
            ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                            help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {f.name: getattr(args, f.name) for f in fields(PipelineConfig)
                 if f.name != "seed" and getattr(args, f.name) is not None}
    cfg = PipelineConfig(**{**(QUICK if args.quick else {}), **overrides, "seed": args.seed})
    try:
        return run(args.out, cfg, overwrite=args.overwrite, until=args.until, progress=not args.no_progress)
    except FolderInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
