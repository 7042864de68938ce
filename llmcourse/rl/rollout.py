"""Vectorised CartPole, an actor-critic MLP, rollouts and greedy evaluation.

Shared by :mod:`llmcourse.rl.a2c` (Mnih et al. 2016, arXiv:1602.01783) and
:mod:`llmcourse.rl.ppo` (Schulman et al. 2017, arXiv:1707.06347). The network and its
orthogonal initialisation follow cleanrl's ``ppo.py``.

Autoreset. gymnasium 1.x vector environments reset a finished sub-environment by
themselves. The default mode, ``AutoresetMode.NEXT_STEP``, returns the *final*
observation at the step where the episode ends and resets on the *next* call to
``step`` (whose action is ignored and whose reward is 0): every rollout would then hold
dummy reset transitions to mask out. We build the environments with
``AutoresetMode.SAME_STEP`` instead: ``step`` resets at once, returns the first
observation of the new episode, and exposes the final observation in
``info["final_obs"]`` (where ``info["_final_obs"]`` is True). Every stored row is then a
real transition, and ``next_values[t]`` is V(final observation) on the step that ended
an episode: the value to bootstrap from when the episode was truncated (time limit,
500 steps for CartPole-v1), ignored when it terminated (the pole fell).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from gymnasium.vector import AutoresetMode, SyncVectorEnv


def make_envs(env_id: str = "CartPole-v1", num_envs: int = 8) -> SyncVectorEnv:
    """``num_envs`` copies of ``env_id`` stepped in lock-step, autoreset in the same step."""
    return SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.SAME_STEP)


def layer_init(layer: nn.Linear, std: float = 2 ** 0.5, bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class ActorCritic(nn.Module):
    """Separate two-layer tanh MLPs for the policy logits and the state value."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, n_actions), std=0.01))
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, 1), std=1.0))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)                 # (..., obs_dim) -> (...)

    def forward(self, obs: torch.Tensor):
        """Return ``(logits, value)``: (..., n_actions) and (...)."""
        return self.actor(obs), self.value(obs)


@dataclass
class Rollout:
    """T steps of N environments. Shapes (T, N) unless noted."""

    obs: torch.Tensor          #: (T, N, obs_dim) observations s_t
    actions: torch.Tensor      #: actions a_t
    logp: torch.Tensor         #: log pi_old(a_t | s_t)
    values: torch.Tensor       #: V_old(s_t)
    rewards: torch.Tensor      #: r_t
    terminated: torch.Tensor   #: bool, s_{t+1} is terminal
    truncated: torch.Tensor    #: bool, the episode was cut after step t
    next_values: torch.Tensor  #: V_old(s_{t+1}); V(final observation) where an episode ended


class Collector:
    """Steps ``envs`` with ``model``'s sampled actions; remembers where it stopped and
    the undiscounted return of every finished episode."""

    def __init__(self, envs: SyncVectorEnv, model: ActorCritic, seed: int):
        self.envs, self.model = envs, model
        obs, _ = envs.reset(seed=seed)                       # seeds sub-env i with seed + i
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self.running = np.zeros(envs.num_envs)
        self.steps = 0
        self.episodes: list[tuple[int, float]] = []          # (env steps so far, return)

    @torch.no_grad()
    def collect(self, num_steps: int) -> Rollout:
        T, N = num_steps, self.envs.num_envs
        buf = {k: [] for k in ("obs", "actions", "logp", "values", "rewards",
                               "terminated", "truncated", "final_values")}
        for _ in range(T):
            logits, value = self.model(self.obs)
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            obs, reward, term, trunc, info = self.envs.step(action.numpy())
            done = term | trunc
            final_values = torch.zeros(N)
            if done.any():                                   # V(final observation)
                final = np.stack([info["final_obs"][i] for i in np.flatnonzero(done)])
                final_values[torch.as_tensor(done)] = self.model.value(
                    torch.as_tensor(final, dtype=torch.float32))
            for k, v in (("obs", self.obs), ("actions", action),
                         ("logp", dist.log_prob(action)), ("values", value),
                         ("rewards", torch.as_tensor(reward, dtype=torch.float32)),
                         ("terminated", torch.as_tensor(term)),
                         ("truncated", torch.as_tensor(trunc)),
                         ("final_values", final_values)):
                buf[k].append(v)
            self.steps += N
            self.running += reward
            for i in np.flatnonzero(done):
                self.episodes.append((self.steps, float(self.running[i])))
                self.running[i] = 0.0
            self.obs = torch.as_tensor(obs, dtype=torch.float32)
        r = {k: torch.stack(v) for k, v in buf.items()}
        # V(s_{t+1}) is the next row's value, or V(final obs) where an episode ended.
        next_values = torch.cat([r["values"][1:], self.model.value(self.obs)[None]])
        done = r["terminated"] | r["truncated"]
        next_values = torch.where(done, r.pop("final_values"), next_values)
        return Rollout(next_values=next_values, **r)


