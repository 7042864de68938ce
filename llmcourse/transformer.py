"""The encoder-decoder Transformer, its learning-rate schedule and label smoothing.

Paper: Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin (2017),
"Attention Is All You Need", arXiv:1706.03762. Section 3.1 (encoder and decoder stacks,
post-norm residuals ``LayerNorm(x + Sublayer(x))``), 3.3 (position-wise feed-forward),
3.4 (embeddings scaled by √d_model, output projection tied to the target embedding),
3.5 (sinusoidal positional encoding), 5.3 (equation 3, the warm-up schedule),
5.4 (residual dropout, label smoothing).

Checked against ``nn.TransformerEncoderLayer`` (post-norm, ReLU) with copied weights and
``F.cross_entropy(label_smoothing=...)`` in ``tests/test_transformer.py``. Attention
itself is :class:`llmcourse.attention.MultiHeadAttention`.

``norm_position="pre"`` moves each LayerNorm in front of its sublayer,
``x + Sublayer(LayerNorm(x))``, and adds a final LayerNorm after each stack: the Pre-LN
Transformer of Xiong et al. (2020), "On Layer Normalization in the Transformer
Architecture", arXiv:2002.04745 (chapter 3; checked against
``nn.TransformerEncoderLayer(norm_first=True)`` in ``tests/test_prenorm.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention, causal_mask


@dataclass
class TransformerConfig:
    """Sizes of a :class:`Seq2SeqTransformer` (the paper's base model: 512, 8, 2048, 6, 0.1)."""

    src_vocab: int                 #: source vocabulary size
    tgt_vocab: int                 #: target vocabulary size
    d_model: int = 64              #: width of every sublayer's output
    n_heads: int = 4               #: attention heads (d_model // n_heads per head)
    d_ff: int = 128                #: hidden width of the feed-forward sublayer
    n_layers: int = 2              #: layers in the encoder and in the decoder
    dropout: float = 0.1           #: residual, embedding and attention dropout
    max_len: int = 128             #: longest sequence the positional table covers
    tie_output: bool = True        #: share the target embedding with the output projection
    pad_id: int = 0                #: padding token id (both sides)
    norm_position: str = "post"    #: "post": LayerNorm(x + f(x)) (the paper); "pre": x + f(LayerNorm(x))


def sinusoidal_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)); (max_len, d)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]                  # (L, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2) / d_model)  # (d/2,)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq)
    return pe


class Embedding(nn.Module):
    """Token embedding × √d_model plus the sinusoidal position, then dropout (section 3.4, 3.5)."""

    def __init__(self, vocab: int, cfg: TransformerConfig):
        super().__init__()
        self.tok = nn.Embedding(vocab, cfg.d_model)
        self.register_buffer("pe", sinusoidal_encoding(cfg.max_len, cfg.d_model), persistent=False)
        self.scale = math.sqrt(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.tok(ids) * self.scale + self.pe[: ids.size(1)])   # (B, L, D)


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W1 + b1) W2 + b2, applied at every position (section 3.3)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.linear1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.linear2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.drop(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward, each wrapped as LayerNorm(x + Dropout(Sublayer(x)))
    (``norm_position="post"``) or x + Dropout(Sublayer(LayerNorm(x))) (``"pre"``)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.norm_position not in ("post", "pre"):
            raise ValueError(f"norm_position must be 'post' or 'pre', not {cfg.norm_position!r}")
        self.pre_norm = cfg.norm_position == "pre"
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ff = FeedForward(cfg)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None = None):
        """x (B, S, D), src_mask (B, 1, 1, S) True at real tokens. Returns (x, weights (B, H, S, S))."""
        if self.pre_norm:                                         # Xiong et al. 2020
            h = self.norm1(x)
            a, w = self.self_attn(h, h, h, src_mask)
            x = x + self.drop(a)
            return x + self.drop(self.ff(self.norm2(x))), w
        a, w = self.self_attn(x, x, x, src_mask)
        x = self.norm1(x + self.drop(a))                          # post-norm, as the paper
        x = self.norm2(x + self.drop(self.ff(x)))
        return x, w


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder output, feed-forward; post- or pre-norm."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.norm_position not in ("post", "pre"):
            raise ValueError(f"norm_position must be 'post' or 'pre', not {cfg.norm_position!r}")
        self.pre_norm = cfg.norm_position == "pre"
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ff = FeedForward(cfg)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(cfg.d_model) for _ in range(3))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor,
                src_mask: torch.Tensor | None = None):
        """y (B, T, D), memory (B, S, D); tgt_mask (T, T) causal; src_mask (B, 1, 1, S).

        Returns (y, self-attention weights (B, H, T, T), cross-attention weights (B, H, T, S)).
        """
        if self.pre_norm:
            h = self.norm1(y)
            a, w_self = self.self_attn(h, h, h, tgt_mask)
            y = y + self.drop(a)
            a, w_cross = self.cross_attn(self.norm2(y), memory, memory, src_mask)
            y = y + self.drop(a)
            return y + self.drop(self.ff(self.norm3(y))), w_self, w_cross
        a, w_self = self.self_attn(y, y, y, tgt_mask)
        y = self.norm1(y + self.drop(a))
        a, w_cross = self.cross_attn(y, memory, memory, src_mask)   # queries: target; keys: source
        y = self.norm2(y + self.drop(a))
        y = self.norm3(y + self.drop(self.ff(y)))
        return y, w_self, w_cross


