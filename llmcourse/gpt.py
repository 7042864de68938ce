"""A decoder-only Transformer language model (GPT).

Papers: Radford, Narasimhan, Salimans, Sutskever (2018), "Improving Language
Understanding by Generative Pre-Training" (section 3.1: a stack of masked
self-attention blocks trained to predict the next token); the block layout follows
GPT-2 (Radford et al. 2019): layer norm *before* attention and MLP (Pre-LN, see
Xiong et al. 2020, arXiv:2002.04745), a final layer norm, learned positions, and the
output layer tied to the token embedding.

Reading order follows karpathy/nanoGPT's ``model.py``: attention, MLP, block, config,
model. Checked by ``tests/test_gpt.py``: shapes, the two attention paths agreeing,
no information flowing from future tokens (a gradient check), a tiny batch overfitting.
The forward pass also takes left-padded batches (an attention mask) and a KV cache, which
:mod:`llmcourse.generation` uses to sample; ``tests/test_generation.py`` checks them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import causal_mask, merge_heads, scaled_dot_product_attention, split_heads


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where token t sees tokens 0..t only.

    One ``c_attn`` linear makes queries, keys and values at once (as GPT-2 does);
    ``fused=True`` calls PyTorch's fused kernel, ``False`` the course's own
    :func:`~llmcourse.attention.scaled_dot_product_attention`: same numbers, the fused
    one is faster and uses less memory.
    """

    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float = 0.0,
                 bias: bool = True, fused: bool = True):
        super().__init__()
        assert n_embd % n_head == 0
        self.n_head, self.dropout, self.fused = n_head, dropout, fused
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(block_size), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, kv=None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C).

        ``mask``: ``None`` for plain causal attention, else a boolean mask broadcastable to
        (B, n_head, T, S), ``True`` where a query may attend a key. ``kv``: this layer's
        slice of a :class:`KVCache`, ``(keys, values, start)``: the new keys and values are
        written at positions ``start .. start+T-1`` and the queries attend to all ``start+T``.
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))   # (B, nh, T, hs)
        causal = mask is None
        if kv is not None:
            keys, values, start = kv
            keys[:, :, start:start + T] = k
            values[:, :, start:start + T] = v
            k, v = keys[:, :, :start + T], values[:, :, :start + T]   # (B, nh, S, hs)
            if start > 0 and causal:             # one new query sees every cached key
                assert T == 1, "a multi-token step after the first needs an explicit mask"
                causal = False
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            if causal:
                mask = self.mask[:T, :T]
            y, _ = scaled_dot_product_attention(q, k, v, mask, self.attn_dropout)
        return self.resid_dropout(self.c_proj(merge_heads(y)))      # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear(C, 4C), GELU, Linear(4C, C)."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)): the Pre-LN residual block."""

    def __init__(self, cfg: "GPTConfig"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg.n_embd, cfg.n_head, cfg.block_size, cfg.dropout,
                                        cfg.bias, cfg.fused_attention)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg.n_embd, cfg.dropout, cfg.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, kv=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, kv)
        return x + self.mlp(self.ln_2(x))


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) mask of real tokens -> (B, S) positions counted from each row's first real token.

    Left padding gets position 0 (it is masked out anyway): ``[0, 0, 1, 1, 1] -> [0, 0, 0, 1, 2]``.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def padded_causal_mask(attention_mask: torch.Tensor, T: int) -> torch.Tensor:
    """Boolean (B, 1, T, S) attention mask for the last T of S positions: causal, padding masked.

    Query i (at position S-T+i) may attend key j when j <= S-T+i and key j is a real token.
    Each query may always attend itself, so that rows of padding stay finite (no real
    token attends to padding, so what padding computes never reaches one).
    """
    S = attention_mask.size(-1)
    key = torch.arange(S, device=attention_mask.device)
    query = key[S - T:, None]
    allowed = (key <= query) & attention_mask[:, None, None, :].bool()
    return allowed | (key == query)


