"""Tests of llmcourse.rl against naive loops, closed forms and PyTorch's own modules."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from llmcourse.rl import (A2CConfig, ActorCritic, Collector, PPOConfig, categorical_entropy,
                          compute_gae, discounted_returns, evaluate, normalize_advantages,
                          ppo_clip_loss, train_a2c, train_ppo, value_loss)


def random_rollout(T=12, N=3, seed=0, p_term=0.15, p_trunc=0.1, consistent=False):
    """Random rewards, values and episode ends. ``consistent``: next_values[t] equals
    values[t+1] inside an episode, as in a real rollout (else all independent)."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    next_values = torch.randn(T, N, generator=g, dtype=torch.float64)
    u = torch.rand(T, N, generator=g)
    terminated = u < p_term
    truncated = (u >= p_term) & (u < p_term + p_trunc)
    if consistent:
        inside = ~(terminated | truncated)[:-1]
        next_values[:-1] = torch.where(inside, values[1:], next_values[:-1])
    return rewards, values, next_values, terminated, truncated


def naive_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Sum form: A_t = sum_k (gamma lam)^k delta_{t+k}, stopping at the episode's end."""
    T, N = rewards.shape
    adv = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        for t in range(T):
            total, w = 0.0, 1.0
            for k in range(t, T):
                boot = 0.0 if terminated[k, n] else gamma * next_values[k, n].item()
                delta = rewards[k, n].item() + boot - values[k, n].item()
                total += w * delta
                if terminated[k, n] or truncated[k, n]:
                    break
                w *= gamma * lam
            adv[t, n] = total
    return adv


def naive_returns(rewards, next_values, terminated, truncated, gamma):
    """Closed form: discounted sum of rewards to the episode's (or rollout's) end, plus
    gamma^k V(s_end) unless the episode terminated there."""
    T, N = rewards.shape
    out = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        for t in range(T):
            total = 0.0
            for k in range(t, T):
                total += gamma ** (k - t) * rewards[k, n].item()
                if terminated[k, n]:
                    break
                if truncated[k, n] or k == T - 1:
                    total += gamma ** (k - t + 1) * next_values[k, n].item()
                    break
            out[t, n] = total
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (0.97, 0.0), (0.95, 1.0)])
def test_gae_matches_naive_sum(seed, gamma, lam):
    ro = random_rollout(seed=seed, consistent=seed % 2 == 0)
    adv, ret = compute_gae(*ro, gamma=gamma, lam=lam)
    torch.testing.assert_close(adv, naive_gae(*ro, gamma, lam))
    torch.testing.assert_close(ret, adv + ro[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_lambda_one_is_discounted_returns_minus_values(seed):
    rewards, values, next_values, term, trunc = random_rollout(seed=seed, consistent=True)
    adv, ret = compute_gae(rewards, values, next_values, term, trunc, gamma=0.9, lam=1.0)
    closed = naive_returns(rewards, next_values, term, trunc, 0.9)
    torch.testing.assert_close(adv, closed - values)
    torch.testing.assert_close(ret, closed)
    torch.testing.assert_close(discounted_returns(rewards, next_values, term, trunc, 0.9),
                               closed)


def test_gae_lambda_zero_is_td_error():
    rewards, values, next_values, term, trunc = random_rollout(seed=3)
    adv, _ = compute_gae(rewards, values, next_values, term, trunc, gamma=0.9, lam=0.0)
    td = rewards + 0.9 * next_values * (~term) - values
    torch.testing.assert_close(adv, td)


def test_truncation_by_hand():
    # One environment, 4 steps. The episode is cut by the time limit after step 1
    # (bootstrap V(final obs) = 10, carry nothing), a new one terminates after step 3.
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    v = torch.tensor([0.5, 1.0, 1.5, 2.0])
    nv = torch.tensor([1.0, 10.0, 2.0, 99.0])   # nv[1] = V(final obs); nv[3] unused
    term = torch.tensor([False, False, False, True])
    trunc = torch.tensor([False, True, False, False])
    g, lam = 0.5, 0.5
    d = [1 + g * 1.0 - 0.5, 2 + g * 10.0 - 1.0, 3 + g * 2.0 - 1.5, 4 - 2.0]
    expected = torch.tensor([d[0] + g * lam * d[1], d[1], d[2] + g * lam * d[3], d[3]])
    adv, ret = compute_gae(r, v, nv, term, trunc, gamma=g, lam=lam)
    torch.testing.assert_close(adv, expected)
    # treating the truncation as a termination would drop the bootstrap term 5.0
    adv_wrong, _ = compute_gae(r, v, nv, term | trunc, torch.zeros(4, dtype=torch.bool),
                               gamma=g, lam=lam)
    assert adv[1] - adv_wrong[1] == pytest.approx(g * 10.0)


def test_collector_bootstraps_from_final_observation():
    """On a truncated step next_values is V(final obs), not V(first obs of the next episode)."""
    torch.manual_seed(0)
    limit, N = 5, 2
    envs = SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=limit)
                          for _ in range(N)], autoreset_mode=AutoresetMode.SAME_STEP)
    model = ActorCritic(4, 2)
    col = Collector(envs, model, seed=7)
    ro = col.collect(2 * limit)
    assert not ro.terminated.any() and ro.truncated[limit - 1].all()
    for n in range(N):   # replay sub-env n alone with the same seed and actions
        env = gym.make("CartPole-v1", max_episode_steps=limit)
        obs, _ = env.reset(seed=7 + n)
        for t in range(limit):
            torch.testing.assert_close(ro.obs[t, n], torch.as_tensor(obs))
            obs, *_ = env.step(int(ro.actions[t, n]))
        with torch.no_grad():
            final_v = model.value(torch.as_tensor(obs))
            reset_v = model.value(ro.obs[limit, n])
        torch.testing.assert_close(ro.next_values[limit - 1, n], final_v)
        assert not torch.allclose(ro.next_values[limit - 1, n], reset_v)
        torch.testing.assert_close(ro.next_values[:limit - 1, n], ro.values[1:limit, n])
    assert [r for _, r in col.episodes] == [float(limit)] * (2 * N)


