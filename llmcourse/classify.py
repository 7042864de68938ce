"""Pretrain, then fine-tune: one text-classification task and one interface for three model families.

Chapters 5 (ULMFiT, an LSTM), 6 (BERT, an encoder) and 7 (GPT-1, a decoder) fine-tune
their pretrained models on the same task, through the same functions, so that chapter 9
can set them side by side.

**The task** (:func:`load_authorship`): Shakespeare or Milton? Passages of 64 characters,
labelled by their author, from public-domain texts that none of the pretrained models read:
spoken lines of Shakespeare plays outside the eight of the pretraining corpus, and
*Paradise Lost* (Books III-X; Books I-II are chapter 12's fine-tuning text). Training and
test passages come from different works (six plays and Books III-VIII against three
other plays and Books IX-X), so a classifier cannot lean on a play's character names.
``scripts/build_corpus.py --authorship`` makes the file.

**The interface.** A classifier is an ``nn.Module`` with

- ``forward(idx) -> logits``: ``idx`` (B, T) holds the passages' character ids (the course's
  :class:`~llmcourse.tokenizer.CharTokenizer`); each family adds its own special tokens
  inside (BERT's ``[CLS]``, GPT-1's extract token); logits (B, n_classes);
- ``layer_groups() -> list[list[Parameter]]``: its parameters from the bottom (embeddings)
  to the top (the new classification head), for discriminative learning rates and gradual
  unfreezing (Howard and Ruder 2018, section 3.2-3.3);
- optionally ``lm_loss(idx) -> loss``: the family's own language-model loss on the same
  text, for GPT-1's auxiliary objective (Radford et al. 2018, equation 5).

:func:`finetune` trains any of them with any combination of the tricks (all are fields of
:class:`FineTuneConfig`); :func:`accuracy` scores them. :func:`finetune_lm` is ULMFiT's
second stage for any language model with ``forward(x, y) -> (logits, loss)`` and
``layer_groups()``. :func:`lm_scores` and :func:`zero_shot_accuracy` are GPT-1's zero-shot
heuristic (section 5, as for CoLA: average log-probability, thresholded).
"""
from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import data_path, get_batch
from .train import progress_bar
from .ulmfit import discriminative_lrs, slanted_triangular, unfrozen_groups

# ----------------------------------------------------------------------------- the task


@dataclass
class TextTask:
    """A labelled text-classification task with a fixed split: a training pool and a test set."""

    name: str
    labels: list                  #: class names, by label id
    train_text: list              #: the training pool's passages
    train_y: torch.Tensor         #: (N_train,) label ids
    test_text: list               #: the held-out test passages
    test_y: torch.Tensor          #: (N_test,) label ids
    info: dict = field(default_factory=dict)

    def labelled(self, n: int, seed: int = 0):
        """``n`` training passages with their labels, as many of each class, drawn with ``seed``.

        Nested: for one seed, the first ``n`` are the first ``n`` of any larger draw. Returns
        ``(texts, y)``.
        """
        g = torch.Generator().manual_seed(seed)
        k = len(self.labels)
        per_class = [torch.nonzero(self.train_y == c).flatten() for c in range(k)]
        per_class = [ix[torch.randperm(len(ix), generator=g)] for ix in per_class]
        m = min(len(ix) for ix in per_class)
        if n > m * k:
            raise ValueError(f"at most {m * k} labelled passages, not {n}")
        order = torch.stack([ix[:m] for ix in per_class], dim=1).flatten()   # class 0, 1, 0, 1, ...
        chosen = order[:n]
        return [self.train_text[i] for i in chosen.tolist()], self.train_y[chosen]

    def validation_split(self, n_valid: int = 500, seed: int = 123) -> "TextTask":
        """The same task with ``n_valid`` training passages (as many of each class) held out as its
        test set and the rest as its training pool: for choosing settings without the test set."""
        texts, y = self.labelled(n_valid, seed)
        held = set(texts)
        rest = [i for i, t in enumerate(self.train_text) if t not in held]
        return TextTask(f"{self.name} (validation)", self.labels, [self.train_text[i] for i in rest],
                        self.train_y[rest], texts, y, {**self.info, "validation_of": self.name})


def load_authorship() -> TextTask:
    """Shakespeare (label 0) or Milton (label 1)? 3,000 training and 1,000 test passages of 64 characters."""
    with data_path("authorship.json.gz").open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        d = json.load(f)
    return TextTask("authorship", d["labels"], d["train"]["text"], torch.tensor(d["train"]["label"]),
                    d["test"]["text"], torch.tensor(d["test"]["label"]),
                    {k: d[k] for k in ("works", "passage_chars", "seed", "replaced_characters")})


def encode(tok, texts) -> torch.Tensor:
    """Passages of equal length -> (N, T) character ids."""
    return torch.stack([tok.encode(t) for t in texts])


