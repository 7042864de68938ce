"""llmcourse.generation: KV cache, left padding, top-k / top-p, end tokens, log-probabilities.

Every check compares against an independent reference: the model's plain forward pass
on each prompt alone, a step-wise argmax loop, a sort-based nucleus written in NumPy.
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmcourse.generation import filter_logits, generate, left_pad, sample_next, token_logprobs
from llmcourse.gpt import GPT, GPTConfig, KVCache
from llmcourse.tokenizer import CharTokenizer

torch.set_num_threads(1)
V = 23
TOK = CharTokenizer("abcdefghijklmnopqrstuvw")


def _model(dropout: float = 0.0, block_size: int = 48) -> GPT:
    """A small GPT with weights large enough for peaked, far-from-tied distributions."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                          dropout=dropout))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.25)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (p.data == 1).float())
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return _model()


def _prompts(lengths=(5, 1, 9, 3), seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(V, (n,), generator=g) for n in lengths]


def _reference_filter(logits: np.ndarray, top_k, top_p) -> np.ndarray:
    """Boolean support per row by sorting: the k best, then the smallest nucleus of mass >= p."""
    keep = np.zeros(logits.shape, dtype=bool)
    for r, row in enumerate(logits):
        order = np.argsort(-row, kind="stable")
        kept = list(order[:top_k] if top_k else order)
        if top_p is not None:
            z = row[kept] - row[kept].max()
            probs = np.exp(z) / np.exp(z).sum()            # kept is sorted: most probable first
            mass, nucleus = 0.0, []
            for i, p in zip(kept, probs):
                nucleus.append(i)
                mass += p
                if mass >= top_p:
                    break
            kept = nucleus
        keep[r, kept] = True
    return keep


def _reference_logprob(logits: torch.Tensor, token: int, temperature, top_k, top_p) -> float:
    """log p(token) under softmax(logits / T) restricted to the reference support (float64)."""
    z = logits.detach().double() / temperature
    keep = torch.from_numpy(_reference_filter(z[None].numpy(), top_k, top_p)[0])
    assert keep[token], "the sampled token is outside the support"
    return (z[token] - torch.logsumexp(z[keep], 0)).item()


# ----------------------------------------------------------------------------- the model's forward


@pytest.mark.parametrize("fused", [True, False])
def test_padded_forward_equals_unpadded(model, fused):
    """Left padding with an attention mask and shifted positions changes nothing at real tokens.

    Both attention paths: PyTorch's fused kernel and the course's own (whose softmax over a
    row with no allowed key would be NaN, and NaN spreads through the padding's values).
    """
    model = copy.deepcopy(model)
    for block in model.blocks:
        block.attn.fused = fused
    prompts = _prompts((7, 2, 11, 11))
    ids, mask = left_pad(prompts, pad_id=5)
    assert ids.shape == (4, 11) and mask.sum(1).tolist() == [7, 2, 11, 11]
    logits, _ = model(ids, attention_mask=mask)
    assert torch.isfinite(logits).all()
    for i, p in enumerate(prompts):
        alone, _ = model(p[None])
        torch.testing.assert_close(logits[i, mask[i]], alone[0], atol=1e-5, rtol=1e-5)
    # the padding id does not matter
    ids2 = torch.where(mask, ids, torch.full_like(ids, 17))
    torch.testing.assert_close(model(ids2, attention_mask=mask)[0][mask], logits[mask])


def test_kv_cache_forward_equals_full_forward(model):
    """Feeding a sequence in chunks through a KV cache gives the full forward's logits."""
    idx = torch.randint(V, (3, 20), generator=torch.Generator().manual_seed(3))
    full, _ = model(idx)
    cache = KVCache(model, 3, 20)
    chunks = [model(idx[:, a:b], cache=cache)[0] for a, b in ((0, 6), (6, 7), (7, 12), (12, 20))]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)
    cache = KVCache(model, 3, 20)                                   # one token at a time
    steps = [model(idx[:, t:t + 1], cache=cache)[0] for t in range(20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_forward_checks_the_context_window(model):
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 49, dtype=torch.long))
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[:, :10] = False                                   # 50 wide, but each row's positions stop at 39
    assert torch.isfinite(model(torch.zeros(2, 50, dtype=torch.long), attention_mask=mask)[0]).all()
    with pytest.raises(ValueError, match="context window"):
        model(torch.zeros(1, 50, dtype=torch.long), attention_mask=torch.ones(1, 50, dtype=torch.bool))

