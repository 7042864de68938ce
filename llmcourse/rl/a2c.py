"""Advantage actor-critic (A2C), the synchronous form of A3C.

Mnih, Badia, Mirza, Graves, Lillicrap, Harley, Silver, Kavukcuoglu (2016),
"Asynchronous Methods for Deep Reinforcement Learning", arXiv:1602.01783, Algorithm S3:
n-step returns bootstrapped from V(s_{t+n}), the policy gradient
grad log pi(a_t|s_t) (R_t - V(s_t)), an entropy bonus beta * H(pi(.|s_t)), RMSProp.
A3C runs its actor-learners asynchronously on CPU threads; here N environments are
stepped in lock-step and their n-step gradients averaged into one update (as in
OpenAI Baselines' A2C), which is deterministic and as fast on two cores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..train import progress_bar, set_seed
from .core import categorical_entropy, discounted_returns, value_loss
from .rollout import ActorCritic, Collector, RLHistory, make_envs, maybe_evaluate


@dataclass
class A2CConfig:
    """Hyperparameters of :func:`train_a2c`."""

    env_id: str = "CartPole-v1"   #: gymnasium environment
    num_envs: int = 8             #: parallel environments ("workers"), synchronous
    num_steps: int = 5            #: n of the n-step returns (t_max in the paper)
    total_steps: int = 100_000    #: environment steps (all envs) of the whole run
    lr: float = 7e-4              #: RMSProp learning rate
    rms_alpha: float = 0.99       #: RMSProp decay
    gamma: float = 0.99           #: discount
    ent_coef: float = 0.01        #: entropy regularisation beta
    vf_coef: float = 0.5          #: value-loss coefficient
    max_grad_norm: float = 0.5    #: clip the global gradient norm
    hidden: int = 64              #: MLP width
    seed: int = 1                 #: seeds torch and the environments
    eval_every: int = 0           #: evaluate greedily every this many updates (0: never)
    eval_episodes: int = 20       #: episodes per evaluation
    target_return: float = 475.0  #: "solved" threshold of the evaluation
    stop_when_solved: bool = False  #: end the run at the first solved evaluation


def a2c_loss(model, obs, actions, returns, cfg: A2CConfig):
    """Policy-gradient, value and entropy terms of one synchronous A2C update."""
    logits, v = model(obs)                                   # (B, A), (B,)
    logp = torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
    advantages = (returns - v).detach()                      # R_t - V(s_t)
    pg_loss = -(logp * advantages).mean()
    v_loss = value_loss(v, returns)
    entropy = categorical_entropy(logits).mean()
    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
    return loss, {"policy_loss": pg_loss.item(), "value_loss": v_loss.item(),
                  "entropy": entropy.item()}


def train_a2c(cfg: A2CConfig, progress: bool = True) -> RLHistory:
    """Train an :class:`ActorCritic` with A2C; return its :class:`RLHistory`."""
    set_seed(cfg.seed)
    envs = make_envs(cfg.env_id, cfg.num_envs)
    model = ActorCritic(envs.single_observation_space.shape[0],
                        envs.single_action_space.n, cfg.hidden)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=cfg.lr, alpha=cfg.rms_alpha,
                                    eps=1e-5)
    collector = Collector(envs, model, cfg.seed)
    hist, t0 = RLHistory(model=model), time.perf_counter()
    n_updates = cfg.total_steps // (cfg.num_envs * cfg.num_steps)
    for it in progress_bar(range(n_updates), progress, desc="A2C"):
        ro = collector.collect(cfg.num_steps)
        returns = discounted_returns(ro.rewards, ro.next_values, ro.terminated,
                                     ro.truncated, cfg.gamma)            # n-step returns
        loss, stats = a2c_loss(model, ro.obs.flatten(0, 1), ro.actions.flatten(),
                               returns.flatten(), cfg)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        elapsed = time.perf_counter() - t0 - hist.eval_seconds   # training time, evaluations excluded
        hist.stats.append(dict(stats, step=collector.steps, seconds=elapsed))
        if cfg.eval_every and (it + 1) % cfg.eval_every == 0:
            solved = maybe_evaluate(hist, model, collector.steps, t0, cfg.env_id,
                                    cfg.eval_episodes, cfg.target_return)
            if solved and cfg.stop_when_solved:
                break
    hist.episodes = collector.episodes
    hist.seconds = time.perf_counter() - t0
    envs.close()
    return hist
