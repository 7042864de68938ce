"""PPO for a language model: the policy is the GPT, an episode is one response.

Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
arXiv:1909.08593, Sec. 2.2 and their code (openai/lm-human-preferences,
``train_policy.py``): sample responses from the policy pi (initialised to the pretrained
rho), score them with the reward model r, pay each token the KL penalty
-beta (log pi - log rho) and the last token the score as well (eq. 2), estimate advantages
with a value head and GAE (gamma = 1, lambda = 0.95), and take several epochs of PPO's
clipped steps (Schulman et al. 2017, arXiv:1707.06347); beta is fixed or follows the
adaptive controller towards a target KL. Stiennon et al. (2020) and Ouyang et al. (2022)
use the same loop; Ouyang et al.'s PPO-ptx (their eq. 2) adds a pretraining loss to each
step (``PPOTextConfig.ptx_coef`` and ``train_ppo_text(pretrain_batch=...)``).

The pieces are the course's own: rollouts from :func:`llmcourse.generation.generate` (one
batched, KV-cached call per iteration), GAE and the clipped policy and value losses from
:mod:`llmcourse.rl.core` (the very functions that train CartPole in chapter 21), the
rewards, log-probabilities and KL controllers of :mod:`llmcourse.rlhf.core`.

Shapes: a rollout of B prompts, left-padded to P tokens, with N generated tokens, gives
``sequences`` (B, P + N). Every per-token tensor below is (B, N), one column per generated
token; column n is the action "emit token P + n" taken in the state "the P + n tokens
before it", whose log-probability and value are read at position P + n - 1.
Checked by ``tests/test_rlhf_ppo.py``: the rewards against a loop, the policy at
iteration 0 equal to the reference (KL exactly 0), a few iterations raising the reward of
a trivially learnable labeller, and two runs giving the same logs.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..generation import generate
from ..gpt import GPT
from ..rl.core import categorical_entropy, compute_gae, normalize_advantages, ppo_clip_loss, value_loss
from ..train import progress_bar, set_seed
from .core import AdaptiveKLController, FixedKLController, kl_penalized_rewards, response_logprobs


class PolicyWithValue(nn.Module):
    """The language model and a value head (Linear(n_embd, 1)) on its final hidden states.

    The trunk is shared, as in Ziegler et al.'s code (Stiennon et al. 2020 use a separate
    value network). The head starts at zero: every state's value is 0 at first.
    """

    def __init__(self, lm: GPT):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor):
        """-> (logits (B, L, V), values (B, L)): the value at position t is that of the state
        made of tokens 0..t (before token t + 1 is chosen)."""
        h = self.lm.features(sequences, attention_mask=attention_mask)
        return self.lm.lm_head(h), self.value_head(h).squeeze(-1)


@dataclass
class PPOTextConfig:
    """Hyperparameters of :func:`train_ppo_text` (Ziegler et al.'s names in brackets)."""

    iterations: int = 20            #: rollout-and-update rounds
    batch_size: int = 64            #: prompts (episodes) per rollout [batch_size]
    max_new_tokens: int = 48        #: longest response, in tokens [length]
    temperature: float = 1.0        #: sampling temperature; pi and rho are both compared at it
    eos_id: int | None = None       #: token that ends a response (None: always max_new_tokens)
    epochs: int = 4                 #: PPO passes over each rollout [ppo_epochs]
    minibatch_size: int = 16        #: episodes per gradient step [batch_size / nminibatches]
    lr: float = 3e-5                #: Adam learning rate
    clip_eps: float = 0.2           #: policy clip range [cliprange]
    value_clip: float | None = 0.2  #: value clip range [cliprange_value]
    vf_coef: float = 0.1            #: value-loss weight [vf_coef]
    gamma: float = 1.0              #: discount [gamma]
    lam: float = 0.95               #: GAE lambda [lam]
    max_grad_norm: float = 1.0      #: clip the global gradient norm
    beta: float = 0.1               #: KL coefficient, fixed or initial [init_kl_coef]
    target_kl: float | None = None  #: adaptive beta towards this KL (nats per response); None: fixed
    horizon: int = 10_000           #: adaptive controller's horizon, in episodes [horizon]
    whiten_scores: bool = False     #: normalise each batch's scores to mean 0, std 1 before use
    seed: int = 0                   #: prompts, sampling and minibatch order
    n_samples: int = 3              #: responses kept in the log per iteration
    ptx_coef: float = 0.0           #: PPO-ptx: weight of the pretraining loss in each step (InstructGPT's gamma)


@dataclass
class Rollout:
    """One iteration's batch: what the policy did and what it was paid (per-token tensors (B, N))."""

    sequences: torch.Tensor         #: (B, P + N) prompts (left-padded) and responses
    attention_mask: torch.Tensor    #: (B, P + N) real tokens
    mask: torch.Tensor              #: (B, N) response tokens (end token included)
    logprobs: torch.Tensor          #: (B, N) log pi of each response token, at sampling time
    ref_logprobs: torch.Tensor      #: (B, N) log rho of the same tokens
    values: torch.Tensor            #: (B, N) value of the state before each token (0 off the mask)
    scores: torch.Tensor            #: (B,) reward-model score of each response
    rewards: torch.Tensor           #: (B, N) kl_penalized_rewards
    advantages: torch.Tensor        #: (B, N) GAE advantages (0 off the mask)
    returns: torch.Tensor           #: (B, N) advantages + values
    prompts: list                   #: the prompts as text
    texts: list                     #: the responses as text (end token included)
    seconds: dict = field(default_factory=dict)   #: "generate" and "score" (log-probs, values, rewards) times


@dataclass
class PPOTextHistory:
    """Per iteration: what Ziegler et al. plot and what tells a run is healthy."""

    labeller: list = field(default_factory=list)      #: mean labeller score (the "human" reward)
    score: list = field(default_factory=list)         #: mean reward-model score
    kl: list = field(default_factory=list)            #: mean KL(pi, rho) per response, nats
    beta: list = field(default_factory=list)          #: KL coefficient used this iteration
    reward: list = field(default_factory=list)        #: mean total reward score - beta KL
    clip_fraction: list = field(default_factory=list)
    approx_kl: list = field(default_factory=list)     #: between policies before and after the update
    entropy: list = field(default_factory=list)       #: mean per-token entropy of pi
    length: list = field(default_factory=list)        #: mean response length, tokens
    policy_loss: list = field(default_factory=list)
    value_loss: list = field(default_factory=list)
    samples: list = field(default_factory=list)       #: [(prompt, response, labeller score)] per iteration
    seconds: list = field(default_factory=list)       #: wall-clock seconds of each iteration
    generate_seconds: list = field(default_factory=list)   #: sampling the responses
    score_seconds: list = field(default_factory=list)      #: log-probabilities, values, scores, advantages
    update_seconds: list = field(default_factory=list)     #: the PPO epochs
    tokens: list = field(default_factory=list)        #: response tokens generated per iteration
    ptx_loss: list = field(default_factory=list)      #: mean pretraining loss of the PPO-ptx batches (nan: none)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def policy_outputs(policy: PolicyWithValue, sequences, attention_mask, P: int, temperature: float):
    """(logprobs (B, N), values (B, N), logits of the response steps (B, N, V)) in one forward pass."""
    logits, values = policy(sequences, attention_mask)
    logits = logits[:, P - 1:] / temperature                            # (B, N + 1, V): from position P - 1
    logp = response_logprobs(logits, sequences[:, P - 1:])             # (B, N): tokens P .. P + N - 1
    return logp, values[:, P - 1:-1], logits[:, :-1]


@torch.no_grad()
def rollout(policy: PolicyWithValue, ref: GPT, reward_model, prompts: list, tokenizer, cfg: PPOTextConfig,
            beta: float, generator: torch.Generator) -> Rollout:
    """Sample responses, score them, and compute rewards, advantages and returns."""
    policy.eval()
    t0 = time.perf_counter()
    g = generate(policy.lm, [tokenizer.encode(p) for p in prompts], cfg.max_new_tokens,
                 temperature=cfg.temperature, generator=generator, eos_id=cfg.eos_id)
    t1 = time.perf_counter()
    seq, att, mask = g.sequences, g.attention_mask, g.token_mask
    P = seq.shape[1] - mask.shape[1]
    logp, values, _ = policy_outputs(policy, seq, att, P, cfg.temperature)
    ref_logits, _ = ref(seq, attention_mask=att)
    ref_logp = response_logprobs(ref_logits[:, P - 1:] / cfg.temperature, seq[:, P - 1:])
    scores = reward_model(seq, att).double()
    if cfg.whiten_scores:
        scores = (scores - scores.mean()) / (scores.std() + 1e-8)
    rewards = kl_penalized_rewards(scores.to(logp.dtype), logp, ref_logp, mask, beta)
    values = values.masked_fill(~mask, 0.0)
    # GAE over the response, in time order (N, B): the episode ends after each row's last token
    next_mask = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    adv, ret = compute_gae(rewards.T, values.T, next_values.T, (~next_mask).T, torch.zeros_like(mask).T,
                           cfg.gamma, cfg.lam)
    adv, ret = adv.T.masked_fill(~mask, 0.0), ret.T.masked_fill(~mask, 0.0)
    return Rollout(seq, att, mask, logp, ref_logp, values, scores.float(), rewards, adv, ret,
                   list(prompts), g.texts(tokenizer), {"generate": t1 - t0, "score": time.perf_counter() - t1})


def ppo_text_update(policy: PolicyWithValue, optimizer, ro: Rollout, cfg: PPOTextConfig,
                    generator: torch.Generator, pretrain_batch=None) -> dict:
    """``cfg.epochs`` passes of clipped PPO steps over the rollout, in minibatches of episodes.

    Advantages are whitened over the response tokens of each minibatch (as the course's
    CartPole PPO and Ziegler et al.'s code do); the losses are means over those tokens.
    With ``pretrain_batch`` (a callable returning language-modelling inputs and targets
    ``(x, y)``), each step also adds ``cfg.ptx_coef`` times the policy's loss on a fresh batch
    of them: PPO-ptx, the pretraining term of InstructGPT's eq. 2 (Ouyang et al. 2022).
    Returns the mean of the logged stats.

    The policy stays in eval mode, dropout off: the ratio pi / pi_old compares it with the
    rollout's log-probabilities (taken without dropout), and with dropout on the two differ by
    the dropout noise alone, so the ratio is clipped from the first step (PPO's minibatches
    would then start a third clipped, for the course's GPT with dropout 0.1).
    """
    policy.eval()                                  # no dropout: the ratio is 1 before the first step
    B = ro.sequences.shape[0]
    P = ro.sequences.shape[1] - ro.mask.shape[1]
    logs = []
    for _ in range(cfg.epochs):
        for idx in torch.randperm(B, generator=generator).split(cfg.minibatch_size):
            m = ro.mask[idx]
            logp, values, logits = policy_outputs(policy, ro.sequences[idx], ro.attention_mask[idx], P,
                                                  cfg.temperature)
            adv = normalize_advantages(ro.advantages[idx][m])           # whitened per minibatch
            pg_loss, stats = ppo_clip_loss(logp[m], ro.logprobs[idx][m], adv, cfg.clip_eps)
            v_loss = value_loss(values[m], ro.returns[idx][m], ro.values[idx][m], cfg.value_clip)
            loss = pg_loss + cfg.vf_coef * v_loss
            ptx = {}
            if pretrain_batch is not None:
                x, y = pretrain_batch()
                _, lm_loss = policy.lm(x, y)
                loss = loss + cfg.ptx_coef * lm_loss
                ptx = {"ptx_loss": lm_loss.item()}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                entropy = categorical_entropy(logits[m]).mean().item()
            logs.append(dict(stats, policy_loss=pg_loss.item(), value_loss=v_loss.item(), entropy=entropy, **ptx))
    return {k: sum(d[k] for d in logs) / len(logs) for k in logs[0]}


def train_ppo_text(policy: PolicyWithValue, reward_model, prompts: list, tokenizer, cfg: PPOTextConfig,
                   ref: GPT | None = None, labeller=None, progress: bool = True,
                   pretrain_batch=None) -> PPOTextHistory:
    """Fine-tune ``policy`` in place with PPO against ``reward_model`` (a callable
    ``(sequences, attention_mask) -> (B,)`` scores, such as a :class:`~llmcourse.rlhf.reward.RewardModel`).

    Each iteration draws ``cfg.batch_size`` prompts (strings) from ``prompts``, samples,
    scores and updates. ``ref`` is the reference model rho (default: a frozen copy of the
    policy's language model as it is now). ``labeller(prompts, responses) -> (B,)``, if
    given, scores the same responses for the log: the reward the reward model stands for.
    ``pretrain_batch() -> (x, y)``, if given, makes it PPO-ptx (see :func:`ppo_text_update`;
    draw its batches with a generator of its own, so that the rollouts stay as they were).
    Deterministic for a given ``cfg.seed`` (on one thread).
    """
    set_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if ref is None:
        ref = copy.deepcopy(policy.lm)
    ref.eval().requires_grad_(False)
    if isinstance(reward_model, nn.Module):
        reward_model.eval()
    kl_ctl = (FixedKLController(cfg.beta) if cfg.target_kl is None
              else AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.horizon))
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)
    hist = PPOTextHistory()
    bar = progress_bar(range(cfg.iterations), progress, desc="PPO", mininterval=1.0)
    for _ in bar:
        t0 = time.perf_counter()
        batch = [prompts[i] for i in torch.randint(len(prompts), (cfg.batch_size,), generator=gen).tolist()]
        beta = kl_ctl.value
        ro = rollout(policy, ref, reward_model, batch, tokenizer, cfg, beta, gen)
        t1 = time.perf_counter()
        stats = ppo_text_update(policy, optimizer, ro, cfg, gen, pretrain_batch)
        t2 = time.perf_counter()
        kl = ((ro.logprobs - ro.ref_logprobs) * ro.mask).sum(-1).mean().item()
        kl_ctl.update(kl, cfg.batch_size)
        human = labeller(ro.prompts, ro.texts).tolist() if labeller is not None else [None] * len(batch)
        hist.labeller.append(sum(human) / len(human) if labeller is not None else float("nan"))
        hist.score.append(ro.scores.mean().item())
        hist.kl.append(kl)
        hist.beta.append(beta)
        hist.reward.append(ro.rewards.sum(-1).mean().item())
        for key in ("clip_fraction", "approx_kl", "entropy", "policy_loss", "value_loss"):
            getattr(hist, key).append(stats[key])
        hist.length.append(ro.mask.sum(-1).double().mean().item())
        hist.ptx_loss.append(stats.get("ptx_loss", float("nan")))
        hist.samples.append([(p, t, h) for p, t, h in
                             zip(ro.prompts[:cfg.n_samples], ro.texts[:cfg.n_samples], human[:cfg.n_samples])])
        hist.tokens.append(int(ro.mask.sum()))
        hist.generate_seconds.append(ro.seconds["generate"])
        hist.score_seconds.append(ro.seconds["score"])
        hist.update_seconds.append(t2 - t1)
        hist.seconds.append(time.perf_counter() - t0)
        bar.set_postfix(labeller=f"{hist.labeller[-1]:.2f}", score=f"{hist.score[-1]:.2f}", kl=f"{kl:.2f}",
                        beta=f"{beta:.3f}")
    return hist


def optimal_frontier(rewards: torch.Tensor, betas) -> tuple[list[float], list[float]]:
    """The best reward for each KL budget, estimated by sampling (Ziegler et al., Fig. 3).

    For a reward r and a coefficient beta the policy that maximises E[r] - beta KL(pi, rho)
    is pi*(y) = rho(y) exp(r(y) / beta) / Z. ``rewards`` (P, N) are the rewards of N samples
    of rho for each of P prompts; reweighting them by exp(r / beta) (self-normalised) gives,
    per beta, the mean over prompts of E_pi*[r] and of KL(pi*, rho) = sum_i w_i log(N w_i).
    The estimate is good while pi* keeps many samples: its KL cannot exceed log N.
    Returns ``(kls, expected rewards)``, one per beta.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64)
    N = r.shape[1]
    kls, values = [], []
    for beta in betas:
        logw = torch.log_softmax(r / beta, dim=1)                       # (P, N) self-normalised weights
        w = logw.exp()
        kls.append(float((w * (logw + math.log(N))).sum(1).mean()))
        values.append(float((w * r).sum(1).mean()))
    return kls, values
