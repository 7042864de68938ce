"""A small BERT-style masked language model, and training it under a fixed compute budget.

Papers: Devlin, Chang, Lee, Toutanova (2018), "BERT", arXiv:1810.04805, section 3.1 (the
masked-LM objective: 15% of the tokens chosen, of those 80% [MASK], 10% random, 10% kept;
the corruption is :func:`llmcourse.attention.mlm_corrupt`). Geiping and Goldstein (2022),
"Cramming: Training a Language Model on a Single GPU in One Day", arXiv:2212.14034: training
under a fixed time budget with the learning-rate schedule a function of the *elapsed
budget*, and switches its section 4 examines: Pre-LN instead of Post-LN,
no biases in the linear and normalisation layers, gated linear units in the feed-forward
block, no dropout, a budget-aware one-cycle schedule, a batch size that ramps up.

Each switch is a field of :class:`MLMConfig` (the model) or :class:`BudgetConfig` (the
training), named after the paper's modification; the defaults are BERT's original choices
where a switch exists, so a "crammed" model is ``MLMConfig(norm="pre", bias=False, ...)``.
The encoder is written here rather than taken from :mod:`llmcourse.transformer` because the
switches (biases, gated units, where the norms sit) reach inside its layers; the attention is
:class:`llmcourse.attention.MultiHeadAttention`. Tested in ``tests/test_cramming.py``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention, mlm_corrupt

# ----------------------------------------------------------------------------- the model


@dataclass
class MLMConfig:
    """Shape and switches of an :class:`MLMEncoder`."""

    vocab_size: int = 79       #: tokens, the [MASK] token included
    seq_len: int = 64          #: longest sequence (learned positions)
    d_model: int = 128         #: width of the residual stream
    n_layers: int = 4          #: Transformer blocks
    n_heads: int = 4           #: attention heads
    d_ff: int = 512            #: hidden width of the feed-forward block (GLU: of each of its two halves)
    norm: str = "post"         #: "post": LayerNorm(x + f(x)) as BERT; "pre": x + f(LayerNorm(x)) and a final norm
    bias: bool = True          #: biases in every linear and LayerNorm layer (Cramming removes them)
    glu: bool = False          #: gated feed-forward, GELU(x W) * (x V), instead of GELU(x W)
    dropout: float = 0.1       #: dropout on embeddings, attention weights and residual branches (BERT: 0.1)

    def __post_init__(self):
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', not {self.norm!r}")


class FeedForward(nn.Module):
    """GELU(x W1) W2, or with ``glu`` the gated GELU(x W1) * (x V) W2 (Shazeer 2020, "GLU Variants")."""

    def __init__(self, cfg: MLMConfig):
        super().__init__()
        self.glu = cfg.glu
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff * (2 if cfg.glu else 1), bias=cfg.bias)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w1(x)
        if self.glu:
            h, gate = h.chunk(2, dim=-1)
            return self.w2(F.gelu(h) * gate)
        return self.w2(F.gelu(h))


class Block(nn.Module):
    """Bidirectional self-attention and feed-forward, Post-LN or Pre-LN (``cfg.norm``)."""

    def __init__(self, cfg: MLMConfig):
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout, bias=cfg.bias)
        self.ff = FeedForward(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.norm2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            h = self.norm1(x)
            x = x + self.drop(self.attn(h, h, h)[0])
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, x, x)[0]))
        return self.norm2(x + self.drop(self.ff(x)))


class MLMEncoder(nn.Module):
    """Token and learned position embeddings, ``n_layers`` blocks, a read-out tied to the embedding.

    ``forward(ids, labels)`` returns ``(logits, loss)``; the loss is the cross-entropy over the
    positions whose label is not -100 (the masked ones). Only those positions go through the
    read-out ("sparse prediction", as Cramming does: the other logits are never needed).
    """

    def __init__(self, cfg: MLMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.emb_norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias)      # BERT normalises the embedding sum
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight                             # tied, as BERT
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)                  # BERT's initialiser
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters without the position embedding (the tied read-out counted once)."""
        return sum(p.numel() for p in self.parameters()) - self.pos.weight.numel()

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None):
        T = ids.size(1)
        x = self.drop(self.emb_norm(self.tok(ids) + self.pos(torch.arange(T, device=ids.device))))
        for block in self.blocks:
            x = block(x)
        x = self.final_norm(x)                                         # (B, T, D)
        if labels is None:
            return self.head(x), None
        keep = labels != -100
        logits = self.head(x[keep])                                    # (n_masked, V): sparse prediction
        return logits, F.cross_entropy(logits, labels[keep])


# ----------------------------------------------------------------------------- data


def mlm_batch(ids: torch.Tensor, batch_size: int, seq_len: int, mask_id: int, vocab_size: int,
              generator: torch.Generator, p: float = 0.15):
    """Random windows of a token stream, corrupted BERT's way: ``(inputs, labels)``, each (B, T)."""
    starts = torch.randint(len(ids) - seq_len + 1, (batch_size,), generator=generator)
    windows = ids[starts[:, None] + torch.arange(seq_len)]
    return mlm_corrupt(windows, mask_id, vocab_size, p=p, generator=generator)


