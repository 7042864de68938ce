"""Reinforcement learning for Part IV: GAE, A2C (A3C's synchronous form) and PPO.

- :mod:`llmcourse.rl.core`: returns, GAE, the PPO and value losses, entropy.
- :mod:`llmcourse.rl.rollout`: vectorised gymnasium CartPole, the actor-critic MLP,
  rollouts (truncation-aware) and greedy evaluation.
- :mod:`llmcourse.rl.a2c`, :mod:`llmcourse.rl.ppo`: the two trainers.
"""
from .a2c import A2CConfig, a2c_loss, train_a2c
from .core import (categorical_entropy, compute_gae, discounted_returns,
                   normalize_advantages, ppo_clip_loss, value_loss)
from .ppo import PPOConfig, ppo_update, train_ppo
from .rollout import ActorCritic, Collector, Rollout, RLHistory, evaluate, make_envs

__all__ = [
    "A2CConfig", "a2c_loss", "train_a2c", "categorical_entropy", "compute_gae",
    "discounted_returns", "normalize_advantages", "ppo_clip_loss", "value_loss",
    "PPOConfig", "ppo_update", "train_ppo", "ActorCritic", "Collector", "Rollout",
    "RLHistory", "evaluate", "make_envs",
]