# ----------------------------------------------------------------------------- generate


def test_greedy_equals_stepwise_argmax(model):
    """Temperature 0 is the argmax of a plain forward pass at every step."""
    idx = torch.randint(V, (3, 4), generator=torch.Generator().manual_seed(4))
    ref = idx
    for _ in range(15):
        nxt = model(ref)[0][:, -1].argmax(-1, keepdim=True)
        ref = torch.cat([ref, nxt], 1)
    g = generate(model, idx, 15, temperature=0)
    assert torch.equal(g.sequences, ref) and torch.equal(g.tokens, ref[:, 4:])
    assert g.tokens.shape == (3, 15) and (g.logprobs == 0).all() and g.lengths.tolist() == [15] * 3
    assert not g.ended.any() and g.attention_mask.all() and g.response_mask[:, 4:].all()
    assert not g.response_mask[:, :4].any()
    # the older method delegates here and keeps its shape
    assert torch.equal(model.generate(idx, 15, temperature=0), ref)


@pytest.mark.parametrize("lengths", [(6, 6, 6, 6), (1, 1, 1), (5, 1, 9, 3)])
def test_cache_equals_no_cache(model, lengths):
    prompts = _prompts(lengths, seed=5)
    a = generate(model, prompts, 30, temperature=0)
    b = generate(model, prompts, 30, temperature=0, use_cache=False)
    assert torch.equal(a.sequences, b.sequences)
    for kw in (dict(temperature=1.0), dict(temperature=0.8, top_k=7, top_p=0.9)):
        a = generate(model, prompts, 30, generator=torch.Generator().manual_seed(6), **kw)
        b = generate(model, prompts, 30, generator=torch.Generator().manual_seed(6), use_cache=False, **kw)
        assert torch.equal(a.sequences, b.sequences)
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=1e-5)
        c = generate(model, prompts, 30, generator=torch.Generator().manual_seed(7), **kw)
        assert not torch.equal(a.tokens, c.tokens)                       # the seed matters


def test_left_padded_batch_equals_each_prompt_alone(model):
    prompts = _prompts()
    g = generate(model, prompts, 20, temperature=0, pad_id=3)
    P = max(len(p) for p in prompts)
    assert g.sequences.shape == (4, P + 20) and g.prompt_lengths.tolist() == [5, 1, 9, 3]
    for i, p in enumerate(prompts):
        alone = generate(model, [p], 20, temperature=0)
        assert torch.equal(g.tokens[i], alone.tokens[0])
        pad = P - len(p)
        assert torch.equal(g.sequences[i, pad:P], p) and (g.sequences[i, :pad] == 3).all()
        assert not g.attention_mask[i, :pad].any() and g.attention_mask[i, pad:].all()
    # sampling: the log-probabilities of the sampled tokens do not depend on the padding
    s = generate(model, prompts, 20, temperature=1.3, top_k=9, generator=torch.Generator().manual_seed(8))
    for i, p in enumerate(prompts):
        logits = model(torch.cat([p, s.tokens[i, :-1]])[None])[0][0, len(p) - 1:]
        ref = [_reference_logprob(logits[t], int(s.tokens[i, t]), 1.3, 9, None) for t in range(20)]
        np.testing.assert_allclose(s.logprobs[i].numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.7, 5, None),
                                                      (1.5, None, 0.8), (1.0, 10, 0.6)])