class Seq2SeqTransformer(nn.Module):
    """Encoder and decoder stacks of :class:`EncoderLayer` and :class:`DecoderLayer` (Fig. 1)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.src_embed = Embedding(cfg.src_vocab, cfg)
        self.tgt_embed = Embedding(cfg.tgt_vocab, cfg)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        pre = cfg.norm_position == "pre"                           # Pre-LN: one more norm per stack
        self.enc_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.out = nn.Linear(cfg.d_model, cfg.tgt_vocab, bias=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if cfg.tie_output:
            self.out.weight = self.tgt_embed.tok.weight            # section 3.4

    def src_mask(self, src: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, S): True at real source tokens, broadcast over heads and queries."""
        return (src != self.cfg.pad_id)[:, None, None, :]

    def encode(self, src: torch.Tensor, attn: dict | None = None) -> torch.Tensor:
        """src (B, S) ids -> memory (B, S, D); appends each layer's weights to ``attn`` if given."""
        mask = self.src_mask(src)
        x = self.src_embed(src)
        for layer in self.encoder:
            x, w = layer(x, mask)
            if attn is not None:
                attn.setdefault("encoder", []).append(w)
        return self.enc_norm(x)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src: torch.Tensor,
               attn: dict | None = None) -> torch.Tensor:
        """tgt_in (B, T) ids (BOS first), memory (B, S, D) -> logits (B, T, V_tgt)."""
        tgt_mask = causal_mask(tgt_in.size(1), device=tgt_in.device)   # position t sees <= t
        src_mask = self.src_mask(src)
        y = self.tgt_embed(tgt_in)
        for layer in self.decoder:
            y, w_self, w_cross = layer(y, memory, tgt_mask, src_mask)
            if attn is not None:
                attn.setdefault("decoder_self", []).append(w_self)
                attn.setdefault("cross", []).append(w_cross)
        return self.out(self.dec_norm(y))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False):
        """Teacher-forced logits (B, T, V_tgt); with ``return_attention`` also a dict of
        per-layer weights: ``encoder`` (B, H, S, S), ``decoder_self`` (B, H, T, T), ``cross`` (B, H, T, S)."""
        attn: dict | None = {} if return_attention else None
        logits = self.decode(tgt_in, self.encode(src, attn), src, attn)
        return (logits, attn) if return_attention else logits

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int) -> torch.Tensor:
        """Most likely token at each step, one step at a time; (B, <= max_len) without BOS.

        Positions after a sequence's EOS are filled with the pad id.
        """
        memory = self.encode(src)
        ys = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(ys, memory, src)[:, -1].argmax(-1)      # (B,)
            nxt = nxt.masked_fill(done, self.cfg.pad_id)
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if done.all():
                break
        return ys[:, 1:]


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """Equation 3: factor · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5), steps from 1.

    Linear increase for ``warmup`` steps, then decay as 1/√step; the peak, at
    ``step == warmup``, is factor · (d_model · warmup)^-0.5.
    """
    step = max(step, 1)
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def label_smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, eps: float = 0.1,
                                 ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy against (1 - eps) · one_hot(target) + eps / V (section 5.4, ε_ls = 0.1).

    logits (N, V), target (N,); mean over targets that are not ``ignore_index``. Equals
    ``F.cross_entropy(logits, target, label_smoothing=eps, ignore_index=...)``.
    """
    logp = F.log_softmax(logits, dim=-1)                               # (N, V)
    keep = target != ignore_index
    logp, target = logp[keep], target[keep]
    nll = -logp.gather(1, target[:, None]).squeeze(1)                  # -log p(correct)
    uniform = -logp.mean(dim=-1)                                       # -(1/V) Σ_v log p(v)
    return ((1 - eps) * nll + eps * uniform).mean()