def test_normalize_advantages():
    a = torch.randn(100, generator=torch.Generator().manual_seed(0)) * 3 + 2
    out = normalize_advantages(a)
    torch.testing.assert_close(out, (a - a.mean()) / (a.std() + 1e-8))
    assert abs(out.mean().item()) < 1e-6 and out.std().item() == pytest.approx(1.0, abs=1e-6)


def test_ppo_loss_at_ratio_one_is_vanilla_policy_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 3, generator=g, requires_grad=True)
    actions = torch.randint(0, 3, (64,), generator=g)
    adv = torch.randn(64, generator=g)
    logp = torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
    loss, stats = ppo_clip_loss(logp, logp.detach(), adv, clip_eps=0.2)
    assert stats["clip_fraction"] == 0.0 and stats["approx_kl"] == pytest.approx(0.0, abs=1e-7)
    (grad_ppo,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (grad_pg,) = torch.autograd.grad(-(logp * adv).mean(), logits)
    torch.testing.assert_close(grad_ppo, grad_pg)
    torch.testing.assert_close(loss, -adv.mean())


def test_ppo_clip_cases_and_stats():
    logp_old = torch.zeros(4)
    r = torch.tensor([1.5, 1.5, 0.5, 1.1])
    adv = torch.tensor([1.0, -1.0, 1.0, -2.0])
    logp_new = r.log().requires_grad_()
    loss, stats = ppo_clip_loss(logp_new, logp_old, adv, clip_eps=0.2)
    # min(rA, clip(r)A): 1.2 (clipped), -1.5, 0.5, -2.2
    assert loss.item() == pytest.approx(-(1.2 - 1.5 + 0.5 - 2.2) / 4)
    assert stats["clip_fraction"] == pytest.approx(0.75)
    assert stats["approx_kl"] == pytest.approx(((r - 1) - r.log()).mean().item())
    loss.backward()
    assert logp_new.grad[0] == 0 and logp_new.grad[1] != 0   # clipped term has no gradient
    unclipped, _ = ppo_clip_loss(r.log(), logp_old, adv, clip_eps=None)
    assert unclipped.item() == pytest.approx(-(r * adv).mean().item())


def test_value_loss_plain_and_clipped():
    v, R, v_old = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.5])
    assert value_loss(v, R).item() == pytest.approx(0.5 * (1 + 9) / 2)
    # v_clip = [0.2, 2.7]: (0.2-2)^2 = 3.24 > 1; (2.7-0)^2 = 7.29 < 9
    assert value_loss(v, R, v_old, 0.2).item() == pytest.approx(0.5 * (3.24 + 9) / 2)


