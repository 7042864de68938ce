"""A character-level tokenizer: one token per distinct character of a text.

As in Karpathy's char-rnn and nanoGPT's ``shakespeare_char`` data set; it needs no
download, and its vocabulary (about 80 symbols) keeps the embedding tables tiny.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CharTokenizer:
    """Maps each character of ``chars`` to its index. Build one with :meth:`from_text`."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def stoi(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> torch.Tensor:
        """str -> LongTensor (len(text),). Raises ``KeyError`` naming an unknown character."""
        stoi = self.stoi
        try:
            return torch.tensor([stoi[c] for c in text], dtype=torch.long)
        except KeyError as exc:
            raise KeyError(f"character {exc.args[0]!r} is not in the tokenizer's vocabulary") from None

    def decode(self, ids) -> str:
        """Sequence of ints (list or 1-D tensor) -> str."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)
