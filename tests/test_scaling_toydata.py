"""The generated corpora of chapters 14 and 16 (llmcourse.toydata)."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from llmcourse.gpt import GPT, GPTConfig
from llmcourse.toydata import (FAMILIES, accuracy, canary_stream, frequency_arithmetic, gopher_corpus, gopher_eval,
                               greedy_complete, make_world, memorised, memorised_in_window, ordered_batches,
                               step_of_offset,
                               toy_tokenizer, zipf_operand_weights)

TOK = toy_tokenizer()


class Oracle(nn.Module):
    """A 'model' that continues every row with the characters of ``text`` after the row's
    longest suffix found in it (or a fixed character): to test decoding without training."""

    def __init__(self, text: str, fallback: str = "?"):
        super().__init__()
        self.text, self.fallback = text, fallback
        self.config = SimpleNamespace(block_size=64)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        logits = torch.full((B, T, TOK.vocab_size), -1e9)
        for b in range(B):
            s = TOK.decode(idx[b])
            nxt = self.fallback
            for k in range(len(s), 0, -1):
                i = self.text.find(s[-k:])
                if i >= 0 and i + k < len(self.text):
                    nxt = self.text[i + k]
                    break
            logits[b, -1, TOK.stoi[nxt]] = 0.0
        return logits, None


def test_world_and_corpus():
    w = make_world(seed=3)
    assert make_world(seed=3).facts == w.facts and make_world(seed=4).facts != w.facts
    assert len(w.facts) == 4 * 64 and len(w.held_out) == 2000
    text = gopher_corpus(w, 5000, seed=1)
    TOK.encode(text)                                                   # every character is in the alphabet
    lines = text.strip("\n").split("\n")
    assert len(lines) == 5000
    facts = [ln for ln in lines if ln.startswith("the ")]
    adds = [tuple(map(int, m.groups())) for ln in lines if (m := re.fullmatch(r"(\d+)\+(\d+)=\d+\.", ln))]
    maxes = [tuple(map(int, m.groups())) for ln in lines if (m := re.fullmatch(r"max (\d+) (\d+)=\d+\.", ln))]
    assert (len(facts), len(adds), len(maxes)) == (2000, 1500, 1500)
    assert not (set(adds) | set(maxes)) & w.held_out                  # held-out pairs never trained on
    seen = {ln: facts.count(ln) for ln in set(facts)}
    assert len(seen) == len(w.facts) and max(seen.values()) - min(seen.values()) <= 1
    for ln in lines:                                                   # every line is true
        if m := re.fullmatch(r"(\d+)\+(\d+)=(\d+)\.", ln):
            assert int(m[1]) + int(m[2]) == int(m[3])
        elif m := re.fullmatch(r"max (\d+) (\d+)=(\d+)\.", ln):
            assert max(int(m[1]), int(m[2])) == int(m[3])
        else:
            r, e, v = re.fullmatch(r"the (\w+) of (\w+) is (\w+)\.", ln).groups()
            assert w.facts[(r, e)] == v


def test_eval_sets_and_accuracy():
    w = make_world(seed=0)
    text = gopher_corpus(w, 3000, seed=0)
    for fam in FAMILIES:
        pairs = gopher_eval(w, fam, n=50)
        assert len(pairs) == 50 and all(a.endswith(".") for _, a in pairs)
    adds = gopher_eval(w, "addition", n=30)
    assert all(tuple(map(int, p.strip("\n=").split("+"))) in w.held_out for p, _ in adds)
    facts = gopher_eval(w, "facts", n=40)
    assert accuracy(Oracle(text), TOK, facts) == 1.0                   # recall of trained facts: an oracle of the text
    sums = "".join(p + a for p, a in adds)
    assert accuracy(Oracle(sums), TOK, adds) == 1.0
    assert accuracy(Oracle(text, fallback="."), TOK, adds) < 0.5      # held out: not in the text
    with pytest.raises(ValueError):
        gopher_eval(w, "logic")


def test_greedy_complete_matches_one_prompt_at_a_time():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    prompts = ["\n12+3=", "\n45+67=", "\nmax 1 2=", "\nthe city of "]
    got = greedy_complete(m, TOK, prompts, [3, 3, 2, 5])
    for p, k, g in zip(prompts, [3, 3, 2, 5], got):
        ids = TOK.encode(p)[None]
        for _ in range(k):
            ids = torch.cat([ids, m(ids)[0][:, -1].argmax(-1, keepdim=True)], 1)
        assert g == TOK.decode(ids[0, -k:])


def test_canary_stream_offsets_counts_and_dedup():
    text, can = canary_stream(2000, [1, 2, 4, 8], seed=5)
    TOK.encode(text)
    assert [c.count for c in can] == [1, 2, 4, 8] and [len(c.offsets) for c in can] == [1, 2, 4, 8]
    for c in can:
        assert len(c.text) == 24 and text.count(c.line) == c.count
        assert all(text[o:o + len(c.line)] == c.line for o in c.offsets)
    text2, can2 = canary_stream(2000, [1, 1, 1, 1], seed=5)
    assert all(text2.count(c.line) == 1 for c in can2)
    assert canary_stream(2000, [1, 2, 4, 8], seed=5)[0] == text
    text4, can4 = canary_stream(500, [2, 2], length=30, seed=5, words=True)   # canaries of the filler's words
    assert all(len(c.text) == 30 and text4.count(c.line) == 2 and " " in c.text for c in can4)
    text3, can3 = canary_stream(2000, [4] * 6, seed=5, burst=20)             # copies close together
    assert all(max(c.offsets) - min(c.offsets) < 40 * 60 for c in can3)
    assert max(c.offsets[0] for c in can3) - min(c.offsets[0] for c in can3) > len(text3) / 4


def test_ordered_batches_fixed_order_and_step_of_offset():
    text, can = canary_stream(3000, [1, 1, 1], seed=2)
    ids = TOK.encode(text)
    a, b = ordered_batches(ids, 4, 32), ordered_batches(ids, 4, 32)
    first = [next(a) for _ in range(20)]
    assert all(torch.equal(x, next(b)[0]) for x, _ in first)          # the same order every time
    x0, y0 = first[0]
    assert torch.equal(x0[0], ids[:32]) and torch.equal(y0[0], ids[1:33])
    for c in can:
        off = c.offsets[0]
        s = step_of_offset(off, len(ids), 4, 32)
        x, _ = next(ordered_batches(ids, 4, 32, start_step=s))
        row, col = off // 32 - 4 * s, off % 32
        assert 0 <= row < 4 and x[row, col] == ids[off] and TOK.decode(x[row])[col:].startswith("code"[:32 - col])
        seen_before = torch.cat([xb for xb, _ in first[:s]]) if 0 < s <= 20 else torch.empty(0, 32, dtype=torch.long)
        assert not any(torch.equal(r, ids[off // 32 * 32: off // 32 * 32 + 32]) for r in seen_before)
    with pytest.raises(ValueError):
        step_of_offset(len(ids) - 2, len(ids), 4, 32)


def test_memorised():
    text, can = canary_stream(200, [1, 3], seed=1)
    assert memorised(Oracle(text), TOK, can) == [True, True]
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    assert memorised(m, TOK, can) == [False, False]


def test_memorised_in_window():
    text, can = canary_stream(400, [1] * 12, seed=3)
    ids = TOK.encode(text)
    got = memorised_in_window(Oracle(text), TOK, ids, can, block_size=64)
    for c, g in zip(can, got):
        o = c.offsets[0]
        if o // 64 != (o + len(c.line) - 1) // 64:
            assert g is None                                 # straddles two windows
        else:
            assert g is True
    assert any(g is None for g in got) and any(g is True for g in got)
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    assert not any(memorised_in_window(m, TOK, ids, can, block_size=64))


def test_frequency_arithmetic():
    w = zipf_operand_weights(1.2, seed=0)
    assert abs(sum(w.values()) - 1) < 1e-12
    ranked = sorted(w, key=w.get, reverse=True)
    assert ranked[:10] != list(range(10))                              # frequency is not size
    text, counts, held = frequency_arithmetic(20000, seed=0)
    lines = text.strip().split("\n")
    assert len(lines) == 20000 and sum(counts.values()) == 20000
    top, bottom = counts[ranked[0]], counts[ranked[-1]]
    assert top > 20 * max(1, bottom)
    pairs = {tuple(map(int, re.fullmatch(r"(\d+)\+(\d+)=\d+\.", ln).groups())) for ln in lines}
    assert not pairs & held and len(held) == 3000
