"""Batched sampling from a GPT: prompts of different lengths, a KV cache, log-probabilities.

:func:`generate` is the sampler every later chapter uses (RLHF's rollouts among them):

* **prompts of different lengths** are left-padded into one batch; an attention mask keeps
  every real token from attending to padding, and positions count from each prompt's
  first real token, so each row is computed exactly as if it were alone;
* a **KV cache** (:class:`~llmcourse.gpt.KVCache`): the prompts are read once, then each
  step runs the model on one new token per row instead of the whole prefix;
* **temperature, top-k and top-p** (nucleus, Holtzman et al. 2019, arXiv:1904.09751), in
  that order; temperature 0 is greedy;
* **end tokens and stop strings**, per row: a row that has ended gets padding and stops
  counting, and the loop stops when every row has ended;
* the result (:class:`Generation`) holds the new tokens, their **log-probabilities under
  the distribution they were sampled from** (after temperature, top-k and top-p), and the
  padded sequences with their attention and response masks, ready for a training forward
  pass: ``model(g.sequences, attention_mask=g.attention_mask)``; :func:`token_logprobs`
  recomputes the log-probabilities that way.

Example::

    from llmcourse.gpt import load_pretrained
    from llmcourse.generation import generate, token_logprobs

    model, tok, _ = load_pretrained()
    g = generate(model, ["ROMEO:\n", "First Citizen:\nWe"], 64, temperature=0.8, top_p=0.95,
                 generator=torch.Generator().manual_seed(0), tokenizer=tok, stop="\n\n")
    g.texts(tok)          # two responses, each cut after its first blank line
    g.logprobs            # (2, N) log-probabilities of the sampled tokens, 0 after a row's end
    lp = token_logprobs(model, g.sequences, g.attention_mask, 0.8, top_p=0.95)
    lp[g.response_mask[:, 1:]]     # = g.logprobs[g.token_mask], recomputed in one forward pass

``GPT.generate(idx, max_new_tokens, temperature, top_k, generator)``, the older method,
calls :func:`generate` when it fits the context window. Checked by
``tests/test_generation.py``; timed by ``benchmarks/generate.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .gpt import KVCache, positions_from_mask


@dataclass
class Generation:
    """What :func:`generate` returns, for B prompts and N generation steps (N <= max_new_tokens).

    Prompts are left-padded to P tokens, so ``sequences`` is (B, P + N): padding, prompt,
    response, padding after the response's end.
    """

    sequences: torch.Tensor       #: (B, P + N) long: left-padded prompts followed by the new tokens
    attention_mask: torch.Tensor  #: (B, P + N) bool: True at the prompt's tokens and the response's
    response_mask: torch.Tensor   #: (B, P + N) bool: True at the response's tokens (end token included)
    tokens: torch.Tensor          #: (B, N) long: the new tokens, ``pad_id`` after a row's end
    logprobs: torch.Tensor        #: (B, N) float: log-probability of each new token as sampled; 0 at padding
    lengths: torch.Tensor         #: (B,) long: new tokens per row, its end token or stop string included
    ended: torch.Tensor           #: (B,) bool: the row ended on an end token or stop string (else: out of steps)
    prompt_lengths: torch.Tensor  #: (B,) long: real tokens of each prompt

    @property
    def token_mask(self) -> torch.Tensor:
        """(B, N) bool: True at the new tokens that count (``response_mask`` over ``tokens``' columns)."""
        return self.response_mask[:, -self.tokens.size(1):]

    def texts(self, tokenizer) -> list[str]:
        """Each row's response decoded (end token or stop string included, padding not)."""
        return [tokenizer.decode(row[:n].tolist()) for row, n in zip(self.tokens, self.lengths.tolist())]


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to ``-inf`` the logits outside the top-k and outside the nucleus of mass ``top_p``.

    top-k keeps the ``top_k`` largest logits of each row (and any tied with the k-th);
    top-p then keeps the smallest set of most probable tokens whose probability (after
    top-k) reaches ``top_p``: a token stays if the tokens more probable than it hold less
    than ``top_p``, so the most probable token always stays. ``None`` skips a filter.
    """
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs                      # mass of the tokens ranked above
        drop = torch.zeros_like(before, dtype=torch.bool).scatter_(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None):
    """One token per row of ``logits`` (B, vocab): ``(tokens (B,), log-probabilities (B,))``.

    The log-probability is that of the distribution sampled from (temperature, then top-k,
    then top-p); temperature 0 takes the argmax, a certain choice: log-probability 0.
    """
    if temperature == 0:
        return logits.argmax(dim=-1), torch.zeros(logits.shape[:-1], dtype=logits.dtype,
                                                  device=logits.device)
    logp = torch.log_softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
    tokens = torch.multinomial(logp.exp(), 1, generator=generator)     # (B, 1)
    return tokens[:, 0], logp.gather(-1, tokens)[:, 0]


def left_pad(prompts, pad_id: int = 0):
    """A list of 1-D token sequences -> (ids (B, P), mask (B, P) bool), padded on the left.

    Also accepts a 2-D tensor (every prompt the same length). Raises ``ValueError`` on an
    empty batch or an empty prompt.
    """
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"prompts as a tensor must be 2-D (batch, length), not {tuple(prompts.shape)}")
        prompts = list(prompts)
    rows = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in prompts]
    if not rows:
        raise ValueError("no prompts: pass a list of at least one prompt")
    for i, r in enumerate(rows):
        if r.numel() == 0:
            raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
    P = max(r.numel() for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), P, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, P - r.numel():] = r
        mask[i, P - r.numel():] = True
    return ids, mask


def _check(model, max_new_tokens, temperature, top_k, top_p, longest_prompt):
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), not {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, not {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, not {top_p}")
    window = model.config.block_size
    if longest_prompt + max_new_tokens > window:
        raise ValueError(f"the longest prompt ({longest_prompt} tokens) plus max_new_tokens "
                         f"({max_new_tokens}) is past the model's context window of {window} tokens")


@torch.no_grad()
def generate(model, prompts, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None, *,
             eos_id=None, stop=None, tokenizer=None, pad_id: int = 0,
             use_cache: bool = True) -> Generation:
    """Sample up to ``max_new_tokens`` tokens after each of a batch of prompts.

    ``prompts``: a list of token sequences (1-D tensors or lists of ids) of any lengths, a
    2-D tensor, or, with ``tokenizer``, a list of strings. ``temperature`` 0 is greedy
    (top-k and top-p then do not matter); ``generator`` seeds the sampling. A row ends at
    an ``eos_id`` token (an id or a collection of ids) or when its response contains one
    of the strings ``stop`` (decoded with ``tokenizer``); both are kept in the response,
    and everything after is ``pad_id`` with mask False. ``use_cache=False`` recomputes
    the whole prefix at every step (the reference the cache is tested and timed against).

    Each prompt plus ``max_new_tokens`` must fit the model's context window. The model
    runs in eval mode (dropout off) and is put back in the mode it was in. Returns a
    :class:`Generation`.
    """
    if tokenizer is not None and not isinstance(prompts, torch.Tensor):
        prompts = [tokenizer.encode(p) if isinstance(p, str) else p for p in prompts]
    ids, prompt_mask = left_pad(prompts, pad_id)
    B, P = ids.shape
    prompt_lengths = prompt_mask.sum(-1)
    _check(model, max_new_tokens, temperature, top_k, top_p, int(prompt_lengths.max()))
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else list(stop)
        if tokenizer is None:
            raise ValueError("stop strings need a tokenizer to decode the responses")
        if any(not s for s in stop):
            raise ValueError("a stop string must not be empty")
    eos = None
    if eos_id is not None:
        eos = torch.as_tensor(eos_id if isinstance(eos_id, torch.Tensor) else
                              [int(e) for e in ([eos_id] if np.ndim(eos_id) == 0 else eos_id)],
                              dtype=torch.long).reshape(-1)

    device = model.wte.weight.device
    N, L = max_new_tokens, P + max_new_tokens
    seq = torch.full((B, L), pad_id, dtype=torch.long, device=device)
    seq[:, :P] = ids
    mask = torch.zeros(B, L, dtype=torch.bool, device=device)
    mask[:, :P] = prompt_mask
    positions = torch.cat([positions_from_mask(prompt_mask),
                           prompt_lengths[:, None] + torch.arange(N)], dim=1).to(device)
    padded = not bool(prompt_mask.all())          # without padding, plain causal attention does
    logprobs = torch.zeros(B, N, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.full((B,), N, dtype=torch.long, device=device)
    cache = KVCache(model, B, L) if use_cache else None
    was_training = model.training
    model.eval()
    try:
        steps = N
        for t in range(N):
            end = P + t                                           # tokens known so far
            begin = end - 1 if use_cache and t > 0 else 0         # the cache holds the rest
            logits, _ = model(seq[:, begin:end], attention_mask=mask[:, :end] if padded else None,
                              position_ids=positions[:, begin:end], cache=cache)
            nxt, lp = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
            seq[:, end] = nxt.masked_fill(done, pad_id)
            logprobs[:, t] = lp.masked_fill(done, 0.0)
            mask[:, end] = ~done
            ended = torch.zeros_like(done)
            if eos is not None:
                ended |= torch.isin(nxt, eos.to(device))
            if stop is not None:
                ended |= _stop_hit(seq[:, P:end + 1], done, stop, tokenizer)
            ended &= ~done
            if bool(ended.any()):
                lengths[ended] = t + 1
                done |= ended
                if bool(done.all()):
                    steps = t + 1
                    break
    finally:
        model.train(was_training)
    seq, mask = seq[:, :P + steps], mask[:, :P + steps]
    response = mask.clone()
    response[:, :P] = False
    return Generation(sequences=seq, attention_mask=mask, response_mask=response,
                      tokens=seq[:, P:], logprobs=logprobs[:, :steps], lengths=lengths.clamp(max=steps),
                      ended=done, prompt_lengths=prompt_lengths.to(device))


def _stop_hit(responses: torch.Tensor, done: torch.Tensor, stop: list[str], tokenizer) -> torch.Tensor:
    """Rows (not yet done) whose response now contains a stop string (it ends in the new token)."""
    width = max(len(s) for s in stop)         # every token decodes to at least one character
    tails = responses[:, -width:].tolist()
    hit = [not d and any(s in tokenizer.decode(tail) for s in stop)
           for tail, d in zip(tails, done.tolist())]
    return torch.tensor(hit, dtype=torch.bool, device=responses.device)


@torch.no_grad()
def token_logprobs(model, sequences: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """Log-probability of each token given the ones before it, by one forward pass: (B, L - 1).

    Entry t is that of ``sequences[:, t + 1]``, under the distribution :func:`generate`
    samples from with the same temperature, top-k and top-p (temperature 0: 0 for the
    argmax, ``-inf`` otherwise). With a :class:`Generation` ``g``,
    ``token_logprobs(model, g.sequences, g.attention_mask)[g.response_mask[:, 1:]]`` are
    the response's log-probabilities. Runs in the model's current mode, without gradients
    (call the model yourself for a differentiable version).
    """
    logits, _ = model(sequences, attention_mask=attention_mask)
    logits = logits[:, :-1]
    target = sequences[:, 1:, None]
    if temperature == 0:
        hit = logits.argmax(-1, keepdim=True) == target
        return torch.where(hit, 0.0, float("-inf"))[..., 0]
    logp = F.log_softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
    return logp.gather(-1, target)[..., 0]
