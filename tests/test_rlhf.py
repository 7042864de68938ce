"""llmcourse.rlhf: instruction data, SFT, labellers and the reward model, against references.

The SFT loss against a loop over response tokens (prompt labels change nothing); the
reward model's score read at the last real token (padding and left padding change
nothing) and its K-wise training against a learnable labeller; the labellers' noise
against the Bradley-Terry and Plackett-Luce probabilities; the shipped instruction file
against what its script builds.
"""
import gzip
import json
import math

import pytest
import torch

from llmcourse.gpt import GPT, GPTConfig
from llmcourse.rlhf import instructions as I
from llmcourse.rlhf.labeller import (InstructionLabeller, PlainWordsLabeller, preference_probability,
                                     sample_preferences, sample_ranks)
from llmcourse.rlhf.reward import (Rankings, RewardModel, pair_accuracy, ranking_accuracy, ranking_scores,
                                   right_pad, rm_config, train_reward_model)
from llmcourse.rlhf.sft import IGNORE, SFTData, encode_pair, sft_config, train_sft
from llmcourse.tokenizer import CharTokenizer

torch.set_num_threads(1)
TOK = CharTokenizer(" abcdefghijklmnopqrstuvwxyz.}:\n")


def tiny_gpt(seed=0, block_size=48, n_embd=32) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=n_embd))


# ----------------------------------------------------------------------------- instruction data


def test_examples_answers_and_correctness():
    line = "Speak, speak, my lord."
    answers = {k: I.make_example(k, line).answer for k in I.KINDS}
    assert answers == {"capitals": "SPEAK, SPEAK, MY LORD.", "repeat": line, "first_word": "Speak",
                       "count_words": "four", "lowercase": "speak, speak, my lord.", "last_word": "lord"}
    ex = I.make_example("first_word", line, 1)
    assert ex.prompt == "Task: What is the first word?\nLine: Speak, speak, my lord.\nAnswer: "
    assert ex.response == "Speak" + I.END
    assert I.is_correct(ex, "Speak}and more") and not I.is_correct(ex, "Speak") and not I.is_correct(ex, "speak}")
    for kind in I.KINDS:
        for k in range(2):
            e = I.make_example(kind, line, k)
            assert I.parse_prompt(e.prompt) == e
    with pytest.raises(ValueError, match="not an instruction prompt"):
        I.parse_prompt("Task: Dance.\nLine: x\nAnswer: ")
    assert set(I.TRAINED) & set(I.HELD_OUT) == set() and set(I.TRAINED) | set(I.HELD_OUT) == set(I.KINDS)


def test_shipped_file_is_what_the_script_builds():
    from llmcourse.data import data_path, load_shakespeare

    text = load_shakespeare()
    built = I.build(text[: int(0.9 * len(text))], "".join(sorted(set(text))))
    with data_path(I.DATA_FILE).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        shipped = json.load(f)
    for key in ("train", "eval", "trained", "held_out", "format", "end", "seed", "lines"):
        assert shipped[key] == built[key], key
    train, evals = I.load_instructions()
    assert len(train) == 1000 * len(I.TRAINED) and len(evals) == 100 * len(I.KINDS)
    assert {e.kind for e in train} == set(I.TRAINED)                        # held-out kinds never trained on
    assert not {e.line for e in train} & {e.line for e in evals}            # disjoint lines
    val_text = text[int(0.9 * len(text)):]
    assert all(e.line in text[: int(0.9 * len(text))] for e in evals[:50])
    assert sum(e.line in val_text for e in train) < len(train) // 20        # lines come from the training text
    for e in train + evals:
        assert e.answer == I.make_example(e.kind, e.line).answer and I.END not in e.prompt + e.answer


def test_build_is_seeded():
    text = "A.\nSpeak, speak, my lord.\nI go, I go; look how I go, I go\n[Exit.]\nwhat say you to that?\n" * 3
    lines = I.candidate_lines(text, "".join(sorted(set(text))))
    assert lines == ["Speak, speak, my lord.", "what say you to that?"]     # 9 words, a header, brackets: out
    many = "\n".join(f"line number {w} here" for w in ("one two three four five six seven eight nine ten "
                                                        "eleven twelve thirteen fourteen fifteen").split()) * 2
    a = I.build(many, "".join(sorted(set(many))), n_train=3, n_eval=1, seed=5)
    b = I.build(many, "".join(sorted(set(many))), n_train=3, n_eval=1, seed=5)
    assert a == b and len(a["train"]) == 3 * len(I.TRAINED)


