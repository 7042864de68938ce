"""Training and evaluation of sequence-to-sequence models on :mod:`llmcourse.tasks`.

Any model with ``model(src, tgt_in) -> logits (B, T, V)`` and
``model.greedy_decode(src, max_len, bos_id, eos_id) -> (B, L)`` fits: the
:class:`~llmcourse.transformer.Seq2SeqTransformer` and the
:class:`~llmcourse.rnn.GRUSeq2Seq`. Teacher forcing, Adam with the paper's betas
(0.9, 0.98) and ε = 1e-9 (Vaswani et al. 2017, arXiv:1706.03762, section 5.3), either the
warm-up schedule of equation 3 or a constant rate, label smoothing (section 5.4).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .tasks import BOS, EOS, PAD, Seq2SeqData
from .train import progress_bar, set_seed
from .transformer import label_smoothed_cross_entropy, noam_lr


@dataclass
class Seq2SeqTrainConfig:
    """Hyperparameters of :func:`train_seq2seq`."""

    epochs: int = 5                #: passes over the training set
    batch_size: int = 64           #: sentence pairs per step
    lr: float = 1e-3               #: constant learning rate (schedule "constant")
    schedule: str = "noam"         #: "noam" (equation 3) or "constant"
    warmup: int = 200              #: warm-up steps of the noam schedule
    noam_factor: float = 1.0       #: multiplies equation 3
    d_model: int = 64              #: the d_model in equation 3
    label_smoothing: float = 0.1   #: ε_ls (0: plain cross-entropy)
    grad_clip: float = 1.0         #: clip the global gradient norm (0: off)
    eval_every: int = 1            #: greedy-decode the validation set every this many epochs (and last)
    seed: int = 0                  #: seeds initial shuffling and dropout


@dataclass
class Seq2SeqHistory:
    """Per step: loss and learning rate. Per evaluated epoch (1-based ``eval_epochs``):
    validation accuracies. Per epoch: seconds of training, wall clock and CPU time of
    this process (on one thread, CPU time approximates the wall clock of an idle machine)."""

    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    eval_epochs: list = field(default_factory=list)
    epoch_token_acc: list = field(default_factory=list)
    epoch_exact: list = field(default_factory=list)
    epoch_seconds: list = field(default_factory=list)
    epoch_cpu_seconds: list = field(default_factory=list)


def seq2seq_loss(model: nn.Module, batch: Seq2SeqData, eps: float = 0.0) -> torch.Tensor:
    """Teacher forcing: read BOS y_1 .. y_{T-1}, predict y_1 .. y_T EOS; padding ignored."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]
    logits = model(batch.src, tgt_in)                                  # (B, T-1, V)
    return label_smoothed_cross_entropy(logits.reshape(-1, logits.size(-1)),
                                        tgt_out.reshape(-1), eps, ignore_index=PAD)


@torch.no_grad()
def predict(model: nn.Module, data: Seq2SeqData, batch_size: int = 500, extra: int = 5) -> list:
    """Greedy decodes of every source, as lists of ids up to (not including) EOS."""
    model.eval()
    preds = []
    for i in range(0, len(data), batch_size):
        b = data.subset(torch.arange(i, min(i + batch_size, len(data))))
        ys = model.greedy_decode(b.src, b.tgt.size(1) + extra, BOS, EOS)
        for row in ys.tolist():
            preds.append(row[: row.index(EOS)] if EOS in row else row)
    return preds


def score(preds: list, data: Seq2SeqData) -> dict:
    """Exact match (whole sentence right) and token accuracy (reference positions right).

    Token accuracy compares position by position against the reference (EOS included),
    so a dropped or inserted word counts every later position wrong. Also per example:
    ``exact_each`` and ``src_len``, to plot accuracy against input length.
    """
    exact, right, total = [], 0, 0
    for p, ref_row in zip(preds, data.tgt.tolist()):
        ref = [t for t in ref_row[1:] if t != PAD]                     # y_1 .. y_T EOS
        hyp = p + [EOS]
        right += sum(a == b for a, b in zip(hyp, ref))
        total += len(ref)
        exact.append(hyp == ref)
    return {"exact": sum(exact) / len(exact), "token_acc": right / total,
            "exact_each": torch.tensor(exact), "src_len": data.src_len.clone()}


def evaluate(model: nn.Module, data: Seq2SeqData, batch_size: int = 500) -> dict:
    """:func:`score` of the greedy decodes of ``data``."""
    return score(predict(model, data, batch_size), data)


def train_seq2seq(model: nn.Module, train: Seq2SeqData, val: Seq2SeqData | None,
                  cfg: Seq2SeqTrainConfig, progress: bool = True) -> Seq2SeqHistory:
    """Train with teacher forcing; after each epoch, greedy-decode ``val`` and score it.

    ``epoch_seconds`` and ``epoch_cpu_seconds`` time training only (not the evaluation).
    """
    gen = set_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    hist = Seq2SeqHistory()
    step = 0
    n_batches = -(-len(train) // cfg.batch_size)
    bar = progress_bar(total=cfg.epochs * n_batches, progress=progress, desc="training", mininterval=1.0)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        start, cpu_start = time.perf_counter(), time.process_time()
        order = torch.randperm(len(train), generator=gen)
        for i in range(n_batches):
            step += 1
            lr = noam_lr(step, cfg.d_model, cfg.warmup, cfg.noam_factor) if cfg.schedule == "noam" else cfg.lr
            for g in opt.param_groups:
                g["lr"] = lr
            batch = train.subset(order[i * cfg.batch_size:(i + 1) * cfg.batch_size])
            loss = seq2seq_loss(model, batch, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            hist.loss.append(loss.item())
            hist.lr.append(lr)
            bar.update(1)
        hist.epoch_seconds.append(time.perf_counter() - start)
        hist.epoch_cpu_seconds.append(time.process_time() - cpu_start)
        if val is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            s = evaluate(model, val)
            hist.eval_epochs.append(epoch)
            hist.epoch_token_acc.append(s["token_acc"])
            hist.epoch_exact.append(s["exact"])
            bar.set_postfix(loss=f"{loss.item():.3f}", exact=f"{s['exact']:.2f}")
    bar.close()
    model.eval()
    return hist