class KVCache:
    """Keys and values of every layer for a batch of sequences, for up to ``max_len`` positions.

    Filled by :meth:`GPT.forward` (``cache=``): ``length`` positions are in it.
    Preallocated once, so a generation step copies one position per layer, not the prefix.
    """

    def __init__(self, model: "GPT", batch_size: int, max_len: int):
        cfg, p = model.config, model.wte.weight
        shape = (cfg.n_layer, batch_size, cfg.n_head, max_len, cfg.n_embd // cfg.n_head)
        self.k = torch.empty(shape, dtype=p.dtype, device=p.device)   # only [:length] is ever read
        self.v = torch.empty(shape, dtype=p.dtype, device=p.device)
        self.length = 0


@dataclass
class GPTConfig:
    """Shape of a GPT. Defaults: the course's pretrained character-level model."""

    vocab_size: int = 78          #: number of distinct tokens
    block_size: int = 128         #: longest context, in tokens
    n_layer: int = 4              #: Transformer blocks
    n_head: int = 4               #: attention heads per block
    n_embd: int = 160             #: width of the residual stream
    dropout: float = 0.0          #: dropout on attention weights and residual branches
    bias: bool = True             #: biases in Linear and LayerNorm layers
    fused_attention: bool = True  #: PyTorch's fused attention kernel (False: the course's own)


class GPT(nn.Module):
    """Token and position embeddings, ``n_layer`` blocks, a final LayerNorm, a tied output layer."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight                      # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():                    # GPT-2: scaled residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the position embedding (tied tokens count once)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                cache: "KVCache | None" = None):
        """idx (B, T) token ids -> (logits (B, T, vocab), loss or None).

        The plain call ``model(idx, targets)`` is causal attention over positions 0..T-1.
        For batches of left-padded sequences (as :func:`llmcourse.generation.generate`
        returns them) pass ``attention_mask`` (B, S), true at real tokens, over every
        position so far (S = T, or the cache's length + T): padding is never attended to,
        and positions count from each row's first real token (``position_ids`` (B, T)
        overrides them). ``cache``, a :class:`KVCache`, keeps the keys and values of
        earlier calls: ``idx`` is then only the new tokens, and the cache grows by T.
        """
        logits = self.lm_head(self.features(idx, attention_mask=attention_mask,
                                            position_ids=position_ids, cache=cache))   # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def features(self, idx: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None, cache: "KVCache | None" = None) -> torch.Tensor:
        """The final layer-normed hidden states (B, T, n_embd): what ``lm_head`` reads.

        Arguments as for :meth:`forward`. Heads other than the language model's read them
        too: the scalar head of a reward model, the value head of PPO (:mod:`llmcourse.rlhf`).
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        if position_ids is None:
            if attention_mask is None:
                if start + T > self.config.block_size:
                    raise ValueError(f"sequence of {start + T} tokens is longer than "
                                     f"block_size={self.config.block_size}")
                position_ids = torch.arange(start, start + T, device=idx.device)
            else:
                position_ids = positions_from_mask(attention_mask)[:, start:start + T]
        if attention_mask is not None or position_ids.dim() > 1:
            if int(position_ids.max()) >= self.config.block_size:
                raise ValueError(f"position {int(position_ids.max())} is past the context window "
                                 f"(block_size={self.config.block_size})")
        mask = None
        if attention_mask is not None:
            mask = padded_causal_mask(attention_mask, T)
        elif start > 0 and T > 1:
            mask = padded_causal_mask(torch.ones(1, start + T, dtype=torch.bool, device=idx.device), T)
        x = self.drop(self.wte(idx) + self.wpe(position_ids))     # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if cache is None else (cache.k[i], cache.v[i], start))
        if cache is not None:
            cache.length = start + T
        return self.ln_f(x)                                        # (B, T, C)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T): (B, T + max_new_tokens); temperature 0 is greedy.

        Runs in eval mode (no dropout) and leaves the model in the mode it was in.
        Until the context window is full this is :func:`llmcourse.generation.generate`
        (with a KV cache); past it, the window slides: each further token is predicted from
        the last ``block_size`` tokens, recomputed without a cache. For prompts of different
        lengths, nucleus sampling, end tokens and log-probabilities, use that function.
        """
        from .generation import generate, sample_next

        fit = min(max_new_tokens, self.config.block_size - idx.size(1))
        if fit > 0:
            idx = generate(self, idx, fit, temperature=temperature, top_k=top_k,
                           generator=generator).sequences
        was_training = self.training
        self.eval()                                                 # no dropout while sampling
        for _ in range(max_new_tokens - max(fit, 0)):              # sliding window
            logits, _ = self(idx[:, -self.config.block_size:])
            nxt, _ = sample_next(logits[:, -1, :], temperature, top_k, None, generator)
            idx = torch.cat([idx, nxt[:, None]], dim=1)
        self.train(was_training)
        return idx

    def checkpoint(self) -> dict:
        """A plain dict (config and weights) that :meth:`from_checkpoint` restores."""
        return {"config": asdict(self.config), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "GPT":
        model = cls(GPTConfig(**ckpt["config"]))
        state = {k: v.float() for k, v in ckpt["state_dict"].items()}
        model.load_state_dict(state)
        return model


PRETRAINED_FILE = "gpt_shakespeare.pt"


def snapshot_file(name: str = PRETRAINED_FILE) -> str:
    """Name of the file holding the intermediate snapshots of checkpoint ``name``."""
    stem = name[:-3] if name.endswith(".pt") else name
    return stem + "_snapshots.pt"


def _load(name: str) -> dict:
    from .data import data_path

    with data_path(name).open("rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def _steps(info: dict) -> list[int]:
    return [int(s) for s in info.get("snapshots", {}).get("steps", [])] + [int(info.get("iterations", 0))]


def pretrained_steps(name: str = PRETRAINED_FILE) -> list[int]:
    """Training steps that :func:`load_pretrained` can return: the snapshots', then the final one.

    Log-spaced, for studying behaviour over pretraining: ``[load_pretrained(step=s)[0] for s
    in pretrained_steps()]`` is the same run after more and more optimizer steps.
    """
    return _steps(_load(name).get("info", {}))


def load_pretrained(name: str = PRETRAINED_FILE, step: int | None = None):
    """The course's pretrained character-level GPT and its tokenizer: ``(model, tokenizer, info)``.

    Trained on the shipped Shakespeare by ``scripts/pretrain_gpt.py`` (the README gives
    the command and its time); ``info`` holds the training settings, the loss curves and
    the validation loss. The model comes in eval mode, on the CPU.

    ``step`` (one of :func:`pretrained_steps`) returns the same run after that many
    optimizer steps instead of the final model: the snapshots ship in a second file. Its
    ``info`` is the run's, with ``step``, ``val_loss`` and ``train_loss`` of that snapshot.
    """
    from .tokenizer import CharTokenizer

    ckpt = _load(name)
    chars, info = ckpt["chars"], dict(ckpt.get("info", {}))
    steps = _steps(info)
    if step is not None and int(step) not in steps:
        raise ValueError(f"no snapshot at step {step}: the steps available are {steps} "
                         "(llmcourse.gpt.pretrained_steps())")
    if step is not None and int(step) != steps[-1]:
        snaps = _load(snapshot_file(name))
        i = snaps["steps"].index(int(step))
        ckpt = {"config": snaps["config"], "state_dict": snaps["state_dicts"][i]}
        info.update(step=int(step), val_loss=snaps["val_loss"][i], train_loss=snaps["train_loss"][i])
    else:
        info["step"] = steps[-1]
    return GPT.from_checkpoint(ckpt).eval(), CharTokenizer(chars), info
