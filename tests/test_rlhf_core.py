"""llmcourse.rlhf.core against loops and hand computations (the rlhf assignment's contract)."""
import math

import pytest
import torch

from llmcourse.rlhf.core import (AdaptiveKLController, FixedKLController, bradley_terry_loss,
                                 kl_penalized_rewards, kwise_ranking_loss, last_true, response_logprobs)


def test_response_logprobs_against_a_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=g, dtype=torch.float64)
    ids = torch.randint(11, (3, 6), generator=g)
    got = response_logprobs(logits, ids)
    assert got.shape == (3, 5) and got.dtype == torch.float64
    for b in range(3):
        for t in range(5):
            p = torch.exp(logits[b, t]) / torch.exp(logits[b, t]).sum()
            assert math.isclose(got[b, t].item(), math.log(p[ids[b, t + 1]].item()), rel_tol=1e-12)


def test_response_logprobs_finite_for_huge_logits():
    logits = torch.tensor([[[1e4, -1e4, 0.0], [0.0, 1e4, 1e4], [1.0, 2.0, 3.0]]])
    got = response_logprobs(logits, torch.tensor([[0, 1, 2]]))
    assert torch.isfinite(got).all() and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([[-2e4, -math.log(2)]]))


def test_bradley_terry_by_hand_and_at_large_margins():
    loss = bradley_terry_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0]))
    want = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert math.isclose(loss.item(), want, rel_tol=1e-6)
    for margin in (100.0, -100.0):
        chosen = torch.tensor([margin], requires_grad=True)
        loss = bradley_terry_loss(chosen, torch.zeros(1))
        loss.backward()
        assert torch.isfinite(loss) and math.isclose(loss.item(), max(0.0, -margin), abs_tol=1e-6)
        # d/dm -log sigmoid(m) = -sigmoid(-m): -1 for a margin of -100, ~0 for +100
        assert math.isclose(chosen.grad.item(), -1.0 / (1.0 + math.exp(margin)), abs_tol=1e-6)


def _kwise_loop(rewards, ranks):
    total = 0.0
    for r, k in zip(rewards.tolist(), ranks.tolist()):
        pairs = [(i, j) for i in range(len(r)) for j in range(len(r)) if k[i] < k[j]]
        total += sum(math.log(1 + math.exp(-(r[i] - r[j]))) for i, j in pairs) / len(pairs)
    return total / len(rewards)


def test_kwise_ranking_loss_against_a_loop_and_bt():
    g = torch.Generator().manual_seed(1)
    for K in (2, 3, 4, 7):
        rewards = torch.randn(5, K, generator=g, dtype=torch.float64) * 2
        ranks = torch.stack([torch.randperm(K, generator=g) for _ in range(5)])
        assert math.isclose(kwise_ranking_loss(rewards, ranks).item(), _kwise_loop(rewards, ranks), rel_tol=1e-10)
    rewards = torch.randn(6, 2, generator=g)
    ranks = torch.tensor([[0, 1], [1, 0]] * 3)
    chosen = torch.where(ranks[:, 0] == 0, rewards[:, 0], rewards[:, 1])
    rejected = torch.where(ranks[:, 0] == 0, rewards[:, 1], rewards[:, 0])
    torch.testing.assert_close(kwise_ranking_loss(rewards, ranks), bradley_terry_loss(chosen, rejected))


def test_kwise_ranking_loss_is_stable_and_ignores_the_order_of_responses():
    rewards = torch.tensor([[100.0, -100.0, 0.0]], requires_grad=True)
    ranks = torch.tensor([[2, 0, 1]])                      # the worst response has the highest reward
    loss = kwise_ranking_loss(rewards, ranks)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(rewards.grad).all()
    assert math.isclose(loss.item(), (200 + 100 + 100) / 3, rel_tol=1e-5)
    perm = torch.tensor([1, 2, 0])
    torch.testing.assert_close(kwise_ranking_loss(rewards.detach()[:, perm], ranks[:, perm]), loss.detach())


def _rewards_loop(score, logprobs, ref, mask, beta):
    out = torch.zeros_like(logprobs)
    for b in range(mask.shape[0]):
        last = None
        for t in range(mask.shape[1]):
            if mask[b, t]:
                out[b, t] = -beta * (logprobs[b, t] - ref[b, t])
                last = t
        if last is not None:
            out[b, last] += score[b]
    return out


def test_kl_penalized_rewards_against_a_loop():
    g = torch.Generator().manual_seed(2)
    lp = -torch.rand(4, 7, generator=g, dtype=torch.float64, requires_grad=True)
    ref = -torch.rand(4, 7, generator=g, dtype=torch.float64)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0, 0],
                         [0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    score = torch.tensor([1.5, -2.0, 0.25, 3.0], dtype=torch.float64)
    before = [t.clone() for t in (lp, ref, mask, score)]
    got = kl_penalized_rewards(score, lp, ref, mask, 0.3)
    assert not got.requires_grad and got.dtype == torch.float64
    torch.testing.assert_close(got, _rewards_loop(score, lp.detach(), ref, mask, 0.3))
    for t, b in zip((lp, ref, mask, score), before):
        assert torch.equal(t, b)
    assert torch.equal(last_true(mask), torch.tensor([4, 6, 1, 6]))


def test_adaptive_controller_by_hand():
    ctl = AdaptiveKLController(0.1, target_kl=6.0, horizon=10_000)
    assert ctl.value == 0.1
    ctl.update(9.0, 64)                                     # e = 0.5 -> clipped to 0.2
    assert math.isclose(ctl.value, 0.1 * (1 + 0.2 * 64 / 10_000))
    ctl.update(5.4, 100)                                    # e = -0.1
    assert math.isclose(ctl.value, 0.1 * (1 + 0.2 * 64 / 10_000) * (1 - 0.1 * 100 / 10_000))
    ctl.update(0.0, 10_000)                                 # e = -1 -> -0.2: beta * 0.8
    assert math.isclose(ctl.value, 0.1 * (1 + 0.2 * 64 / 10_000) * (1 - 0.1 * 100 / 10_000) * 0.8)
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 64) == 0.05 == fixed.value


@pytest.mark.parametrize("kl,direction", [(12.0, 1), (3.0, -1), (6.0, 0)])
def test_adaptive_controller_moves_beta_towards_the_target(kl, direction):
    ctl = AdaptiveKLController(0.2, target_kl=6.0, horizon=1000)
    for _ in range(5):
        ctl.update(kl, 32)
    assert (ctl.value > 0.2) - (ctl.value < 0.2) == direction