def test_categorical_entropy():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(categorical_entropy(logits),
                               torch.distributions.Categorical(logits=logits).entropy())
    big = torch.tensor([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4]])
    ent = categorical_entropy(big)
    assert torch.isfinite(ent).all()
    torch.testing.assert_close(ent, torch.tensor([0.0, np.log(2)], dtype=torch.float32))


def test_trainers_smoke_and_deterministic():
    torch.set_num_threads(1)
    cfg = PPOConfig(total_steps=512, num_envs=4, num_steps=32, update_epochs=2, seed=3,
                    eval_every=2, eval_episodes=2)
    h1, h2 = train_ppo(cfg, progress=False), train_ppo(cfg, progress=False)
    assert len(h1.stats) == 4 and len(h1.evals) == 2
    assert {"clip_fraction", "approx_kl", "entropy", "value_loss"} <= set(h1.stats[0])
    assert [s["approx_kl"] for s in h1.stats] == [s["approx_kl"] for s in h2.stats]
    assert h1.episodes == h2.episodes and len(h1.episodes) > 0
    a = train_a2c(A2CConfig(total_steps=400, num_envs=4, num_steps=5, seed=0), progress=False)
    assert len(a.stats) == 20 and all(np.isfinite(s["policy_loss"]) for s in a.stats)
    assert 0 < evaluate(a.model, episodes=3) <= 500
    # training seconds per update: increasing, evaluations excluded, interpolated by seconds_at
    secs = [st["seconds"] for st in h1.stats]
    assert all(x < y for x, y in zip(secs, secs[1:])) and h1.eval_seconds > 0
    assert secs[-1] <= h1.seconds - h1.eval_seconds + 1e-6
    steps = [st["step"] for st in h1.stats]
    np.testing.assert_allclose(h1.seconds_at(steps), secs)
    assert h1.seconds_at([0])[0] == 0.0 and secs[0] / 2 == pytest.approx(h1.seconds_at([steps[0] / 2])[0])