# ----------------------------------------------------------------------------- SFT


def test_encode_pair_masks_the_prompt():
    x, y = encode_pair(TOK, "ab:", "cd}")
    assert TOK.decode(x) == "ab:cd" and len(y) == 5
    assert y[:2].tolist() == [IGNORE, IGNORE]                   # predicting "b" and ":" from the prompt
    assert TOK.decode(y[2:]) == "cd}"                           # ":" predicts "c", then "d", then "}"


def _loop_loss(model, pairs):
    """Mean -log p over response tokens, each example alone, one position at a time."""
    total, n = 0.0, 0
    for prompt, response in pairs:
        ids = TOK.encode(prompt + response)
        logits, _ = model(ids[None])
        logp = torch.log_softmax(logits[0].double(), -1)
        for t in range(len(prompt), len(ids)):
            total -= logp[t - 1, ids[t]].item()
            n += 1
    return total / n


def test_sft_loss_is_over_response_tokens_only():
    model = tiny_gpt().eval()
    pairs = [("abc:", "de}"), ("hello world:", "x}"), ("q:", "a longer answer.}")]
    data = SFTData.from_pairs(TOK, pairs)
    x, y = data.collate(range(3))
    logits, loss = model(x, y)
    assert math.isclose(loss.item(), _loop_loss(model, pairs), rel_tol=1e-5)
    assert math.isclose(data.loss(model), _loop_loss(model, pairs), rel_tol=1e-5)
    # the prompt's labels change nothing: not the loss, not its gradient
    logits = logits.detach().requires_grad_()
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(loss, logits)
    assert (grad[y == IGNORE] == 0).all() and (grad[y != IGNORE].abs().sum(-1) > 0).all()
    other = SFTData.from_pairs(TOK, [("xyz:", "de}"), ("jello worlds:", "x}"), ("r:", "a longer answer.}")])
    assert math.isclose(other.loss(model), data.loss(model), rel_tol=0.5)   # runs; prompts differ, targets don't
    y2 = y.clone()
    y2[y == IGNORE] = 3                                                      # give the prompt labels
    assert model(x, y2)[1].item() != loss.item()


def test_sft_learns_a_toy_instruction():
    pairs = [(f"say {w}:", f"{w}}}") for w in ("abc", "dog", "sun", "map", "cat", "hat")]
    data = SFTData.from_pairs(TOK, pairs)
    model = tiny_gpt()
    before = data.loss(model)
    hist = train_sft(model, data, sft_config(max_iters=60, batch_size=6, lr=3e-3, warmup_iters=5,
                                             eval_interval=30), progress=False, evaluate=data.loss)
    assert hist.eval_steps == [0, 30, 59] and len(hist.train_loss) == 60
    assert data.loss(model) < before / 3
    assert not model.training


# ----------------------------------------------------------------------------- labellers


def test_plain_words_labeller():
    lab = PlainWordsLabeller()
    assert lab.score_text("I go, I go; look how I go") == -2.0
    assert lab.score_text("Unquestionably, notwithstanding!") == -14.5
    assert lab.score_text("?! ..\n") == -10.0                       # no word at all
    assert lab(["p", "q"], ["I am", "the end"]).tolist() == [-1.5, -3.0]


def test_instruction_labeller():
    lab = InstructionLabeller()
    ex = I.make_example("capitals", "Speak, speak.")
    s = lab.score([ex.prompt] * 4, ["SPEAK, SPEAK.}", "SPEAK, SPEAK.", "SPEAK.}", "xyz}"])
    assert s[0] == 1.0 and s[1] == 0.5 and s[0] > s[2] > s[3] >= 0


def test_preferences_follow_bradley_terry():
    g = torch.Generator().manual_seed(0)
    a, b = torch.full((20_000,), 1.0), torch.zeros(20_000)
    for T in (0.5, 1.0, 2.0):
        share = sample_preferences(a, b, T, g).double().mean().item()
        assert abs(share - 1 / (1 + math.exp(-1 / T))) < 0.015
    assert sample_preferences(a, b, 0.0, g).all()
    assert preference_probability(2.0, 2.0, 0.0).item() == 0.5


