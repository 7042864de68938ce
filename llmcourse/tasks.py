"""A synthetic translation task: a toy English into an invented language, generated, no download.

Used by chapter 1 (Bahdanau, Cho, Bengio 2014, arXiv:1409.0473: accuracy against input
length, their Fig. 2) and chapter 2 (Vaswani et al. 2017, arXiv:1706.03762: Transformer
against a recurrent model).

The source language
    A sentence is a sequence of chunks, each drawn uniformly from four kinds: a noun
    (``cat``), an adjective-noun pair (``red cat``), a verb (``sees``) or a function word
    (``and``). Words are drawn uniformly within their class; no grammar beyond that, so
    the model cannot guess a word from its context: it must read it. Adjectives occur
    only right before a noun. Source lengths are drawn uniformly from
    ``min_len..max_len`` tokens (3..30 by default).

The reference translation (:func:`translate`), three rules
    1. *dictionary*: every source word has exactly one target word (a bijection);
    2. *reordering*: an adjective-noun pair swaps, ``red cat`` -> ``NOUN ADJ``
       (as in English -> French), so alignment is not the diagonal;
    3. *insertion*: every verb is followed by the particle ``ga``, which has no source
       word, so target and source lengths differ.

:func:`reference_alignment` gives the source position behind every target word. It is
invertible (:func:`untranslate`): ``ga`` is dropped, every target adjective
(which always follows its noun) swaps back, the dictionary is inverted. The tests check
the round trip and compare with a naive re-implementation.

Sequences are tensors of token ids, padded with ``PAD = 0``; targets are wrapped as
``BOS ... EOS``. Everything is deterministic given the seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<bos>", "<eos>"]

ADJECTIVES = ["red", "big", "old", "new", "small", "blue", "green", "fast"]
NOUNS = ["cat", "dog", "bird", "fish", "house", "tree", "car", "book",
         "king", "girl", "boy", "river", "city", "horse", "stone", "ship"]
VERBS = ["sees", "likes", "finds", "takes", "eats", "holds", "hears", "helps", "wants", "calls"]
FUNCTION_WORDS = ["and", "the", "a", "with", "near", "under", "then", "today"]
SOURCE_WORDS = ADJECTIVES + NOUNS + VERBS + FUNCTION_WORDS
PARTICLE = "ga"


def _invent_words(n: int) -> list[str]:
    """n distinct two-syllable words of the invented language (deterministic)."""
    cons, vows = "bdfklmnprstvz", "aeiou"
    syll = [c + v for c in cons for v in vows]                       # 65 syllables
    words = [syll[(7 * i + 3) % len(syll)] + syll[(11 * i + 5) % len(syll)] for i in range(n)]
    assert len(set(words)) == n and PARTICLE not in words
    return words


DICTIONARY: dict[str, str] = dict(zip(SOURCE_WORDS, _invent_words(len(SOURCE_WORDS))))
INVERSE: dict[str, str] = {t: s for s, t in DICTIONARY.items()}
TARGET_WORDS = list(DICTIONARY.values()) + [PARTICLE]
_ADJ = set(ADJECTIVES)
_NOUN = set(NOUNS)
_VERB = set(VERBS)
_TADJ = {DICTIONARY[a] for a in ADJECTIVES}


class Vocab:
    """Token <-> id for one side; ids 0, 1, 2 are ``<pad>``, ``<bos>``, ``<eos>``."""

    def __init__(self, words: list[str]):
        self.itos = SPECIALS + list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: list[str]) -> list[int]:
        return [self.stoi[w] for w in words]

    def decode(self, ids) -> list[str]:
        """Words up to the first ``<eos>``, skipping ``<pad>`` and ``<bos>``."""
        out = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.itos[i])
        return out


SRC_VOCAB = Vocab(SOURCE_WORDS)
TGT_VOCAB = Vocab(TARGET_WORDS)


def sample_sentence(rng: random.Random, length: int) -> list[str]:
    """A source sentence of exactly ``length`` tokens, chunk by chunk."""
    words: list[str] = []
    while len(words) < length:
        kind = rng.randrange(4)
        if kind == 1 and len(words) + 2 > length:                    # no room for a pair
            kind = 0
        if kind == 0:
            words.append(rng.choice(NOUNS))
        elif kind == 1:
            words += [rng.choice(ADJECTIVES), rng.choice(NOUNS)]
        elif kind == 2:
            words.append(rng.choice(VERBS))
        else:
            words.append(rng.choice(FUNCTION_WORDS))
    return words


def translate(src: list[str]) -> list[str]:
    """The reference translation: dictionary, adjective-noun swap, particle after verbs."""
    out: list[str] = []
    i = 0
    while i < len(src):
        w = src[i]
        if w in _ADJ:                                                 # always followed by a noun
            out += [DICTIONARY[src[i + 1]], DICTIONARY[w]]
            i += 2
            continue
        out.append(DICTIONARY[w])
        if w in _VERB:
            out.append(PARTICLE)
        i += 1
    return out


def reference_alignment(src: list[str]) -> list[int | None]:
    """For each word of ``translate(src)``, the position in ``src`` of the word it translates
    (``None`` for the particle ``ga``, which translates nothing): the alignment the three
    rules imply, to score a model's learned alignment against."""
    out: list[int | None] = []
    i = 0
    while i < len(src):
        if src[i] in _ADJ:                                            # NOUN ADJ <- adj noun
            out += [i + 1, i]
            i += 2
            continue
        out.append(i)
        if src[i] in _VERB:
            out.append(None)
        i += 1
    return out