def test_logprobs_equal_a_plain_forward_pass(model, temperature, top_k, top_p):
    """Returned log-probabilities = recomputed from each row's unpadded forward pass."""
    prompts = _prompts()
    g = generate(model, prompts, 25, temperature, top_k, top_p, torch.Generator().manual_seed(9))
    assert (g.logprobs <= 0).all() and (g.logprobs < 0).any()
    for i, p in enumerate(prompts):
        row = torch.cat([p, g.tokens[i]])
        logits = model(row[None, :-1])[0][0, len(p) - 1:]
        ref = [_reference_logprob(logits[t], int(g.tokens[i, t]), temperature, top_k, top_p)
               for t in range(25)]
        np.testing.assert_allclose(g.logprobs[i].numpy(), ref, atol=1e-4)
    # and token_logprobs does the same from the padded batch in one pass
    lp = token_logprobs(model, g.sequences, g.attention_mask, temperature, top_k, top_p)
    torch.testing.assert_close(lp[g.response_mask[:, 1:]], g.logprobs.flatten(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("top_k,top_p", [(1, None), (4, None), (22, None), (None, 0.3), (None, 0.9),
                                          (None, 1.0), (6, 0.5), (30, 0.75)])
def test_filter_keeps_exactly_the_reference_support(top_k, top_p):
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(64, V, generator=g) * 2
    out = filter_logits(logits, top_k, top_p)
    keep = torch.from_numpy(_reference_filter(logits.numpy(), top_k, top_p))
    assert torch.equal(torch.isfinite(out), keep)
    assert torch.equal(out[keep], logits[keep])                           # kept logits unchanged
    # sampling never leaves the support
    toks, _ = sample_next(logits.repeat(20, 1), 1.0, top_k, top_p, g)
    assert keep.repeat(20, 1).gather(1, toks[:, None]).all()


def test_top_p_boundary_keeps_the_token_that_reaches_p():
    """Four equally likely tokens: mass exactly 0.25 each. p = 0.5 is reached by two tokens."""
    logits = torch.zeros(3, 4)
    for top_p, n in ((0.25, 1), (0.5, 2), (0.5001, 3), (0.75, 3), (1.0, 4)):
        assert torch.isfinite(filter_logits(logits, None, top_p)).sum(-1).tolist() == [n] * 3, top_p


def test_temperature_changes_the_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    g = torch.Generator().manual_seed(11)
    for temperature in (0.5, 1.0, 2.0):
        toks, lp = sample_next(logits.expand(40000, 5), temperature, generator=g)
        want = torch.softmax(logits / temperature, -1)
        freq = torch.bincount(toks, minlength=5) / 40000
        torch.testing.assert_close(freq, want, atol=0.01, rtol=0)
        torch.testing.assert_close(lp, want.log()[toks])
    hot, _ = sample_next(logits.expand(40000, 5), 2.0, generator=g)
    cold, _ = sample_next(logits.expand(40000, 5), 0.5, generator=g)
    assert (hot == 0).float().mean() < 0.5 < (cold == 0).float().mean()
    greedy, lp = sample_next(logits.expand(3, 5), 0.0, top_k=2, generator=g)
    assert (greedy == 0).all() and (lp == 0).all()


def test_end_token_pads_the_rest(model):
    prompts = _prompts()
    free = generate(model, prompts, 20, temperature=0)
    eos = int(free.tokens[0, 4])
    g = generate(model, prompts, 20, temperature=0, eos_id=eos, pad_id=22)
    for i in range(4):
        hits = (free.tokens[i] == eos).nonzero()
        n = int(hits[0]) + 1 if len(hits) else 20
        assert int(g.lengths[i]) == n and bool(g.ended[i]) == bool(len(hits))
        assert torch.equal(g.tokens[i, :n], free.tokens[i, :n])
        assert (g.tokens[i, n:] == 22).all() and (g.logprobs[i, n:] == 0).all()
        P = g.prompt_lengths.max()
        assert g.response_mask[i, P:P + n].all() and not g.response_mask[i, P + n:].any()
        assert not g.attention_mask[i, P + n:].any()
        assert g.token_mask[i, :n].all() and not g.token_mask[i, n:].any()
    # the loop stops when every row has ended: an end token that every row says at once
    first = generate(model, prompts, 20, temperature=0, eos_id=free.tokens[:, 0].tolist())
    assert first.tokens.shape == (4, 1) and first.ended.all() and first.lengths.tolist() == [1] * 4
    # with sampling, a finished row is padding too
    s = generate(model, prompts, 35, 1.0, generator=torch.Generator().manual_seed(12), eos_id=[0, 1, 2])
    for i, n in enumerate(s.lengths.tolist()):
        assert s.tokens[i, n - 1] in (0, 1, 2) if s.ended[i] else n == 35
        assert (s.tokens[i, :n - 1] > 2).all() and (s.tokens[i, n:] == 0).all()
        assert (s.logprobs[i, :n] < 0).all() and (s.logprobs[i, n:] == 0).all()
    assert s.ended.any() and s.lengths.max() > 1
    lp = token_logprobs(model, s.sequences, s.attention_mask)         # recomputed from the padded batch
    torch.testing.assert_close(lp[s.response_mask[:, 1:]], s.logprobs[s.token_mask], atol=1e-5, rtol=1e-5)


def test_stop_strings(model):
    prompts = ["abc", "w", "hello"]
    free = generate(model, prompts, 20, temperature=0, tokenizer=TOK)
    texts = free.texts(TOK)
    stop = texts[2][6:8]                                           # two characters row 2 says
    g = generate(model, prompts, 20, temperature=0, tokenizer=TOK, stop=[stop, "zz"])
    for i, text in enumerate(texts):
        at = text.find(stop)
        n = at + len(stop) if at >= 0 else 20
        assert int(g.lengths[i]) == n and g.texts(TOK)[i] == text[:n]
    assert g.ended[2] and g.texts(TOK)[2].endswith(stop)
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, [[1, 2]], 5, stop="ab")


def test_bad_arguments_raise_clear_errors(model):
    p = [torch.tensor([1, 2, 3])]
    for top_p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="top_p"):
            generate(model, p, 5, top_p=top_p)
    with pytest.raises(ValueError, match="context window"):
        generate(model, p, 46)
    generate(model, p, 45)                                        # 3 + 45 = 48 fits exactly
    with pytest.raises(ValueError, match="empty"):
        generate(model, [torch.tensor([1]), torch.tensor([], dtype=torch.long)], 5)
    with pytest.raises(ValueError, match="no prompts"):
        generate(model, [], 5)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, p, 5, temperature=-0.5)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, p, 5, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, p, 0)


