"""Scaled dot-product and multi-head attention, with the masks they use.

Paper: Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin (2017),
"Attention Is All You Need", arXiv:1706.03762, section 3.2 (equation 1 and the
multi-head formula of 3.2.2).

Checked against PyTorch's own ``F.scaled_dot_product_attention`` and
``nn.MultiheadAttention`` (``tests/test_attention.py``).

Mask convention, everywhere in the course: a boolean tensor where ``True`` means
"this query may attend to this key" (PyTorch's convention for boolean masks).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def causal_mask(T: int, device=None) -> torch.Tensor:
    """Boolean (T, T) mask, ``True`` where query i may attend key j, that is j <= i."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def padding_mask(lengths, max_len: int | None = None) -> torch.Tensor:
    """Boolean (B, max_len) mask, ``True`` at real tokens, ``False`` at padding.

    ``lengths`` holds each sequence's length; ``max_len`` defaults to the largest.
    """
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` among the entries where ``mask`` is ``True``.

    ``mask`` is boolean and broadcastable to ``scores``. Masked entries get exactly 0; a
    slice with no allowed entry (say, a padded query) is all zeros instead of the NaN a
    plain softmax of ``-inf`` everywhere gives, and its gradient is zero, not NaN.
    """
    mask = torch.broadcast_to(mask, scores.shape)
    anything = mask.any(dim, keepdim=True)                     # slices with at least one allowed entry
    scores = scores.masked_fill(~mask, float("-inf"))
    scores = scores.masked_fill(~anything, 0.0)                # empty slices: finite, zeroed below
    return torch.softmax(scores, dim=dim).masked_fill(~mask, 0.0)


def mlm_corrupt(tokens: torch.Tensor, mask_id: int, vocab_size: int, special_ids=(), p: float = 0.15,
                generator: torch.Generator | None = None):
    """BERT's masked-language-model corruption (Devlin et al. 2018, arXiv:1810.04805, section 3.1).

    Every position whose token is neither special nor ``mask_id`` is selected with
    probability ``p``, independently; of the selected, 80% become ``mask_id``, 10% a token
    drawn uniformly from the vocabulary without the special ids and ``mask_id``, 10% stay.
    Returns ``(inputs, labels)``: ``labels`` holds the original token where selected and
    -100 (``F.cross_entropy``'s ``ignore_index``) elsewhere. ``tokens`` is not modified.
    """
    excluded = torch.tensor(sorted({int(mask_id), *map(int, special_ids)}), device=tokens.device)
    eligible = ~torch.isin(tokens, excluded)
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    selected = eligible & (u < p)
    action = torch.rand(tokens.shape, generator=generator, device=tokens.device)  # 80 / 10 / 10
    allowed = torch.arange(vocab_size, device=tokens.device)
    allowed = allowed[~torch.isin(allowed, excluded)]          # what a random replacement may be
    random_tokens = allowed[torch.randint(len(allowed), tokens.shape, generator=generator,
                                          device=tokens.device)]
    inputs = torch.where(selected & (action < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(selected & (action >= 0.8) & (action < 0.9), random_tokens, inputs)
    labels = torch.where(selected, tokens, torch.full_like(tokens, -100))
    return inputs, labels


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 dropout: nn.Module | None = None):
    """softmax(q kᵀ / √d_k) v, with the attention weights.

    Shapes: q (..., Lq, dk), k (..., Lk, dk), v (..., Lk, dv); ``mask`` boolean,
    broadcastable to (..., Lq, Lk), ``True`` = may attend.
    Returns (output (..., Lq, dv), weights (..., Lq, Lk)).
    """
    dk = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(dk)           # (..., Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)                    # each row sums to one over keys
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, n_heads, L, D // n_heads); head h holds features h*Dh .. (h+1)*Dh - 1."""
    B, L, D = x.shape
    return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, L, Dh) -> (B, L, n_heads * Dh): the inverse of :func:`split_heads`."""
    B, H, L, Dh = x.shape
    return x.transpose(1, 2).reshape(B, L, H * Dh)


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W_O, head_i = Attention(Q W_Qi, K W_Ki, V W_Vi).

    The h per-head projections are stored as one ``nn.Linear(d_model, d_model)`` each
    for queries, keys and values, split into heads after projecting. With the weights
    copied, it equals ``nn.MultiheadAttention(batch_first=True)``.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(d_model, d_model, bias=bias)
        self.w_v = nn.Linear(d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None = None):
        """query (B, Lq, D), key and value (B, Lk, D); mask broadcastable to (B, H, Lq, Lk).

        Returns (output (B, Lq, D), weights (B, H, Lq, Lk)).
        """
        q = split_heads(self.w_q(query), self.n_heads)             # (B, H, Lq, Dh)
        k = split_heads(self.w_k(key), self.n_heads)               # (B, H, Lk, Dh)
        v = split_heads(self.w_v(value), self.n_heads)             # (B, H, Lk, Dh)
        out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout)
        return self.w_o(merge_heads(out)), weights
