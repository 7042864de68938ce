"""Post-LN against Pre-LN: a causal language model built from the Transformer's encoder layer.

Paper: Xiong, Yang, He, Zheng, Zheng, Xing, Zhang, Lan, Wang, Liu (2020), "On Layer
Normalization in the Transformer Architecture", arXiv:2002.04745. Post-LN (the original
Transformer) computes ``LayerNorm(x + F(x))``; Pre-LN computes ``x + F(LayerNorm(x))`` and
adds one LayerNorm after the last layer. Their claim: at initialisation Post-LN's gradients
are large near the output (their Fig. 3 and Theorem 1: the last layer's FFN gradient does
not shrink with depth L for Post-LN and shrinks as sqrt(1/L) for Pre-LN), which is why
Post-LN needs a learning-rate warm-up (their Fig. 2); Pre-LN's gradients are well behaved,
so the warm-up can be dropped (their Fig. 4: Pre-LN against Post-LN training).

The layer itself is :class:`llmcourse.transformer.EncoderLayer` with
``TransformerConfig.norm_position`` set to ``"post"`` or ``"pre"`` (tested against
``nn.TransformerEncoderLayer(norm_first=...)`` in ``tests/test_prenorm.py``). This module
only stacks it into a small character-level language model (causal mask) and measures it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import causal_mask
from .data import get_batch
from .train import set_seed
from .transformer import Embedding, EncoderLayer, TransformerConfig


class NormLM(nn.Module):
    """Embedding, ``n_layers`` causal :class:`EncoderLayer` s, (final LayerNorm if Pre-LN), read-out."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embedding(cfg.src_vocab, cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_position == "pre" else nn.Identity()
        self.out = nn.Linear(cfg.d_model, cfg.tgt_vocab)
        for p in self.parameters():                                 # as Seq2SeqTransformer
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) -> logits (B, T, V), and the mean cross-entropy if ``targets`` (B, T) given."""
        mask = causal_mask(idx.size(1), device=idx.device)         # (T, T), True = may attend
        x = self.embed(idx)                                         # (B, T, D)
        for layer in self.layers:
            x, _ = layer(x, mask)
        logits = self.out(self.final_norm(x))                       # (B, T, V)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def make_lm(norm_position: str, vocab: int, n_layers: int = 6, d_model: int = 64, n_heads: int = 4,
            d_ff: int = 256, seed: int = 0) -> NormLM:
    """A seeded :class:`NormLM` without dropout."""
    set_seed(seed)
    return NormLM(TransformerConfig(vocab, vocab, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                                    n_layers=n_layers, dropout=0.0, norm_position=norm_position))


def ffn_grad_norms(model: NormLM, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of ∂loss/∂W² (the FFN's second weight matrix) in every layer; (n_layers,)."""
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    return torch.stack([layer.ff.linear2.weight.grad.norm() for layer in model.layers])


def last_ffn_grad_by_depth(norm_position: str, vocab: int, ids: torch.Tensor, depths, seeds=(0, 1),
                           batches: int = 2, batch_size: int = 16, block_size: int = 64,
                           data_seed: int = 1234) -> torch.Tensor:
    """‖∂loss/∂W²‖ of the *last* layer's FFN at initialisation, for models of each depth in
    ``depths`` (the paper's Fig. 3(c, d)): (len(depths), len(seeds) * batches), one column per
    initialisation and batch. The same batches are used at every depth."""
    gen = set_seed(data_seed)
    data = [get_batch(ids, batch_size, block_size, generator=gen) for _ in range(batches)]
    out = []
    for L in depths:
        row = []
        for seed in seeds:
            model = make_lm(norm_position, vocab, n_layers=L, seed=seed)
            row += [ffn_grad_norms(model, x, y)[-1] for x, y in data]
        out.append(torch.stack(row))
    return torch.stack(out)


@dataclass
class WarmupRunConfig:
    """One training run of :func:`train_with_warmup`."""

    lr: float = 1e-3          #: peak (and constant) learning rate of Adam
    warmup: int = 0           #: linear warm-up steps from 0 to ``lr`` (0: none)
    steps: int = 150          #: optimisation steps
    batch_size: int = 16      #: windows per step
    block_size: int = 64      #: characters per window
    seed: int = 0             #: seeds the batches


def train_with_warmup(model: nn.Module, train_ids: torch.Tensor, cfg: WarmupRunConfig) -> list:
    """Adam (β = 0.9, 0.98, as Vaswani et al.), lr = cfg.lr · min(1, step / warmup); no clipping.

    Returns the training loss of every step (a diverged run shows as a plateau near ln V
    or as NaN).
    """
    gen = set_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    losses = []
    model.train()
    for step in range(1, cfg.steps + 1):
        scale = min(1.0, step / cfg.warmup) if cfg.warmup > 0 else 1.0
        for g in opt.param_groups:
            g["lr"] = cfg.lr * scale
        x, y = get_batch(train_ids, cfg.batch_size, cfg.block_size, generator=gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
