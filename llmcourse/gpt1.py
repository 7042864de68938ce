"""GPT-1's fine-tuning: the pretrained decoder, a start and an extract token, a linear layer on the last.

Paper: Radford, Narasimhan, Salimans, Sutskever (2018), "Improving Language Understanding by
Generative Pre-Training" (OpenAI). Section 3.2 (supervised fine-tuning: the final
transformer block's activation h_l^m at the last token goes through a new linear layer W_y,
P(y | x) = softmax(h_l^m W_y), equation 4; the auxiliary objective L3 = L2 + λ·L1 with
λ = 0.5, equation 5), section 3.3 and Fig. 1 (task inputs wrapped in a randomly initialised
start token <s> and extract token $), section 4.1 (fine-tuning: dropout 0.1 on the
classifier, a linear warm-up over 0.2% of training then linear decay, 3 epochs).

The decoder is the course's pretrained character-level :class:`llmcourse.gpt.GPT` (Pre-LN,
as GPT-2; GPT-1 itself was Post-LN). The start and extract tokens are new learned vectors
added at fine-tuning, not new rows of the character embedding: the read-out tied to that
embedding keeps its size, so the auxiliary language-model loss is the pretrained one.
:class:`GPTClassifier` follows :mod:`llmcourse.classify`'s interface; its ``lm_loss``
reuses the forward pass that made the prediction (one pass for both terms of L3, as in the
paper). Tested in ``tests/test_gpt1.py``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gpt import GPT


def hidden_states(gpt: GPT, x: torch.Tensor) -> torch.Tensor:
    """The decoder's final states (after ``ln_f``) for embedded inputs ``x`` (B, T, C): causal attention."""
    T = x.size(1)
    if T > gpt.config.block_size:
        raise ValueError(f"sequence of {T} tokens is longer than block_size={gpt.config.block_size}")
    x = gpt.drop(x + gpt.wpe(torch.arange(T, device=x.device)))
    for block in gpt.blocks:
        x = block(x)                                            # token t sees tokens 0..t
    return gpt.ln_f(x)


class GPTClassifier(nn.Module):
    """<s>, the passage, $ through the pretrained decoder; a linear layer on $'s final state.

    ``forward(idx)`` takes the passages' character ids (B, T), T + 2 <= the decoder's
    ``block_size``, and returns logits (B, n_classes). ``lm_loss(idx)`` is the decoder's
    next-character loss on the passage (positions of its second to last character), from
    the states of the last ``forward`` on the same ``idx`` if there was one.
    """

    def __init__(self, gpt: GPT, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.gpt = gpt
        d = gpt.config.n_embd
        self.start = nn.Parameter(torch.randn(d) * 0.02)       # <s>, new
        self.extract = nn.Parameter(torch.randn(d) * 0.02)     # $, new
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(d, n_classes)                     # W_y
        self._last: tuple | None = None                         # (idx, states) of the last forward

    def states(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> final states (B, T + 2, C) of <s>, the T characters and $."""
        B = idx.size(0)
        x = torch.cat([self.start.expand(B, 1, -1), self.gpt.wte(idx), self.extract.expand(B, 1, -1)], dim=1)
        return hidden_states(self.gpt, x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.states(idx)
        self._last = (idx, h) if self.training else None
        return self.head(self.drop(h[:, -1]))                   # read at $, which has seen everything

    def lm_loss(self, idx: torch.Tensor) -> torch.Tensor:
        """L1 on the passage: the state after characters 0..t predicts character t + 1."""
        if self._last is not None and self._last[0] is idx:
            h = self._last[1]
        else:
            h = self.states(idx)
        T = idx.size(1)
        logits = self.gpt.lm_head(h[:, 1:T])                    # positions of characters 0..T-2
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), idx[:, 1:].reshape(-1))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Bottom up: the embeddings (tokens, which the read-out shares, and positions), each block,
        then the final norm with the new tokens and head."""
        g = self.gpt
        return ([[g.wte.weight, g.wpe.weight]] + [list(b.parameters()) for b in g.blocks]
                + [list(g.ln_f.parameters()) + [self.start, self.extract] + list(self.head.parameters())])


def classifier(pretrained: bool = True, n_classes: int = 2, dropout: float = 0.1, step: int | None = None,
               path=None):
    """``(GPTClassifier, tokenizer)`` for :func:`llmcourse.classify.finetune_job`: on the course's
    pretrained GPT (``step``: one of its pretraining snapshots, where the installed
    :func:`llmcourse.gpt.load_pretrained` offers them; ``path``: another checkpoint of
    ``scripts/pretrain_gpt.py``), or (``pretrained=False``) on a GPT of the same shape with fresh weights."""
    from pathlib import Path

    from .gpt import GPTConfig, load_pretrained
    from .tokenizer import CharTokenizer

    if path is not None:
        with Path(path).open("rb") as f:
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
        gpt, tok = GPT.from_checkpoint(ckpt), CharTokenizer(ckpt["chars"])
    else:
        gpt, tok, _ = load_pretrained() if step is None else load_pretrained(step=step)
    if not pretrained:
        gpt = GPT(GPTConfig(**vars(gpt.config)))
    return GPTClassifier(gpt, n_classes, dropout), tok