def untranslate(tgt: list[str]) -> list[str]:
    """The inverse of :func:`translate` (used to check it is a bijection)."""
    words = [w for w in tgt if w != PARTICLE]
    out: list[str] = []
    for w in words:
        if w in _TADJ:                                                # swap back with its noun
            out.insert(len(out) - 1, INVERSE[w])
        else:
            out.append(INVERSE[w])
    return out


@dataclass
class TaskConfig:
    """How many sentence pairs to generate, and how long."""

    n: int = 4000          #: number of sentence pairs
    min_len: int = 3       #: shortest source sentence (tokens)
    max_len: int = 30      #: longest source sentence (tokens)
    seed: int = 0          #: seeds the generator


@dataclass
class Seq2SeqData:
    """Padded id tensors of a set of pairs.

    ``src`` (N, S) source ids, PAD-padded; ``tgt`` (N, T) ``BOS`` target ``EOS``, padded;
    ``src_len`` (N,) source lengths; ``pairs`` the words, for display.
    """

    src: torch.Tensor
    tgt: torch.Tensor
    src_len: torch.Tensor
    pairs: list

    def __len__(self) -> int:
        return self.src.size(0)

    def subset(self, idx: torch.Tensor) -> "Seq2SeqData":
        """Rows ``idx``, trimmed to the longest source and target among them."""
        s_len = self.src_len[idx]
        t_len = (self.tgt[idx] != PAD).sum(1)
        return Seq2SeqData(self.src[idx, : int(s_len.max())], self.tgt[idx, : int(t_len.max())],
                           s_len, [self.pairs[i] for i in idx.tolist()])


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def encode_pairs(pairs: list[tuple[list[str], list[str]]]) -> Seq2SeqData:
    """Words -> padded id tensors (targets wrapped in ``BOS``/``EOS``)."""
    src = [SRC_VOCAB.encode(s) for s, _ in pairs]
    tgt = [[BOS] + TGT_VOCAB.encode(t) + [EOS] for _, t in pairs]
    return Seq2SeqData(_pad(src), _pad(tgt), torch.tensor([len(s) for s in src]), pairs)


def make_pairs(cfg: TaskConfig) -> list[tuple[list[str], list[str]]]:
    """``cfg.n`` (source, reference translation) pairs, lengths uniform in min_len..max_len."""
    rng = random.Random(cfg.seed)
    pairs = []
    for _ in range(cfg.n):
        src = sample_sentence(rng, rng.randint(cfg.min_len, cfg.max_len))
        pairs.append((src, translate(src)))
    return pairs


def make_splits(n_train: int = 4000, n_val: int = 500, min_len: int = 3, max_len: int = 30,
                seed: int = 0) -> tuple[Seq2SeqData, Seq2SeqData]:
    """Training and validation sets from independent seeds (overlap is possible but rare)."""
    train = make_pairs(TaskConfig(n_train, min_len, max_len, seed))
    val = make_pairs(TaskConfig(n_val, min_len, max_len, seed + 10_000))
    return encode_pairs(train), encode_pairs(val)
