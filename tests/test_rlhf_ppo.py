"""PPO for a language model (llmcourse.rlhf.ppo) against independent references.

A rollout's rewards against a loop (the KL penalty on every response token, the score on
the last one); its log-probabilities against the generator's own; its advantages against a
per-episode GAE loop; the policy at iteration 0 equal to the reference (KL exactly 0); a
few iterations raising the reward of a trivially learnable labeller; two runs, same logs;
PPO-ptx with a zero coefficient equal to PPO, and with a positive one keeping the
pretraining loss down.
"""
import copy
import math

import pytest
import torch

from llmcourse.generation import generate
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.rlhf.ppo import PolicyWithValue, PPOTextConfig, ppo_text_update, rollout, train_ppo_text
from llmcourse.tokenizer import CharTokenizer

torch.set_num_threads(1)
TOK = CharTokenizer("abcdefgh}")
A, END = TOK.stoi["a"], TOK.stoi["}"]
PROMPTS = ["abc", "hgfed", "e", "gab"]


def tiny_policy(seed=0, dropout=0.0) -> PolicyWithValue:
    torch.manual_seed(seed)
    policy = PolicyWithValue(GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=32, n_layer=2, n_head=2,
                                           n_embd=32, dropout=dropout)))
    with torch.no_grad():                                  # a value head that is not zero, to test GAE
        policy.value_head.weight.normal_(0, 0.3)
        policy.value_head.bias.fill_(0.1)
    return policy


def count_a(sequences, attention_mask):
    """A reward model a policy can satisfy trivially: the a's among the last 8 real tokens."""
    return ((sequences == A) & attention_mask)[:, -8:].double().sum(-1)


def test_rollout_against_loops():
    policy = tiny_policy()
    ref = tiny_policy(seed=1).lm                            # a different reference: KL not 0
    cfg = PPOTextConfig(batch_size=4, max_new_tokens=6, temperature=0.8, eos_id=END, gamma=0.9, lam=0.7,
                        beta=0.3)
    gen = torch.Generator().manual_seed(3)
    ro = rollout(policy, ref, count_a, PROMPTS, TOK, cfg, cfg.beta, gen)
    twin = generate(policy.lm, [TOK.encode(p) for p in PROMPTS], 6, temperature=0.8,
                    generator=torch.Generator().manual_seed(3), eos_id=END)
    assert torch.equal(twin.sequences, ro.sequences) and torch.equal(twin.token_mask, ro.mask)
    torch.testing.assert_close(ro.logprobs[ro.mask], twin.logprobs[ro.mask], atol=1e-5, rtol=1e-5)
    P = ro.sequences.shape[1] - ro.mask.shape[1]
    for b in range(4):
        idx = [n for n in range(ro.mask.shape[1]) if ro.mask[b, n]]
        seq = ro.sequences[b][ro.attention_mask[b]]           # the row alone, no padding
        n_prompt = len(seq) - len(idx)
        ref_logits = ref(seq[None])[0][0] / 0.8
        logits, values = policy(seq[None], torch.ones(1, len(seq), dtype=torch.bool))
        want_r, want_v = [], []
        for k, n in enumerate(idx):
            pos = n_prompt + k                                # the token's position in the row
            lp = torch.log_softmax(logits[0, pos - 1] / 0.8, -1)[seq[pos]]
            rlp = torch.log_softmax(ref_logits[pos - 1], -1)[seq[pos]]
            assert math.isclose(ro.ref_logprobs[b, n].item(), rlp.item(), abs_tol=1e-5)
            want_r.append(-0.3 * (lp - rlp).item())
            want_v.append(values[0, pos - 1].item())
        want_r[-1] += ro.scores[b].item()
        assert ro.scores[b].item() == count_a(ro.sequences, ro.attention_mask)[b].item()
        torch.testing.assert_close(ro.rewards[b, idx], torch.tensor(want_r), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ro.values[b, idx], torch.tensor(want_v), atol=1e-5, rtol=1e-5)
        # GAE within the episode, by a reverse loop; nothing off the mask
        adv, nxt = [], 0.0
        for k in reversed(range(len(idx))):
            v_next = want_v[k + 1] if k + 1 < len(idx) else 0.0
            nxt = want_r[k] + 0.9 * v_next - want_v[k] + 0.9 * 0.7 * nxt
            adv.append(nxt)
        torch.testing.assert_close(ro.advantages[b, idx], torch.tensor(adv[::-1]), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ro.returns[b, idx], ro.advantages[b, idx] + ro.values[b, idx])
        off = ~ro.mask[b]
        assert (ro.rewards[b, off] == 0).all() and (ro.advantages[b, off] == 0).all()
    assert P == max(len(p) for p in PROMPTS)


