"""Supervised fine-tuning (SFT) on demonstrations: the loss on the response tokens only.

Ouyang et al. (2022), "Training language models to follow instructions with human
feedback", arXiv:2203.02155, Sec. 3.5 ("Supervised fine-tuning (SFT)"): the pretrained
model is fine-tuned on labeller demonstrations with the language-modelling loss. The paper
does not say whether the prompt's tokens count; here only the response does, as in most
instruction-tuning code: each prompt token's target is -100, which ``F.cross_entropy`` (and
so :class:`llmcourse.gpt.GPT`) ignores, so the model learns to answer, not to write prompts.

The optimiser, schedule, clipping and progress bar are the course's training loop,
:func:`llmcourse.train.train_lm`, fed with batches of padded prompt-response pairs.
Checked by ``tests/test_rlhf.py`` (prompt labels change nothing; the loss equals a loop
over response tokens).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..train import History, TrainConfig, train_lm

IGNORE = -100                                   #: the target of a token that is not trained on


def encode_pair(tokenizer, prompt: str, response: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (L-1,), targets (L-1,)) of prompt + response, L = len(prompt) + len(response):
    the next-token targets of the prompt's positions are ``IGNORE``; those of the response
    (its end marker included) are the response's tokens."""
    p, r = tokenizer.encode(prompt), tokenizer.encode(response)
    ids = torch.cat([p, r])
    targets = ids[1:].clone()
    targets[: len(p) - 1] = IGNORE            # position t predicts token t+1: the first response token is kept
    return ids[:-1], targets


@dataclass
class SFTData:
    """Encoded prompt-response pairs and their batches (right-padded; padding targets ``IGNORE``).

    Right padding needs no attention mask: causal attention never lets a real token see a
    later position, so the padding after a sequence changes nothing before it.
    """

    inputs: list
    targets: list
    pad_id: int = 0

    @classmethod
    def from_pairs(cls, tokenizer, pairs, pad_id: int = 0) -> "SFTData":
        """``pairs``: (prompt, response) strings, or objects with ``.prompt`` and ``.response``."""
        enc = [encode_pair(tokenizer, *((p.prompt, p.response) if hasattr(p, "prompt") else p)) for p in pairs]
        return cls([x for x, _ in enc], [y for _, y in enc], pad_id)

    def __len__(self) -> int:
        return len(self.inputs)

    def collate(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at ``index`` as (x (B, L), y (B, L)), right-padded to the longest."""
        L = max(len(self.inputs[i]) for i in index)
        x = torch.full((len(index), L), self.pad_id, dtype=torch.long)
        y = torch.full((len(index), L), IGNORE, dtype=torch.long)
        for row, i in enumerate(index):
            n = len(self.inputs[i])
            x[row, :n], y[row, :n] = self.inputs[i], self.targets[i]
        return x, y

    def sampler(self, batch_size: int):
        """``batches(generator) -> (x, y)`` for :func:`train_lm`: ``batch_size`` random examples."""
        def batches(generator):
            index = torch.randint(len(self), (batch_size,), generator=generator).tolist()
            return self.collate(index)
        return batches

    @torch.no_grad()
    def loss(self, model: nn.Module, batch_size: int = 64) -> float:
        """Mean loss per response token over every example (in order, no sampling)."""
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for start in range(0, len(self), batch_size):
            x, y = self.collate(range(start, min(start + batch_size, len(self))))
            n = int((y != IGNORE).sum())
            total += model(x, y)[1].item() * n
            count += n
        model.train(was_training)
        return total / count


def sft_config(**overrides) -> TrainConfig:
    """The SFT defaults: a lower peak learning rate than pretraining, short warm-up, batch 32."""
    base = dict(max_iters=600, batch_size=32, lr=1e-3, min_lr=1e-4, warmup_iters=30,
                weight_decay=0.1, eval_interval=100, seed=0)
    return TrainConfig(**{**base, **overrides})


def train_sft(model: nn.Module, data: SFTData, cfg: TrainConfig, progress: bool = True,
              evaluate=None) -> History:
    """Fine-tune ``model`` in place on ``data`` with the course's loop; ``evaluate(model)``
    (for instance the held-out SFT loss) is recorded every ``cfg.eval_interval`` steps."""
    return train_lm(model, None, None, cfg, progress, batches=data.sampler(cfg.batch_size),
                    evaluate=evaluate)
