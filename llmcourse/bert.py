"""BERT in miniature: what a masked-LM encoder predicts, why right context matters, and a [CLS] classifier.

Paper: Devlin, Chang, Lee, Toutanova (2018), "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding", arXiv:1810.04805. Section 3.1, task 1 (the
masked LM: 15% of the positions chosen; of those 80% become [MASK], 10% a random token,
10% stay), section 3.2 and Fig. 4 (fine-tuning: a classifier on the final hidden state of
[CLS], the first token, every weight trained).

The encoder, its masked-LM loss and its pretraining loop are :mod:`llmcourse.mlm`
(chapter 11; ``mlm_corrupt`` is :func:`llmcourse.attention.mlm_corrupt`): BERT's
post-LN layout, GELU, learned positions, a LayerNorm on the embeddings and a read-out tied
to them. This module adds what chapter 6 does with it: fill in masked characters, restore
blanked words (against a left-to-right model that can only read what comes before), and
classify through a [CLS] vector. Not kept from BERT: the next-sentence objective (no
sentence pairs here; Liu et al. 2019, RoBERTa, found it unnecessary) and WordPiece tokens
(the course reads characters); [CLS] is added at fine-tuning as a new learned vector, since
it never appears in pretraining here. Tested in ``tests/test_bert.py``.
"""
from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn

from .mlm import MLMConfig, MLMEncoder

# ----------------------------------------------------------------------------- the encoder's states


def hidden_states(encoder: MLMEncoder, x: torch.Tensor) -> torch.Tensor:
    """The encoder's final hidden states for embedded inputs ``x`` (B, T, D): what its read-out reads."""
    T = x.size(1)
    x = encoder.drop(encoder.emb_norm(x + encoder.pos(torch.arange(T, device=x.device))))
    for block in encoder.blocks:
        x = block(x)                                             # every position attends to every other
    return encoder.final_norm(x)


def mask_id(encoder: MLMEncoder) -> int:
    """The [MASK] token: the last id of the encoder's vocabulary (the characters come first)."""
    return encoder.cfg.vocab_size - 1


@torch.no_grad()
def fill_masks(encoder: MLMEncoder, ids: torch.Tensor, top: int = 1, allowed: torch.Tensor | None = None):
    """Predictions at every [MASK] of ``ids`` (B, T), in one pass: (positions (n, 2), top ids (n, top), probs).

    ``allowed`` (V,) boolean: the only tokens that may be answers (the probabilities are
    renormalised over them); [MASK] never is.
    """
    encoder.eval()
    logits = encoder.head(hidden_states(encoder, encoder.tok(ids)))   # (B, T, V)
    if allowed is not None:
        logits[..., ~allowed] = float("-inf")
    logits[..., mask_id(encoder)] = float("-inf")                      # [MASK] is never an answer
    where = torch.nonzero(ids == mask_id(encoder))
    probs = torch.softmax(logits[where[:, 0], where[:, 1]], dim=-1)
    p, top_ids = probs.topk(top, dim=-1)
    return where, top_ids, p


# ----------------------------------------------------------------------------- blanked words


def letters(tok) -> torch.Tensor:
    """(V,) boolean: which of the tokenizer's characters are letters (a blanked word's possible characters)."""
    return torch.tensor([c.isalpha() for c in tok.chars])