@torch.no_grad()
def mlm_loss(model: MLMEncoder, batches) -> float:
    """Mean masked-LM loss over fixed ``(inputs, labels)`` batches, in eval mode."""
    was = model.training
    model.eval()
    losses = [model(x, y)[1].item() for x, y in batches]
    model.train(was)
    return sum(losses) / len(losses)


def fixed_batches(ids: torch.Tensor, n: int, batch_size: int, seq_len: int, mask_id: int, vocab_size: int,
                  seed: int = 0) -> list:
    """``n`` corrupted batches drawn once (the same ones for every model compared)."""
    g = torch.Generator().manual_seed(seed)
    return [mlm_batch(ids, batch_size, seq_len, mask_id, vocab_size, g) for _ in range(n)]


# ----------------------------------------------------------------------------- training under a budget


@dataclass
class BudgetConfig:
    """Training under a fixed budget of CPU seconds (Cramming's fixed GPU-day, scaled down)."""

    seconds: float = 30.0       #: budget of this process's CPU time for training steps (evaluation excluded)
    batch_size: int = 32        #: sequences per step (at the end of the ramp, with ``ramp``)
    lr: float = 1e-3            #: peak learning rate (AdamW)
    schedule: str = "one-cycle"  #: "one-cycle": linear up to the peak at ``warmup``, then linearly to 0; "constant"
    warmup: float = 0.1         #: share of the budget spent warming up (one-cycle)
    ramp: bool = False          #: batch size growing linearly from 1/8 of ``batch_size`` over the budget
    weight_decay: float = 0.01  #: AdamW decay of matrices and embeddings
    betas: tuple = (0.9, 0.98)  #: AdamW betas (Cramming's)
    grad_clip: float = 0.5      #: clip the global gradient norm (Cramming: 0.5)
    evals: int = 10             #: evaluations, evenly spaced over the budget (and one at the start)
    seed: int = 0               #: seeds the initialisation, the batches and the masking


def lr_at(progress: float, cfg: BudgetConfig) -> float:
    """Learning rate at ``progress`` = elapsed share of the budget, in [0, 1]."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule != "one-cycle":
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    if progress < cfg.warmup:
        return cfg.lr * progress / cfg.warmup
    return cfg.lr * max(0.0, 1.0 - progress) / (1.0 - cfg.warmup)


def batch_size_at(progress: float, cfg: BudgetConfig) -> int:
    """Sequences per step: constant, or with ``ramp`` linear from batch_size / 8 to batch_size."""
    if not cfg.ramp:
        return cfg.batch_size
    return max(1, round(cfg.batch_size * (1 + 7 * min(progress, 1.0)) / 8))


@dataclass
class BudgetRun:
    """What a budgeted run saw: evaluations against CPU seconds, steps and tokens."""

    seconds: list = field(default_factory=list)     #: training CPU seconds at each evaluation
    tokens: list = field(default_factory=list)      #: training tokens seen at each evaluation
    steps: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)    #: masked-LM loss on the fixed validation batches
    params: int = 0
    config: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens[-1] / self.seconds[-1] if self.seconds[-1] else 0.0


def train_budget(model: MLMEncoder, train_ids: torch.Tensor, val_batches: list, cfg: BudgetConfig,
                 mask_id: int, progress: bool = False) -> BudgetRun:
    """Train until ``cfg.seconds`` of CPU time are spent; the schedule follows the spent share.

    As in Cramming, the learning rate (and the batch size, with ``ramp``) is a function of the
    elapsed share of the budget, not of a step count fixed in advance, so every run ends its
    schedule exactly when its budget ends, whatever its speed. Time is this process's CPU time
    (``time.process_time``), so other jobs on a shared machine change it little; evaluations
    are not counted.
    """
    from .train import progress_bar

    gen = torch.Generator().manual_seed(cfg.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas, eps=1e-12)
    run = BudgetRun(params=model.num_params(), config={"model": asdict(model.cfg), "budget": asdict(cfg)})
    spent, tokens, step, next_eval = 0.0, 0, 0, 0.0
    bar = progress_bar(None, progress, total=round(cfg.seconds), desc="CPU seconds", mininterval=1.0)
    model.train()
    while True:
        if spent >= next_eval - 1e-9 or spent >= cfg.seconds:
            run.seconds.append(spent)
            run.tokens.append(tokens)
            run.steps.append(step)
            run.val_loss.append(mlm_loss(model, val_batches))
            next_eval += cfg.seconds / cfg.evals
            if spent >= cfg.seconds:
                break
        t0 = time.process_time()
        frac = spent / cfg.seconds
        for group in opt.param_groups:
            group["lr"] = lr_at(frac, cfg)
        x, y = mlm_batch(train_ids, batch_size_at(frac, cfg), model.cfg.seq_len, mask_id, model.cfg.vocab_size, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        dt = time.process_time() - t0
        spent += dt
        tokens += x.numel()
        step += 1
        bar.update(min(dt, cfg.seconds - bar.n))
        if not math.isfinite(loss.item()):                            # diverged: record and stop
            run.seconds.append(spent)
            run.tokens.append(tokens)
            run.steps.append(step)
            run.val_loss.append(float("nan"))
            break
    bar.close()
    model.eval()
    return run