def test_sweep_script_runs_and_shipped_results_are_complete(tmp_path):
    """scripts/rl_sweeps.py regenerates the shipped file: smoke-run it, check the file."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "rl.json"
    subprocess.run([sys.executable, str(root / "scripts" / "rl_sweeps.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    quick = json.loads(out.read_text())
    shipped = json.loads((root / "llmcourse" / "data" / "rl_sweeps.json").read_text())
    for res in (quick, shipped):
        assert set(res["workers"]) == {"1", "4", "16"} and set(res["clip"]) == {"0.1", "0.2", "0.3", "none"}
        assert len(res["compare"]["A2C"]) == len(res["seeds"])
        run = res["clip"]["0.2"][0]
        assert len(run["curve"]) == len(res["grid"]) and len(run["approx_kl"]) == len(run["stat_steps"])
        for n, runs in res["workers"].items():                  # chapter 20 plots against measured time
            assert all(len(r["time_curve"]) == len(res["worker_grid"]) and r["train_seconds"] > 0 for r in runs)
    assert len(shipped["seeds"]) >= 3


# ----------------------------------------------------------------------------- the trainers' losses and updates


def _batch(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 4, generator=g)
    return {"obs": obs, "actions": torch.randint(0, 2, (n,), generator=g),
            "logp": torch.log(torch.rand(n, generator=g) * 0.6 + 0.2),
            "values": torch.randn(n, generator=g), "advantages": torch.randn(n, generator=g) * 2 + 0.5,
            "returns": torch.randn(n, generator=g)}


def test_a2c_loss_is_policy_gradient_value_and_entropy_terms():
    """The loss and its gradients against the formula written out: the advantage R - V is a
    constant for the policy term (no policy gradient reaches the critic), entropy is a bonus."""
    from llmcourse.rl import a2c_loss

    torch.manual_seed(0)
    model = ActorCritic(4, 2)
    b = _batch()
    cfg = A2CConfig(ent_coef=0.3, vf_coef=0.7)
    loss, stats = a2c_loss(model, b["obs"], b["actions"], b["returns"], cfg)
    logits, v = model(b["obs"])
    logp = torch.log_softmax(logits, -1)[torch.arange(48), b["actions"]]
    p = torch.softmax(logits, -1)
    entropy = -(p * p.log()).sum(-1).mean()
    want = (-(logp * (b["returns"] - v.detach())).mean() + 0.7 * 0.5 * ((v - b["returns"]) ** 2).mean()
            - 0.3 * entropy)
    params = list(model.parameters())
    for got_g, want_g in zip(torch.autograd.grad(loss, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(got_g, want_g)
    torch.testing.assert_close(loss, want)
    assert stats["entropy"] == pytest.approx(entropy.item(), rel=1e-5)
    pg_only, _ = a2c_loss(model, b["obs"], b["actions"], b["returns"], A2CConfig(ent_coef=0.0, vf_coef=0.0))
    for p_ in model.critic.parameters():                      # the advantage is a constant to the actor's loss
        assert torch.autograd.grad(pg_only, p_, retain_graph=True)[0].abs().max() == 0


def test_ppo_update_is_adam_on_the_clipped_objective():
    """One epoch, one minibatch: ppo_update takes exactly the Adam step of
    clip loss (normalised advantages) + vf * clipped value loss - ent * entropy."""
    import copy

    from llmcourse.rl import ppo_update

    torch.manual_seed(0)
    model = ActorCritic(4, 2)
    twin = copy.deepcopy(model)
    b = _batch()
    cfg = PPOConfig(update_epochs=1, num_minibatches=1, clip_eps=0.2, clip_vloss=True, ent_coef=0.05,
                    vf_coef=0.7, max_grad_norm=1e9, norm_adv=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-5)
    stats = ppo_update(model, opt, b, cfg)
    opt2 = torch.optim.Adam(twin.parameters(), lr=1e-2, eps=1e-5)
    logits, v = twin(b["obs"])
    logp = torch.log_softmax(logits, -1)[torch.arange(48), b["actions"]]
    adv = (b["advantages"] - b["advantages"].mean()) / (b["advantages"].std() + 1e-8)
    ratio = (logp - b["logp"]).exp()
    pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    v_clip = b["values"] + (v - b["values"]).clamp(-0.2, 0.2)
    vl = 0.5 * torch.max((v - b["returns"]) ** 2, (v_clip - b["returns"]) ** 2).mean()
    p = torch.softmax(logits, -1)
    ent = -(p * p.log()).sum(-1).mean()
    (pg + 0.7 * vl - 0.05 * ent).backward()
    opt2.step()
    for a, w in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, w, atol=1e-6, rtol=1e-5)
    assert stats["policy_loss"] == pytest.approx(pg.item(), rel=1e-5, abs=1e-7)
    assert stats["value_loss"] == pytest.approx(vl.item(), rel=1e-5)
    assert stats["entropy"] == pytest.approx(ent.item(), rel=1e-5)


def test_ppo_update_takes_epochs_times_minibatches_steps():
    from llmcourse.rl import ppo_update

    torch.manual_seed(0)
    model = ActorCritic(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ppo_update(model, opt, _batch(), PPOConfig(update_epochs=3, num_minibatches=4))
    assert [float(s["step"]) for s in opt.state.values()] == [12.0] * len(list(model.parameters()))


# ----------------------------------------------------------------------------- evaluation


class Heuristic(torch.nn.Module):
    """A fixed CartPole policy (push toward the pole's lean), some episodes short, some cut at 500 steps."""

    def __init__(self):
        super().__init__()
        lean = lambda obs: obs[..., 2] + 0.3 * obs[..., 3] - 0.5 * obs[..., 1]   # noqa: E731
        self.actor = lambda obs: torch.stack([-lean(obs), lean(obs)], -1)


def test_evaluate_counts_each_environments_first_episode_once():
    """evaluate's mean equals episodes played one by one with gym, seeded seed + i, greedy actions."""
    model = Heuristic()
    want = []
    for i in range(6):
        env = gym.make("CartPole-v1")
        obs, _ = env.reset(seed=123 + i)
        total, done = 0.0, False
        while not done:
            action = int(model.actor(torch.as_tensor(obs)).argmax())
            obs, r, term, trunc, _ = env.step(action)
            total += r
            done = term or trunc
        want.append(total)
    assert min(want) < 200 and max(want) == 500                  # terminated and truncated episodes both
    assert evaluate(model, episodes=6, seed=123) == pytest.approx(np.mean(want))