def blank_words(text: str, n: int, window: int = 64, min_len: int = 3, max_len: int = 10,
                seed: int = 0) -> list[dict]:
    """``n`` windows of ``text``, each with one word (a run of letters) to restore.

    Returns dicts with ``window`` (the characters), ``start`` and ``end`` (the word's span in
    the window): the word has between ``min_len`` and ``max_len`` letters, at least one
    character before it and none of it outside the window.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        s = int(torch.randint(len(text) - window, (1,), generator=g))
        w = text[s:s + window]
        spans = [(m.start(), m.end()) for m in re.finditer(r"[A-Za-z]+", w)
                 if min_len <= m.end() - m.start() <= max_len and m.start() > 0 and m.end() < window
                 and not w[m.start() - 1].isalpha() and not w[m.end()].isalpha()]
        if spans:
            a, b = spans[int(torch.randint(len(spans), (1,), generator=g))]
            out.append({"window": w, "start": a, "end": b})
    return out


@torch.no_grad()
def restore_bidirectional(encoder: MLMEncoder, tok, items: list[dict], left_only: bool = False,
                          one_pass: bool = False) -> list[str]:
    """BERT's guess of each blanked word: every letter of it is [MASK] (the word's length shows),
    the characters on both sides are given, and the answer is made of letters.

    By default the letters are filled one at a time, the one the model is surest of first, each
    pass seeing the letters filled so far (as a left-to-right model sees its own guesses);
    ``one_pass``: every masked letter is its most likely character in a single pass, each
    guessed without the others (how BERT's pretraining loss scores them). ``left_only``: every
    character after the word is [MASK] too and is never filled, so the same model knows only
    the left side, and that some text follows. The windows go through together (all of one length).
    """
    ids = torch.stack([tok.encode(it["window"]) for it in items])
    word = torch.zeros_like(ids, dtype=torch.bool)
    for i, it in enumerate(items):
        word[i, it["start"]:it["end"]] = True
        if left_only:
            ids[i, it["end"]:] = mask_id(encoder)
    ids[word] = mask_id(encoder)
    allowed = torch.cat([letters(tok), torch.zeros(encoder.cfg.vocab_size - tok.vocab_size, dtype=torch.bool)])
    encoder.eval()
    todo = word.clone()
    while todo.any():
        rows = torch.nonzero(todo.any(dim=1)).flatten()                 # the windows with blanks left
        x = ids[rows]
        logits = encoder.head(hidden_states(encoder, encoder.tok(x))).masked_fill(~allowed, float("-inf"))
        p, best = torch.softmax(logits, dim=-1).max(dim=-1)             # (b, T): the surest letter and its chance
        if one_pass:
            ids[todo] = best[todo[rows]]
            break
        pos = p.masked_fill(~todo[rows], -1.0).argmax(dim=1)            # each window: its surest blank
        ids[rows, pos] = best[torch.arange(len(rows)), pos]
        todo[rows, pos] = False
    return [tok.decode(ids[i, it["start"]:it["end"]]) for i, it in enumerate(items)]


@torch.no_grad()
def restore_left_to_right(lm: nn.Module, tok, items: list[dict]) -> list[str]:
    """A left-to-right model's guess of each blanked word: the characters before it, then its most
    likely next letters, one at a time, as many as the word has. What follows the word is never seen.

    ``lm(idx, attention_mask=...)`` is the course's GPT: the contexts, of different lengths, are
    padded on the left and go through together.
    """
    from .generation import left_pad

    lm.eval()
    barred = ~letters(tok)
    ids, mask = left_pad([tok.encode(it["window"][:it["start"]]) for it in items])
    lengths = [it["end"] - it["start"] for it in items]
    for _ in range(max(lengths)):
        logits = lm(ids, attention_mask=mask)[0][:, -1]
        nxt = logits.masked_fill(barred, float("-inf")).argmax(dim=-1)
        ids, mask = torch.cat([ids, nxt[:, None]], dim=1), torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    P = ids.size(1) - max(lengths)
    return [tok.decode(ids[i, P:P + n]) for i, n in enumerate(lengths)]


def restoration_scores(items: list[dict], guesses: list[str]) -> dict:
    """Share of the blanked words restored exactly (``words``) and of their letters (``characters``)."""
    truth = [it["window"][it["start"]:it["end"]] for it in items]
    words = sum(g == t for g, t in zip(guesses, truth)) / len(truth)
    chars = sum(a == b for g, t in zip(guesses, truth) for a, b in zip(g, t)) / sum(map(len, truth))
    return {"words": words, "characters": chars}


# ----------------------------------------------------------------------------- the classifier


class BertClassifier(nn.Module):
    """[CLS], then the passage, through the pretrained encoder; a linear layer on [CLS]'s final state.

    Follows :mod:`llmcourse.classify`'s interface: ``forward(idx)`` takes the passages'
    character ids (B, T), T + 1 <= the encoder's ``seq_len``.
    """

    def __init__(self, encoder: MLMEncoder, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        d = encoder.cfg.d_model
        self.cls = nn.Parameter(torch.randn(d) * 0.02)           # the [CLS] embedding, new
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(d, n_classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> logits (B, n_classes), read from position 0 ([CLS])."""
        x = self.encoder.tok(idx)                                # (B, T, D)
        x = torch.cat([self.cls.expand(x.size(0), 1, -1), x], dim=1)
        h = hidden_states(self.encoder, x)                       # (B, T + 1, D)
        return self.head(self.drop(h[:, 0]))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Bottom up: embeddings (token, position, their norm), each block, then [CLS] and the head."""
        e = self.encoder
        return ([list(e.tok.parameters()) + list(e.pos.parameters()) + list(e.emb_norm.parameters())]
                + [list(b.parameters()) for b in e.blocks]
                + [list(e.final_norm.parameters()) + [self.cls] + list(self.head.parameters())])

    def lm_loss(self, idx: torch.Tensor) -> torch.Tensor:
        """The masked-LM loss on the same passages (fresh corruption each call)."""
        from .attention import mlm_corrupt

        x, y = mlm_corrupt(idx, mask_id(self.encoder), self.encoder.cfg.vocab_size)
        return self.encoder(x, y)[1]


# ----------------------------------------------------------------------------- checkpoints


def checkpoint(encoder: MLMEncoder) -> dict:
    """A plain dict (config and weights) that :func:`from_checkpoint` restores."""
    return {"config": asdict(encoder.cfg), "state_dict": encoder.state_dict()}


def from_checkpoint(ckpt: dict) -> MLMEncoder:
    encoder = MLMEncoder(MLMConfig(**ckpt["config"]))
    encoder.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    return encoder.eval()


PRETRAINED_FILE = "bert_shakespeare.pt"


def _load(path=None) -> dict:
    from .data import data_path

    with (data_path(PRETRAINED_FILE) if path is None else Path(path)).open("rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def load_pretrained_bert(path=None):
    """Chapter 6's pretrained masked-LM encoder and its tokenizer: ``(encoder, tokenizer, info)``.

    Made by ``scripts/pretrain_bert.py`` on the same text as the course's GPT (``path``: another
    checkpoint of that script); the tokenizer knows the characters only ([MASK] is
    :func:`mask_id`, one past them).
    """
    from .tokenizer import CharTokenizer

    ckpt = _load(path)
    return from_checkpoint(ckpt), CharTokenizer(ckpt["chars"]), ckpt.get("info", {})


def classifier(pretrained: bool = True, n_classes: int = 2, dropout: float = 0.1, path=None):
    """``(BertClassifier, tokenizer)`` for :func:`llmcourse.classify.finetune_job`: on the pretrained
    encoder, or (``pretrained=False``) on an encoder of the same shape with fresh weights."""
    from .tokenizer import CharTokenizer

    ckpt = _load(path)
    encoder = from_checkpoint(ckpt) if pretrained else MLMEncoder(MLMConfig(**ckpt["config"]))
    return BertClassifier(encoder, n_classes, dropout), CharTokenizer(ckpt["chars"])