# ----------------------------------------------------------------------------- fine-tuning


@dataclass
class FineTuneConfig:
    """How :func:`finetune` and :func:`finetune_lm` train: the three families' recipes are settings here."""

    steps: int = 150              #: optimizer steps
    batch_size: int = 16          #: passages per step (all of them if fewer)
    lr: float = 1e-3              #: peak learning rate of the top group
    discriminative: float = 1.0   #: η^{l-1} = η^l / factor from the top group down (ULMFiT: 2.6; 1: one rate)
    schedule: str = "stlr"        #: "stlr" (ULMFiT eq. 3), "linear" (warm-up, then linear decay to 0), "constant"
    warmup: float = 0.1           #: share of the steps rising to the peak (STLR's cut_frac)
    ratio: float = 32             #: STLR: how much smaller the lowest rate is than the peak
    unfreeze_every: int = 0       #: gradual unfreezing: steps before the next group down joins (0: all train)
    aux_lm: float = 0.0           #: λ: add λ × the model's language-model loss on the same text (GPT-1)
    weight_decay: float = 0.01    #: AdamW decay
    betas: tuple = (0.9, 0.99)    #: AdamW betas
    grad_clip: float = 1.0        #: clip the global gradient norm (0: off)
    seed: int = 0                 #: seeds the batches and dropout


def lr_factor(step: int, cfg: FineTuneConfig) -> float:
    """The schedule's multiplier of the peak rate at ``step`` (0 to ``cfg.steps`` - 1)."""
    T = cfg.steps
    if cfg.schedule == "stlr":
        return slanted_triangular(step, T, 1.0, cfg.warmup, cfg.ratio)
    if cfg.schedule == "linear":
        w = max(1, round(cfg.warmup * T))
        return (step + 1) / w if step < w else max(0.0, (T - step) / max(1, T - w))
    if cfg.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {cfg.schedule!r}: 'stlr', 'linear' or 'constant'")


@dataclass
class FineTuneRun:
    """What a fine-tuning run saw."""

    loss: list = field(default_factory=list)        #: training loss of every step
    lr: list = field(default_factory=list)          #: the top group's learning rate at every step
    trainable: list = field(default_factory=list)   #: groups training at every step (gradual unfreezing)
    seconds: float = 0.0


def _train(model: nn.Module, groups: list, batch_loss, cfg: FineTuneConfig, progress: bool, desc: str) -> FineTuneRun:
    """AdamW over ``groups`` with discriminative rates, the schedule and gradual unfreezing."""
    base = discriminative_lrs(cfg.lr, len(groups), cfg.discriminative)
    opt = torch.optim.AdamW([{"params": ps, "lr": lr} for ps, lr in zip(groups, base)],
                            betas=cfg.betas, weight_decay=cfg.weight_decay)
    params = [p for ps in groups for p in ps]
    run = FineTuneRun()
    model.train()
    t0 = time.perf_counter()
    for step in progress_bar(range(cfg.steps), progress, desc=desc, mininterval=1.0):
        k = unfrozen_groups(step, cfg.unfreeze_every, len(groups))
        for i, ps in enumerate(groups):                            # frozen: no gradient, so AdamW skips it
            for p in ps:
                p.requires_grad_(i >= len(groups) - k)
        f = lr_factor(step, cfg)
        for group, lr in zip(opt.param_groups, base):
            group["lr"] = lr * f
        loss = batch_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.grad_clip)
        opt.step()
        run.loss.append(loss.item())
        run.lr.append(base[-1] * f)
        run.trainable.append(k)
    for p in params:
        p.requires_grad_(True)
    run.seconds = time.perf_counter() - t0
    model.eval()
    return run


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: FineTuneConfig,
             progress: bool = True) -> FineTuneRun:
    """Train a classifier of the interface on passages ``x`` (N, T) with labels ``y`` (N,).

    Batches go through the passages in a fresh random order each epoch. The loss is the
    cross-entropy of the labels, plus ``cfg.aux_lm`` × ``model.lm_loss(x)`` if that is set.
    """
    torch.manual_seed(cfg.seed)                                   # dropout, and the head's initialisation
    g = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(x), min(cfg.batch_size, len(x))
    order: list = []

    def batch_loss(step):
        nonlocal order
        if len(order) < bs:
            order = torch.randperm(n, generator=g).tolist()
        idx, order = order[:bs], order[bs:]
        xb, yb = x[idx], y[idx]
        loss = F.cross_entropy(model(xb), yb)
        if cfg.aux_lm:
            loss = loss + cfg.aux_lm * model.lm_loss(xb)
        return loss

    return _train(model, model.layer_groups(), batch_loss, cfg, progress, "fine-tuning")