def test_generate_restores_training_mode_and_old_method_slides():
    model = _model(dropout=0.2, block_size=16).train()
    idx = torch.randint(V, (2, 3), generator=torch.Generator().manual_seed(13))
    a = generate(model, idx, 10, temperature=0)
    assert model.training and torch.equal(a.tokens, generate(model, idx, 10, temperature=0).tokens)
    model.eval()
    out = model.generate(idx, 20, temperature=0)                  # past block_size: the window slides
    ref = idx
    for _ in range(20):
        ref = torch.cat([ref, model(ref[:, -16:])[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)
    model.train()
    out = model.generate(idx, 20, top_k=3, generator=torch.Generator().manual_seed(5))
    assert model.training
    g, ref = torch.Generator().manual_seed(5), idx                # the same draws, one token at a time
    model.eval()
    for _ in range(20):
        nxt, _ = sample_next(model(ref[:, -16:])[0][:, -1], 1.0, 3, None, g)
        ref = torch.cat([ref, nxt[:, None]], 1)
    assert torch.equal(out, ref)


def test_benchmark_quick_mode():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "benchmarks/generate.py", "--quick", "--json"], cwd=root, env=env,
                         check=True, capture_output=True, text=True, timeout=300).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["cached"]["tokens_per_s"] > 0 and res["uncached"]["tokens_per_s"] > 0
    assert res["speedup"] == pytest.approx(res["cached"]["tokens_per_s"] / res["uncached"]["tokens_per_s"])
    assert res["same_tokens"] is True