def test_rankings_follow_plackett_luce():
    g = torch.Generator().manual_seed(1)
    s = torch.tensor([2.0, 1.0, 0.0, 0.0]).repeat(20_000, 1)
    ranks = sample_ranks(s, 1.0, g)
    assert (ranks.sort(-1).values == torch.arange(4)).all()         # a permutation per row
    first = (ranks == 0).double().mean(0)
    torch.testing.assert_close(first, torch.softmax(s[0].double(), 0), atol=0.015, rtol=0)
    pair = sample_ranks(s[:, :2], 1.0, g)                          # K = 2 is Bradley-Terry
    assert abs((pair[:, 0] == 0).double().mean().item() - 1 / (1 + math.exp(-1))) < 0.015
    exact = sample_ranks(s[:10], 0.0, g)
    assert (exact[:, :2] == torch.tensor([0, 1])).all() and set(exact[:, 2].tolist()) == {2, 3}


# ----------------------------------------------------------------------------- reward model


def test_reward_model_reads_the_last_real_token():
    rm = RewardModel(tiny_gpt()).eval()
    rows = [TOK.encode("abc:de"), TOK.encode("hello:x"), TOK.encode("q:zz")]
    ids, mask = right_pad(rows)
    got = rm(ids, mask)
    for i, r in enumerate(rows):
        h = rm.trunk.features(r[None])
        assert math.isclose(got[i].item(), rm.head(h[0, -1]).item(), rel_tol=1e-5, abs_tol=1e-6)
    # more right padding, or the same rows left-padded, give the same scores
    wide = torch.cat([ids, torch.full((3, 4), 5)], 1)
    torch.testing.assert_close(rm(wide, torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)), got)
    from llmcourse.generation import left_pad
    lids, lmask = left_pad(rows)
    torch.testing.assert_close(rm(lids, lmask), got, atol=1e-5, rtol=1e-4)


def test_normalize_gives_mean_zero_std_one():
    rm = RewardModel(tiny_gpt())
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(TOK.vocab_size, (40, 12), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    rm.normalize_(ids, mask, batch_size=16)
    s = rm.eval()(ids, mask)
    assert abs(s.mean().item()) < 1e-5 and abs(s.std().item() - 1) < 1e-4


def test_pair_accuracy_against_a_loop():
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(30, 4, generator=g).round()               # some ties
    ranks = torch.stack([torch.randperm(4, generator=g) for _ in range(30)])
    right = total = 0.0
    for s, r in zip(scores.tolist(), ranks.tolist()):
        for i in range(4):
            for j in range(4):
                if r[i] < r[j]:
                    total += 1
                    right += 1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0
    assert math.isclose(pair_accuracy(scores, ranks), right / total)


def _a_count_rankings(n, K, seed):
    """Responses of random letters; the labeller prefers more a's (noiselessly, ties at random)."""
    g = torch.Generator().manual_seed(seed)
    a = TOK.stoi["a"]
    prompts = [TOK.encode("say:") for _ in range(n)]
    responses = [[torch.where(torch.rand(6, generator=g) < 0.3, a, torch.randint(2, 10, (6,), generator=g))
                  for _ in range(K)] for _ in range(n)]
    counts = torch.tensor([[float((r == a).sum()) for r in rs] for rs in responses])
    return Rankings(prompts, responses, sample_ranks(counts, 0.0, g))


@pytest.mark.parametrize("loss", ["rankings", "pairs"])
def test_reward_model_learns_a_simple_preference(loss):
    K = 4 if loss == "rankings" else 2
    train, val = _a_count_rankings(300, K, 5), _a_count_rankings(100, K, 6)
    rm = RewardModel(tiny_gpt(seed=1))
    before = ranking_accuracy(rm, val)
    hist = train_reward_model(rm, train, rm_config(lr=3e-3, batch_size=10, seed=0), loss=loss, epochs=3,
                              val=val, eval_every=30, progress=False)
    assert len(hist.loss) == 90 and hist.eval_steps[-1] == 90
    assert hist.accuracy[-1] > max(0.8, before + 0.2), (before, hist.accuracy)
    assert hist.accuracy[-1] == ranking_accuracy(rm, val)
    assert sum(hist.loss[-10:]) < sum(hist.loss[:10])


def test_pairs_and_rankings_losses_agree_for_two_responses():
    data = _a_count_rankings(24, 2, 7)
    a, b = RewardModel(tiny_gpt(seed=2)), RewardModel(tiny_gpt(seed=2))
    ha = train_reward_model(a, data, rm_config(batch_size=8), loss="pairs", progress=False)
    hb = train_reward_model(b, data, rm_config(batch_size=8), loss="rankings", progress=False)
    assert ha.loss == pytest.approx(hb.loss, rel=1e-5)
    torch.testing.assert_close(ranking_scores(a, data), ranking_scores(b, data), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="K = 2"):
        train_reward_model(a, _a_count_rankings(4, 3, 8), rm_config(), loss="pairs", progress=False)


def test_collect_rankings_samples_scores_and_ranks():
    from llmcourse.rlhf.reward import collect_rankings

    model = tiny_gpt().eval()
    lab = PlainWordsLabeller(temperature=0.0)
    g = torch.Generator().manual_seed(9)
    data, scores = collect_rankings(model, TOK, ["abc:", "hello:", "q:"], lab, K=3, max_new_tokens=7,
                                    temperature=1.0, generator=g, eos_id=TOK.stoi["}"], batch_size=4)
    assert len(data) == 3 and data.K == 3 and scores.shape == (3, 3)
    for p, rs, s, rk in zip(["abc:", "hello:", "q:"], data.responses, scores, data.ranks):
        assert TOK.decode(data.prompts[["abc:", "hello:", "q:"].index(p)]) == p
        assert all(1 <= len(r) <= 7 for r in rs)
        assert s.tolist() == [lab.score_text(TOK.decode(r)) for r in rs]
        order = sorted(range(3), key=lambda k: int(rk[k]))
        assert all(s[order[i]] >= s[order[i + 1]] for i in range(2))     # temperature 0: sorted by score


def test_evaluate_greedy_responses_and_rates():
    tok = CharTokenizer(" ,.?'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz:\n}")
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=1, n_head=1, n_embd=16)).eval()
    examples = [I.make_example("first_word", "Go on, sir."), I.make_example("count_words", "Go on, sir.")]
    ev = I.evaluate(gpt, tok, examples, max_new_tokens=5)
    from llmcourse.generation import generate
    for ex, text in zip(examples, ev.responses):
        g = generate(gpt, [ex.prompt], 5, temperature=0.0, eos_id=tok.stoi["}"], tokenizer=tok)
        assert text == g.texts(tok)[0]
    ev.correct, ev.ended = [True, False], [True, True]
    assert ev.rate(examples) == 0.5 and ev.rate(examples, "first_word") == 1.0 and ev.rate(examples, what="ended") == 1.0