def test_iteration_zero_policy_equals_reference():
    policy = tiny_policy()
    cfg = PPOTextConfig(iterations=1, batch_size=8, max_new_tokens=6, minibatch_size=8, epochs=1, lr=1e-3)
    hist = train_ppo_text(policy, count_a, PROMPTS, TOK, cfg, progress=False)
    assert hist.kl[0] == 0.0                              # the same weights, the same forward pass
    assert hist.clip_fraction[0] == 0.0 and hist.approx_kl[0] == 0.0   # one step: the ratio is exactly 1
    assert hist.reward[0] == pytest.approx(hist.score[0])


def test_the_first_minibatch_is_not_clipped_even_with_dropout():
    """Before the first step the policy is the one that sampled the rollout, so the ratio is 1
    and nothing is clipped: with dropout on in the update (the course GPT's 0.1) the ratio
    would differ from 1 by the dropout noise alone and a large share would be clipped."""
    policy = tiny_policy(dropout=0.3)
    cfg = PPOTextConfig(batch_size=8, max_new_tokens=6, epochs=1, minibatch_size=8, lr=0.0, eos_id=END)
    gen = torch.Generator().manual_seed(0)
    ro = rollout(policy, copy.deepcopy(policy.lm), count_a, PROMPTS * 2, TOK, cfg, cfg.beta, gen)
    stats = ppo_text_update(policy, torch.optim.Adam(policy.parameters(), lr=0.0), ro, cfg, gen)
    assert stats["clip_fraction"] == 0.0 and abs(stats["approx_kl"]) < 1e-6, stats
    assert not policy.training


def test_a_few_iterations_raise_a_learnable_reward_and_track_the_kl():
    policy = tiny_policy()
    ref = copy.deepcopy(policy.lm)
    cfg = PPOTextConfig(iterations=12, batch_size=32, max_new_tokens=8, minibatch_size=8, lr=3e-3,
                        beta=0.01, seed=1)
    hist = train_ppo_text(policy, count_a, PROMPTS, TOK, cfg, ref=ref,
                          labeller=lambda p, r: torch.tensor([t.count("a") for t in r], dtype=torch.float64),
                          progress=False)
    assert sum(hist.score[-3:]) / 3 > sum(hist.score[:2]) / 2 + 2.0, hist.score
    assert hist.labeller == pytest.approx(hist.score)     # the labeller here is the reward model
    assert hist.kl[-1] > 1.0 and all(b == 0.01 for b in hist.beta)
    for name in ("clip_fraction", "approx_kl", "entropy", "length", "policy_loss", "value_loss"):
        assert len(getattr(hist, name)) == 12 and all(math.isfinite(x) for x in getattr(hist, name))
    assert len(hist.samples[-1]) == cfg.n_samples and hist.samples[-1][0][1].count("a") >= 0
    # the reference is untouched
    for p, q in zip(ref.parameters(), tiny_policy().lm.parameters()):
        assert torch.equal(p, q)