def finetune_lm(model: nn.Module, ids: torch.Tensor, cfg: FineTuneConfig, block_size: int = 64,
                progress: bool = True) -> FineTuneRun:
    """ULMFiT's second stage: a language model ``model(x, y) -> (logits, loss)`` trained further on
    the task's own (unlabelled) text ``ids``, a 1-D stream of character ids, in random windows."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)

    def batch_loss(step):
        xb, yb = get_batch(ids, cfg.batch_size, block_size, g)
        return model(xb, yb)[1]

    return _train(model, model.layer_groups(), batch_loss, cfg, progress, "LM fine-tuning")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted label of every passage, in eval mode: (N,)."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the passages whose predicted label is right."""
    return (predict(model, x) == y).float().mean().item()


def fit_and_score(model: nn.Module, task: TextTask, tok, n: int, cfg: FineTuneConfig, seed: int = 0,
                  progress: bool = False) -> dict:
    """Fine-tune ``model`` on ``n`` labelled passages drawn with ``seed`` (which also seeds the
    batches), then score it on the whole test set: the one call the chapters' comparisons make."""
    texts, y = task.labelled(n, seed)
    run = finetune(model, encode(tok, texts), y, FineTuneConfig(**{**cfg.__dict__, "seed": seed}), progress)
    acc = accuracy(model, encode(tok, task.test_text), task.test_y)
    return {"n": n, "seed": seed, "accuracy": acc, "seconds": round(run.seconds, 2), "final_loss": run.loss[-1]}


def finetune_job(job: dict) -> dict:
    """One fine-tuning run of a learning curve or a learning-rate grid, runnable in a worker process.

    ``job``: ``build`` ("module:function" returning ``(classifier, tokenizer)``, called with
    ``build_args`` after seeding torch with 1000 + seed, so a new head's weights depend on the
    seed), ``n`` labelled passages, ``seed``, ``cfg`` (the fields of :class:`FineTuneConfig`),
    ``validation`` (if true, train and score on :meth:`TextTask.validation_split` instead of
    the test set) and ``meta`` (copied into the result). Returns :func:`fit_and_score`'s dict.
    """
    import importlib

    torch.set_num_threads(1)
    module, name = job["build"].split(":")
    torch.manual_seed(1000 + job["seed"])
    model, tok = getattr(importlib.import_module(module), name)(**job.get("build_args", {}))
    task = load_authorship()
    if job.get("validation"):
        task = task.validation_split()
    out = fit_and_score(model, task, tok, job["n"], FineTuneConfig(**job["cfg"]), seed=job["seed"])
    return {**job.get("meta", {}), **out}


def run_jobs(jobs: list, procs: int = 1) -> list:
    """:func:`finetune_job` for each job, in ``procs`` processes of one thread each (in order)."""
    if procs <= 1:
        return [finetune_job(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(procs) as pool:
        return list(pool.map(finetune_job, jobs))


def best_lr(results: list, key: str = "method") -> dict:
    """From a grid's results (each with ``lr``, ``accuracy`` and ``key``): the best rate per ``key``
    (ties: the smaller rate)."""
    best: dict = {}
    for r in sorted(results, key=lambda r: r["lr"]):
        if r[key] not in best or r["accuracy"] > best[r[key]]["accuracy"]:
            best[r[key]] = r
    return {k: r["lr"] for k, r in best.items()}


def save_runs(path, data: dict, started: float, jobs: int) -> dict:
    """Write a chapter's runs file: ``data`` with the wall seconds since ``started``
    (``time.perf_counter()``), the number of worker processes and the machine; returns it."""
    import os
    import platform
    from pathlib import Path

    data = {**data, "seconds": round(time.perf_counter() - started, 1), "jobs": jobs,
            "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                        "load_average": os.getloadavg()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    print(f"wrote {path} in {data['seconds']:.0f} s")
    return data


# ----------------------------------------------------------------------------- zero-shot


@torch.no_grad()
def lm_scores(lm: nn.Module, x: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Average log-probability per character a language model gives each passage (after its first): (N,).

    ``lm(x)`` returns ``(logits (B, T, V), ...)``: the course's GPT and :class:`~llmcourse.ulmfit.LSTMLM`.
    """
    lm.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        logp = torch.log_softmax(lm(xb[:, :-1])[0], dim=-1)      # (B, T-1, V)
        out.append(logp.gather(-1, xb[:, 1:, None]).squeeze(-1).mean(-1))
    return torch.cat(out)


def zero_shot_accuracy(scores: torch.Tensor, y: torch.Tensor, threshold: float, label_if_above: int = 0) -> float:
    """GPT-1's zero-shot heuristic for a two-class task (section 5, as for CoLA): a passage whose
    average log-probability is above ``threshold`` gets ``label_if_above``, the others the other label."""
    pred = torch.where(scores > threshold, label_if_above, 1 - label_if_above)
    return (pred == y).float().mean().item()
