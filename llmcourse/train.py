"""Seeding, learning-rate schedules and the training loop every chapter uses.

The loop is nanoGPT's (``train.py``) without its global-variable configuration: AdamW,
linear warm-up then cosine decay, gradient clipping, periodic evaluation, and a
``tqdm.auto`` progress bar. It returns a :class:`History` to plot. :func:`run_jobs` runs the
independent jobs of the scripts' longer experiments in worker processes.
"""
from __future__ import annotations

import math
import multiprocessing
import pickle
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .data import get_batch


def progress_bar(iterable=None, progress: bool = True, **kwargs):
    """A ``tqdm.auto`` bar, or none when ``progress`` is False.

    ``progress=True`` leaves tqdm's own defaults alone, so ``TQDM_DISABLE=1`` (set by the
    book build) still turns the bar off; passing ``disable=not progress`` would override it.
    """
    if not progress:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a ``torch.Generator`` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cosine_lr(step: int, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr`` at ``total``."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`train_lm`."""

    max_iters: int = 2000         #: optimizer steps
    batch_size: int = 12          #: sequences per step
    block_size: int = 64          #: tokens per sequence
    lr: float = 1e-3              #: peak learning rate
    min_lr: float = 1e-4          #: learning rate at the end of the cosine decay
    warmup_iters: int = 100       #: steps of linear warm-up
    weight_decay: float = 0.1     #: AdamW decay on matrices (not biases, norms)
    betas: tuple = (0.9, 0.99)    #: AdamW betas
    grad_clip: float = 1.0        #: clip the global gradient norm (0: off)
    eval_interval: int = 250      #: evaluate every this many steps (and at the end)
    eval_iters: int = 20          #: batches per evaluation
    seed: int = 1337              #: seeds the batches and the model's dropout


@dataclass
class History:
    """What a training run saw: training loss per step, validation loss per evaluation."""

    steps: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    seconds: float = 0.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW that decays 2-D weights (matrices, embeddings) and not biases or norm gains.

    PyTorch's fused AdamW (one kernel for every tensor of a group, instead of a dozen
    small operations per tensor from Python) where the parameters allow it: floating
    point, on the CPU or a GPU. Same algorithm; about 4x faster a step for the course's GPT.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)


@torch.no_grad()
def estimate_loss(model: nn.Module, ids: torch.Tensor, cfg: TrainConfig, seed: int = 0,
                  max_tokens: int = 16384) -> float:
    """Mean loss over ``cfg.eval_iters`` fixed random batches of ``ids`` (same batches every call).

    The batches are drawn one after another as before, then run several at a time (up to
    ``max_tokens`` tokens a forward pass): fewer, larger matrix products, the same mean.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    batches = [get_batch(ids, cfg.batch_size, cfg.block_size, gen) for _ in range(cfg.eval_iters)]
    per_pass = max(1, max_tokens // (cfg.batch_size * cfg.block_size))
    total = 0.0
    for i in range(0, len(batches), per_pass):
        chunk = batches[i:i + per_pass]
        x, y = torch.cat([b[0] for b in chunk]), torch.cat([b[1] for b in chunk])
        total += model(x, y)[1].item() * len(chunk)                 # equal batches: mean of means
    model.train(was_training)
    return total / len(batches)


def train_lm(model: nn.Module, train_ids: torch.Tensor | None, val_ids: torch.Tensor | None,
             cfg: TrainConfig, progress: bool = True, *, batches=None, evaluate=None) -> History:
    """Train a next-token model ``model(x, y) -> (logits, loss)`` on a token stream.

    By default each step takes random windows of ``train_ids`` and each evaluation is the
    mean loss on fixed windows of ``val_ids``. ``batches(generator) -> (x, y)`` replaces the
    windows (supervised fine-tuning passes padded prompt-response pairs whose prompt
    targets are -100, :mod:`llmcourse.rlhf.sft`); ``evaluate(model) -> float`` replaces the
    validation loss (evaluations then run even without ``val_ids``).
    """
    import time

    gen = set_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    params = [p for group in opt.param_groups for p in group["params"]]
    hist = History()
    model.train()
    start = time.perf_counter()
    bar = progress_bar(range(cfg.max_iters), progress, desc="training", mininterval=1.0)
    for step in bar:
        lr = cosine_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.max_iters)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batches(gen) if batches is not None else get_batch(train_ids, cfg.batch_size, cfg.block_size, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        opt.step()
        hist.steps.append(step)
        hist.train_loss.append(loss.item())
        last = step == cfg.max_iters - 1
        if (val_ids is not None or evaluate is not None) and (step % cfg.eval_interval == 0 or last):
            hist.eval_steps.append(step)
            hist.val_loss.append(evaluate(model) if evaluate is not None else estimate_loss(model, val_ids, cfg))
            model.train()
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{hist.val_loss[-1]:.3f}")
    hist.seconds = time.perf_counter() - start
    model.eval()
    return hist


def _by_value(task: tuple) -> bytes:
    fn, blob = task
    return pickle.dumps(fn(pickle.loads(blob)))


def run_jobs(fn, jobs: list, processes: int) -> list:
    """``[fn(job) for job in jobs]``, in ``processes`` worker processes (spawned) when more than one.

    ``fn`` must be picklable (a module-level function). Jobs and results cross between
    processes as plain pickles: the pool's own pickler shares each tensor through a
    shared-memory file descriptor, and a job holding the rankings of 3,000 prompts (15,000
    small tensors) ran out of descriptors and killed a run silently (chapter 22's script).
    """
    if processes > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            out = pool.map(_by_value, [(fn, pickle.dumps(j)) for j in jobs], chunksize=1)
        return [pickle.loads(b) for b in out]
    return [fn(j) for j in jobs]
