"""A GRU encoder-decoder, with or without additive (Bahdanau) attention.

Papers: Bahdanau, Cho, Bengio (2014), "Neural Machine Translation by Jointly Learning to
Align and Translate", arXiv:1409.0473, section 3 and appendix A (RNNsearch: bidirectional
encoder, alignment model e_ij = vᵀ tanh(W s_{i-1} + U h_j), context c_i = Σ_j α_ij h_j);
Cho et al. (2014), arXiv:1406.1078 (RNNencdec: one fixed context vector c read at every
decoder step).

One class, one switch: ``attention=False`` is RNNencdec (the whole source squeezed into
the encoder's final states), ``attention=True`` is RNNsearch. Simplifications against
the paper: GRU cells from PyTorch, no maxout deep output (a linear read-out of
[s_i; c_i; E y_{i-1}]), s_0 computed from both final encoder states (the paper uses the
backward one), greedy decoding instead of beam search.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass
class RNNConfig:
    """Sizes of a :class:`GRUSeq2Seq`."""

    src_vocab: int                 #: source vocabulary size
    tgt_vocab: int                 #: target vocabulary size
    emb: int = 64                  #: embedding width (both sides)
    hidden: int = 64               #: GRU state width (the encoder has one per direction)
    attention: bool = True         #: additive attention (RNNsearch) or a fixed context (RNNencdec)
    dropout: float = 0.0           #: dropout on embeddings and the read-out
    pad_id: int = 0                #: padding token id (both sides)


class AdditiveAttention(nn.Module):
    """α_ij = softmax_j(vᵀ tanh(W s_{i-1} + U h_j)) over real source positions j."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.W = nn.Linear(query_dim, attn_dim, bias=False)
        self.U = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, s: torch.Tensor, Uh: torch.Tensor, h: torch.Tensor, mask: torch.Tensor):
        """s (B, Hd) previous decoder state, Uh (B, S, A) = U h precomputed, h (B, S, 2H),
        mask (B, S) True at real tokens. Returns (context (B, 2H), weights (B, S))."""
        e = self.v(torch.tanh(self.W(s)[:, None, :] + Uh)).squeeze(-1)   # (B, S) energies
        alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(alpha[:, None, :], h).squeeze(1), alpha


class GRUSeq2Seq(nn.Module):
    """Bidirectional GRU encoder; GRU decoder reading either c (fixed) or c_i (attention)."""

    def __init__(self, cfg: RNNConfig):
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.src_embed = nn.Embedding(cfg.src_vocab, cfg.emb, padding_idx=cfg.pad_id)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab, cfg.emb, padding_idx=cfg.pad_id)
        self.encoder = nn.GRU(cfg.emb, H, batch_first=True, bidirectional=True)
        self.init_state = nn.Linear(2 * H, H)              # s_0 = tanh(W_s [h_fwd_last; h_bwd_first])
        self.attn = AdditiveAttention(H, 2 * H, H) if cfg.attention else None
        self.cell = nn.GRUCell(cfg.emb + 2 * H, H)          # input [E y_{i-1}; c_i]
        self.readout = nn.Linear(H + 2 * H + cfg.emb, cfg.tgt_vocab)
        self.drop = nn.Dropout(cfg.dropout)

    def encode(self, src: torch.Tensor):
        """src (B, S) -> annotations h (B, S, 2H), summary (B, 2H), mask (B, S)."""
        mask = src != self.cfg.pad_id
        lengths = mask.sum(1).cpu()
        packed = pack_padded_sequence(self.drop(self.src_embed(src)), lengths,
                                      batch_first=True, enforce_sorted=False)
        out, last = self.encoder(packed)                    # last (2, B, H): final fwd, final bwd
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        summary = torch.cat([last[0], last[1]], dim=-1)     # (B, 2H): the fixed-length vector
        return h, summary, mask

    def _step(self, y_prev, s, h, Uh, summary, mask):
        """One decoder step: context, new state, logits (B, V), weights (B, S) or None."""
        e = self.drop(self.tgt_embed(y_prev))               # (B, E)
        if self.attn is not None:
            c, alpha = self.attn(s, Uh, h, mask)            # c_i depends on s_{i-1}
        else:
            c, alpha = summary, None                        # the same c at every step
        s = self.cell(torch.cat([e, c], dim=-1), s)         # (B, H)
        logits = self.readout(self.drop(torch.cat([s, c, e], dim=-1)))
        return s, logits, alpha

    def _start(self, src):
        h, summary, mask = self.encode(src)
        s = torch.tanh(self.init_state(summary))            # (B, H)
        Uh = self.attn.U(h) if self.attn is not None else None   # computed once per sentence
        return h, summary, mask, s, Uh

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False):
        """Teacher-forced logits (B, T, V); with ``return_attention`` also α (B, T, S) (or None)."""
        h, summary, mask, s, Uh = self._start(src)
        logits, alphas = [], []
        for t in range(tgt_in.size(1)):                     # sequential: s_t needs s_{t-1}
            s, lg, a = self._step(tgt_in[:, t], s, h, Uh, summary, mask)
            logits.append(lg)
            alphas.append(a)
        logits = torch.stack(logits, dim=1)
        if not return_attention:
            return logits
        return logits, (torch.stack(alphas, dim=1) if self.attn is not None else None)

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int,
                      return_attention: bool = False):
        """Most likely token at each step; (B, <= max_len) without BOS, pad after EOS."""
        h, summary, mask, s, Uh = self._start(src)
        y = torch.full((src.size(0),), bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros_like(y, dtype=torch.bool)
        out, alphas = [], []
        for _ in range(max_len):
            s, lg, a = self._step(y, s, h, Uh, summary, mask)
            y = lg.argmax(-1).masked_fill(done, self.cfg.pad_id)
            out.append(y)
            alphas.append(a)
            done |= y == eos_id
            if done.all():
                break
        ys = torch.stack(out, dim=1)
        if not return_attention:
            return ys
        return ys, (torch.stack(alphas, dim=1) if self.attn is not None else None)