def test_win_rate_is_the_mean_bradley_terry_probability():
    lab = PlainWordsLabeller(temperature=0.5)
    rate = lab.win_rate(["p"] * 3, ["I go", "a b", "long words here"], ["longer words", "a b", "I"])
    p = [1 / (1 + math.exp(-(-1.5 + 5.5) / 0.5)), 0.5, 1 / (1 + math.exp(-(-13 / 3 + 1) / 0.5))]
    assert rate == pytest.approx(sum(p) / 3)


def test_shipped_reward_model_loads_or_says_to_rerun_its_script(tmp_path, monkeypatch):
    from dataclasses import asdict

    from llmcourse.rlhf import reward

    lm = tiny_gpt()
    rm = RewardModel(lm)
    torch.save({"state_dict": {k: v.half() for k, v in rm.state_dict().items()}, "config": asdict(lm.config)},
               tmp_path / "rm.pt")
    monkeypatch.setattr("llmcourse.data.data_path", lambda name: tmp_path / name)
    loaded = reward.load_reward_model("rm.pt", lm)
    ids, mask = right_pad([TOK.encode("abc:de")])
    torch.testing.assert_close(loaded(ids, mask), rm.eval()(ids, mask), atol=1e-2, rtol=1e-2)   # float16 weights
    with pytest.raises(ValueError, match="rerun the script"):
        reward.load_reward_model("rm.pt", tiny_gpt(n_embd=16))


def test_copying_a_model_leaves_the_config_class_alone():
    """The tamper guard of ``llmcourse grade`` compares classes by value; copying a GPT (as
    RewardModel and PPO's reference do in the assignment's demo) must not add to GPTConfig."""
    import copy
    import pickle

    before = dict(vars(GPTConfig))
    copy.deepcopy(RewardModel(tiny_gpt()))
    pickle.dumps(GPTConfig())
    assert dict(vars(GPTConfig)) == before
