"""Returns, advantages and the policy-gradient losses of A2C and PPO.

- Generalized Advantage Estimation: Schulman, Moritz, Levine, Jordan, Abbeel (2015),
  "High-Dimensional Continuous Control Using Generalized Advantage Estimation",
  arXiv:1506.02438, eq. 11-16.
- The clipped surrogate objective: Schulman, Wolski, Dhariwal, Radford, Klimov (2017),
  "Proximal Policy Optimization Algorithms", arXiv:1707.06347, eq. 7 and eq. 9.
- Value clipping and the approximate KL ``mean((r - 1) - log r)`` follow the reference
  implementation details collected by cleanrl (``ppo.py``, Huang et al. 2022).

All rollout tensors are in time order, shape (T,) or (T, N) for N parallel environments.
``terminated[t]`` means s_{t+1} is a terminal state (nothing to bootstrap);
``truncated[t]`` means the episode was cut after step t by a time limit: we bootstrap
from ``next_values[t]`` (the value of the final observation) but carry nothing across.
This module is the contract of the ``ppo`` assignment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def discounted_returns(rewards, next_values, terminated, truncated, gamma=0.99):
    """Bootstrapped discounted returns G_t = r_t + gamma * (G_{t+1} or V(s_{t+1})).

    Within an episode G_t recurses on G_{t+1}; at a truncation it bootstraps from the
    final observation's value; at a termination it stops. At the end of the rollout
    (t = T-1) it bootstraps from ``next_values[-1]``: these are A2C's n-step returns.
    """
    T = rewards.shape[0]
    boot = truncated.bool().clone()
    boot[T - 1] = True                                      # the rollout ends: bootstrap
    not_term = 1.0 - terminated.to(rewards.dtype)
    out = torch.zeros_like(rewards)
    g = torch.zeros_like(rewards[0])                        # G_{t+1}
    for t in reversed(range(T)):
        nxt = torch.where(boot[t], next_values[t], g)       # V(s_{t+1}) where the episode was cut
        g = rewards[t] + gamma * not_term[t] * nxt
        out[t] = g
    return out


def compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.99, lam=0.95):
    """GAE(gamma, lambda): A_t = delta_t + gamma * lambda * A_{t+1} within an episode.

    delta_t = r_t + gamma * V(s_{t+1}) * (1 - terminated_t) - V(s_t). The recursion is
    reset wherever the episode ended (terminated or truncated). Returns
    ``(advantages, returns)`` with ``returns = advantages + values``.
    """
    not_term = 1.0 - terminated.to(rewards.dtype)           # (T, N)
    carry = not_term * (1.0 - truncated.to(rewards.dtype))  # 0 at any episode boundary
    deltas = rewards + gamma * next_values * not_term - values
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])                     # A_T := 0 (bootstrap is in delta)
    for t in reversed(range(rewards.shape[0])):
        last = deltas[t] + gamma * lam * carry[t] * last
        advantages[t] = last
    return advantages, advantages + values


def normalize_advantages(adv, eps=1e-8):
    """Zero mean, unit (unbiased, ``torch.std``) standard deviation over the batch."""
    return (adv - adv.mean()) / (adv.std() + eps)


def ppo_clip_loss(logp_new, logp_old, advantages, clip_eps=0.2):
    """Negative clipped surrogate  -mean(min(r A, clip(r, 1-eps, 1+eps) A)),  PPO eq. 7.

    ``clip_eps=None`` gives the unclipped surrogate -mean(r A) (the "no clipping" row of
    the paper's Table 1); its clip fraction is then measured at 0.2 for comparison.
    Returns ``(loss, stats)`` with float ``stats["clip_fraction"]`` (share of samples
    with |r - 1| > eps) and ``stats["approx_kl"]`` (mean((r - 1) - log r), >= 0).
    """
    log_ratio = logp_new - logp_old
    ratio = log_ratio.exp()
    surrogate = ratio * advantages
    if clip_eps is not None:
        clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
        surrogate = torch.min(surrogate, clipped)
    loss = -surrogate.mean()
    with torch.no_grad():
        eps = 0.2 if clip_eps is None else clip_eps
        stats = {
            "clip_fraction": ((ratio - 1.0).abs() > eps).float().mean().item(),
            "approx_kl": ((ratio - 1.0) - log_ratio).mean().item(),
        }
    return loss, stats


def value_loss(values, returns, old_values=None, clip_eps=None):
    """0.5 * mean((V - R)^2); with ``old_values`` and ``clip_eps``, the pessimistic
    clipped form 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))."""
    unclipped = (values - returns) ** 2
    if old_values is None or clip_eps is None:
        return 0.5 * unclipped.mean()
    v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    return 0.5 * torch.max(unclipped, (v_clipped - returns) ** 2).mean()


def categorical_entropy(logits):
    """Entropy -sum p log p of softmax(logits) over the last axis, via log_softmax so it
    stays finite for logits of +-1e4 (p = 0 times a finite log p is 0)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)
