"""Proximal Policy Optimization with the clipped surrogate objective.

Schulman, Wolski, Dhariwal, Radford, Klimov (2017), "Proximal Policy Optimization
Algorithms", arXiv:1707.06347, Algorithm 1 and eq. 7, 9. Implementation details
(orthogonal init, advantage normalisation per minibatch, optional value clipping,
global gradient clipping, learning-rate annealing, approx KL) as in cleanrl's ``ppo.py``.
The defaults are tuned for CartPole-v1 (close to rl-baselines3-zoo's CartPole PPO).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..train import progress_bar, set_seed
from .core import (categorical_entropy, compute_gae, normalize_advantages,
                   ppo_clip_loss, value_loss)
from .rollout import ActorCritic, Collector, RLHistory, make_envs, maybe_evaluate


@dataclass
class PPOConfig:
    """Hyperparameters of :func:`train_ppo`."""

    env_id: str = "CartPole-v1"   #: gymnasium environment
    num_envs: int = 8             #: parallel environments (synchronous)
    num_steps: int = 32           #: steps per environment per rollout
    total_steps: int = 100_000    #: environment steps (all envs) of the whole run
    lr: float = 1e-3              #: Adam learning rate
    anneal_lr: bool = True        #: decay the learning rate linearly to 0 ...
    anneal_steps: int = 0         #: ... over this many env steps (0: total_steps)
    update_epochs: int = 10       #: passes over each rollout
    num_minibatches: int = 2      #: minibatches per pass
    gamma: float = 0.98           #: discount
    gae_lambda: float = 0.8       #: GAE lambda
    clip_eps: float | None = 0.2  #: clip range epsilon; None: unclipped surrogate
    clip_vloss: bool = False      #: clip the value update with the same epsilon
    ent_coef: float = 0.0         #: entropy bonus coefficient
    vf_coef: float = 0.5          #: value-loss coefficient
    max_grad_norm: float = 0.5    #: clip the global gradient norm
    norm_adv: bool = True         #: normalise advantages per minibatch
    hidden: int = 64              #: MLP width
    seed: int = 1                 #: seeds torch and the environments
    eval_every: int = 0           #: evaluate greedily every this many updates (0: never)
    eval_episodes: int = 20       #: episodes per evaluation
    target_return: float = 475.0  #: "solved" threshold of the evaluation
    stop_when_solved: bool = False  #: end the run at the first solved evaluation


def ppo_update(model, optimizer, batch: dict, cfg: PPOConfig) -> dict:
    """Several epochs of minibatch steps on the clipped objective (Algorithm 1's inner
    loop). ``batch`` holds flat (B,) tensors; returns the mean of the logged stats."""
    B = batch["obs"].shape[0]
    mb = B // cfg.num_minibatches
    logs = []
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(B)
        for start in range(0, B, mb):
            idx = perm[start:start + mb]
            logits, v = model(batch["obs"][idx])
            logp = torch.log_softmax(logits, -1).gather(
                -1, batch["actions"][idx, None]).squeeze(-1)
            adv = batch["advantages"][idx]
            if cfg.norm_adv:
                adv = normalize_advantages(adv)
            pg_loss, stats = ppo_clip_loss(logp, batch["logp"][idx], adv, cfg.clip_eps)
            v_loss = value_loss(v, batch["returns"][idx], batch["values"][idx],
                                cfg.clip_eps if cfg.clip_vloss else None)
            entropy = categorical_entropy(logits).mean()
            loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            logs.append(dict(stats, policy_loss=pg_loss.item(), value_loss=v_loss.item(),
                             entropy=entropy.item()))
    return {k: sum(d[k] for d in logs) / len(logs) for k in logs[0]}


def train_ppo(cfg: PPOConfig, progress: bool = True) -> RLHistory:
    """Train an :class:`ActorCritic` with PPO; return its :class:`RLHistory`."""
    set_seed(cfg.seed)
    envs = make_envs(cfg.env_id, cfg.num_envs)
    model = ActorCritic(envs.single_observation_space.shape[0],
                        envs.single_action_space.n, cfg.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    collector = Collector(envs, model, cfg.seed)
    hist, t0 = RLHistory(model=model), time.perf_counter()
    n_updates = cfg.total_steps // (cfg.num_envs * cfg.num_steps)
    n_anneal = (cfg.anneal_steps or cfg.total_steps) // (cfg.num_envs * cfg.num_steps)
    for it in progress_bar(range(n_updates), progress, desc="PPO"):
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.lr * max(0.0, 1 - it / n_anneal)
        ro = collector.collect(cfg.num_steps)
        adv, ret = compute_gae(ro.rewards, ro.values, ro.next_values, ro.terminated,
                               ro.truncated, cfg.gamma, cfg.gae_lambda)
        batch = {"obs": ro.obs.flatten(0, 1), "actions": ro.actions.flatten(),
                 "logp": ro.logp.flatten(), "values": ro.values.flatten(),
                 "advantages": adv.flatten(), "returns": ret.flatten()}
        stats = ppo_update(model, optimizer, batch, cfg)
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