def test_adaptive_beta_follows_the_kl():
    policy = tiny_policy()
    cfg = PPOTextConfig(iterations=6, batch_size=16, max_new_tokens=8, minibatch_size=8, lr=3e-3, beta=0.05,
                        target_kl=0.5, horizon=100)
    hist = train_ppo_text(policy, count_a, PROMPTS, TOK, cfg, progress=False)
    for i in range(1, 6):
        e = min(max(hist.kl[i - 1] / 0.5 - 1, -0.2), 0.2)
        assert hist.beta[i] == pytest.approx(hist.beta[i - 1] * (1 + e * 16 / 100))


def test_runs_are_deterministic():
    cfg = PPOTextConfig(iterations=3, batch_size=8, max_new_tokens=5, minibatch_size=4, lr=1e-3, seed=7,
                        eos_id=END)
    a = train_ppo_text(tiny_policy(), count_a, PROMPTS, TOK, cfg, progress=False).as_dict()
    b = train_ppo_text(tiny_policy(), count_a, PROMPTS, TOK, cfg, progress=False).as_dict()
    for key in ("score", "kl", "clip_fraction", "entropy", "length", "policy_loss", "samples"):
        assert a[key] == b[key], key


def test_optimal_frontier_against_the_closed_form():
    from llmcourse.rlhf.ppo import optimal_frontier

    rewards = torch.tensor([[0.0, 1.0] * 8, [1.0, 0.0] * 8])          # rho: reward 0 or 1, half each
    betas = [0.25, 0.5, 1.0, 4.0, 1e9]
    kls, values = optimal_frontier(rewards, betas)
    for beta, kl, v in zip(betas, kls, values):
        p = 1 / (1 + math.exp(-1 / beta))                                # pi*(reward 1)
        assert v == pytest.approx(p, rel=1e-9)
        assert kl == pytest.approx(p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)), abs=1e-9)
    assert kls == sorted(kls, reverse=True) and kls[-1] == pytest.approx(0.0, abs=1e-9)


def ptx_batches(seed=0):
    """Language-modelling batches of a text the policy is not rewarded for (its own generator)."""
    ids = TOK.encode("hgfedcba" * 40)
    g = torch.Generator().manual_seed(seed)

    def batch():
        i = torch.randint(len(ids) - 17, (8,), generator=g)
        return torch.stack([ids[j:j + 16] for j in i]), torch.stack([ids[j + 1:j + 17] for j in i])
    return batch


def test_ppo_ptx_with_a_zero_coefficient_is_ppo():
    cfg = PPOTextConfig(iterations=3, batch_size=8, max_new_tokens=5, minibatch_size=4, lr=1e-3, seed=3)
    a = train_ppo_text(tiny_policy(), count_a, PROMPTS, TOK, cfg, progress=False).as_dict()
    b = train_ppo_text(tiny_policy(), count_a, PROMPTS, TOK, cfg, progress=False,
                       pretrain_batch=ptx_batches()).as_dict()
    for key in ("score", "kl", "clip_fraction", "entropy", "policy_loss", "samples"):
        assert a[key] == b[key], key
    assert all(math.isnan(x) for x in a["ptx_loss"]) and all(math.isfinite(x) for x in b["ptx_loss"])


def test_ppo_ptx_keeps_the_pretraining_loss_down():
    """The pretraining term (InstructGPT's eq. 2) pulls the policy back towards its text."""
    def lm_loss(policy):
        x, y = ptx_batches(seed=99)()
        with torch.no_grad():
            return policy.lm(x, y)[1].item()

    ends = {}
    for coef in (0.0, 1.0):
        policy = tiny_policy()
        cfg = PPOTextConfig(iterations=6, batch_size=16, max_new_tokens=8, minibatch_size=8, lr=3e-3, beta=0.01,
                            seed=1, ptx_coef=coef)
        train_ppo_text(policy, count_a, PROMPTS, TOK, cfg, progress=False, pretrain_batch=ptx_batches())
        ends[coef] = lm_loss(policy)
    assert ends[1.0] < ends[0.0] - 0.1, ends