@torch.no_grad()
def evaluate(model: ActorCritic, env_id: str = "CartPole-v1", episodes: int = 20,
             seed: int = 10_000, greedy: bool = True) -> float:
    """Mean undiscounted return of ``episodes`` episodes, one per parallel environment,
    with the greedy (argmax) action unless ``greedy=False``."""
    envs = make_envs(env_id, episodes)
    obs, _ = envs.reset(seed=seed)
    total, alive = np.zeros(episodes), np.ones(episodes, dtype=bool)
    while alive.any():
        logits = model.actor(torch.as_tensor(obs, dtype=torch.float32))
        action = logits.argmax(-1) if greedy else torch.distributions.Categorical(
            logits=logits).sample()
        obs, reward, term, trunc, _ = envs.step(action.numpy())
        total += reward * alive                              # count each env's first episode
        alive &= ~(term | trunc)
    envs.close()
    return float(total.mean())


@dataclass
class RLHistory:
    """What a training run saw."""

    episodes: list = field(default_factory=list)   #: (env step, return) of training episodes
    evals: list = field(default_factory=list)      #: (env step, mean greedy return)
    stats: list = field(default_factory=list)      #: per update: dict of losses and diagnostics
    solved_step: int | None = None                 #: env steps when evaluation first hit the target
    solved_seconds: float | None = None            #: wall-clock seconds to that point
    seconds: float = 0.0                           #: wall-clock seconds of the whole run
    eval_seconds: float = 0.0                      #: of which spent in greedy evaluations
    model: ActorCritic | None = None               #: the trained network

    def curve(self, grid: np.ndarray, window: int = 20) -> np.ndarray:
        """Mean of the last ``window`` training-episode returns at each step of ``grid``."""
        steps = np.array([s for s, _ in self.episodes])
        rets = np.array([r for _, r in self.episodes])
        out = np.full(len(grid), np.nan)
        for j, g in enumerate(grid):
            k = np.searchsorted(steps, g, side="right")
            if k > 0:
                out[j] = rets[max(0, k - window):k].mean()
        return out

    def seconds_at(self, grid: np.ndarray) -> np.ndarray:
        """Training seconds (evaluations excluded) when the run had taken ``grid`` env steps,
        interpolated between updates."""
        steps = np.array([0] + [s["step"] for s in self.stats], dtype=float)
        secs = np.array([0.0] + [s["seconds"] for s in self.stats])
        return np.interp(grid, steps, secs)


def maybe_evaluate(hist: RLHistory, model, step: int, t0: float, env_id: str,
                   episodes: int, target: float) -> bool:
    """Evaluate, log, and return True the first time the mean return reaches ``target``.
    The evaluation's own time is added to ``hist.eval_seconds``."""
    t_eval = time.perf_counter()
    score = evaluate(model, env_id, episodes)
    hist.eval_seconds += time.perf_counter() - t_eval
    hist.evals.append((step, score))
    if score >= target and hist.solved_step is None:
        hist.solved_step, hist.solved_seconds = step, time.perf_counter() - t0
        return True
    return False
