"""A reward model: the GPT trunk with a scalar head, trained on comparisons or rankings.

- Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
  arXiv:1909.08593, Sec. 2.1-2.2: the reward model starts from the pretrained language
  model with a new linear head on the final embedding; its output is normalised to mean 0
  and variance 1 on samples of the pretrained policy.
- Ouyang et al. (2022), "Training language models to follow instructions with human
  feedback", arXiv:2203.02155, Sec. 3.5, eq. 1: the scalar is read at the last token; K
  responses to a prompt are ranked, and all K(K-1)/2 pairs of a prompt form one batch
  element, so each response goes through the model once per step (and the pairs of one
  prompt, highly correlated, cannot over-fit it one by one); one epoch over the data.

The losses are :func:`~llmcourse.rlhf.core.bradley_terry_loss` (pairs) and
:func:`~llmcourse.rlhf.core.kwise_ranking_loss` (rankings). Checked by
``tests/test_rlhf.py``: the score is read at each row's last real token (padding and the
future change nothing), training lowers the loss, accuracy against a loop.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..gpt import GPT
from ..train import TrainConfig, make_optimizer, progress_bar, set_seed
from .core import bradley_terry_loss, kwise_ranking_loss, last_true


class RewardModel(nn.Module):
    """A copy of a GPT's trunk and ``head``: Linear(n_embd, 1), read at the last real token."""

    def __init__(self, lm: GPT):
        super().__init__()
        self.trunk = copy.deepcopy(lm)
        n = lm.config.n_embd
        self.head = nn.Linear(n, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (n + 1) ** 0.5)   # as Ziegler et al.'s code
        nn.init.zeros_(self.head.bias)

    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and (B, L) bool mask of real tokens -> (B,) scores at each row's last real token.

        Left padding (prompts from :func:`llmcourse.generation.generate`) and right padding
        (after a response) are both masked out and change nothing.
        """
        h = self.trunk.features(sequences, attention_mask=attention_mask)      # (B, L, C)
        last = last_true(attention_mask)                                         # (B,)
        return self.head(h[torch.arange(len(last)), last]).squeeze(-1)          # (B,)

    @torch.no_grad()
    def normalize_(self, sequences: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 64) -> None:
        """Rescale the head so that the scores of these samples have mean 0 and std 1 (Ziegler
        et al., Sec. 2.2: normalised on samples of the pretrained policy)."""
        s = score_batches(self, sequences, attention_mask, batch_size)
        mean, std = s.mean(), s.std().clamp_min(1e-8)
        self.head.weight /= std
        self.head.bias.sub_(mean).div_(std)


@torch.no_grad()
def score_batches(rm: RewardModel, sequences: torch.Tensor, attention_mask: torch.Tensor,
                  batch_size: int = 64) -> torch.Tensor:
    """Scores of many sequences, ``batch_size`` rows at a time, in eval mode."""
    was_training = rm.training
    rm.eval()
    out = torch.cat([rm(sequences[i:i + batch_size], attention_mask[i:i + batch_size])
                     for i in range(0, len(sequences), batch_size)])
    rm.train(was_training)
    return out


# ----------------------------------------------------------------------------- data


def join(prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.as_tensor(prompt, dtype=torch.long), torch.as_tensor(response, dtype=torch.long)])


def right_pad(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D id tensors -> (ids (B, L), mask (B, L) bool), padded on the right."""
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, True
    return ids, mask


@dataclass
class Rankings:
    """K responses to each of N prompts and the labeller's ranks (N, K), 0 = best.

    K = 2 is a data set of pairwise comparisons: the response ranked 0 was chosen.
    ``prompts[i]`` and ``responses[i][k]`` are 1-D token id tensors.
    """

    prompts: list
    responses: list
    ranks: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def K(self) -> int:
        return self.ranks.shape[1]

    def subset(self, index) -> "Rankings":
        index = list(index)
        return Rankings([self.prompts[i] for i in index], [self.responses[i] for i in index], self.ranks[index])

    def batch(self, index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (B*K, L), mask (B*K, L), ranks (B, K)) for the prompts at ``index``: prompt i's
        K responses are rows i*K .. i*K + K - 1."""
        index = list(index)
        rows = [join(self.prompts[i], r) for i in index for r in self.responses[i]]
        ids, mask = right_pad(rows)
        return ids, mask, self.ranks[index]


def rm_config(**overrides) -> TrainConfig:
    """Reward-model training defaults: one epoch (``max_iters`` is set from the data), batch 16 prompts."""
    base = dict(max_iters=0, batch_size=16, lr=3e-4, min_lr=3e-5, warmup_iters=10, weight_decay=0.0,
                seed=0)
    return TrainConfig(**{**base, **overrides})


@dataclass
class RewardHistory:
    """Loss per step; accuracy on held-out data per evaluation."""

    steps: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    seconds: float = 0.0


def train_reward_model(rm: RewardModel, data: Rankings, cfg: TrainConfig, loss: str = "rankings",
                       epochs: int = 1, val: Rankings | None = None, eval_every: int = 0,
                       progress: bool = True) -> RewardHistory:
    """Train ``rm`` in place on ``data`` for ``epochs`` passes (shuffled by ``cfg.seed``).

    ``loss="rankings"``: InstructGPT's eq. 1, all K(K-1)/2 pairs of a prompt in one batch
    element (:func:`kwise_ranking_loss`). ``loss="pairs"`` (K = 2 only): Bradley-Terry on
    (chosen, rejected) (:func:`bradley_terry_loss`); for K = 2 the two are the same number.
    AdamW (no decay on biases and norms), linear warm-up then cosine decay, gradient clipping,
    as the course's training loop. ``val``: held-out accuracy every ``eval_every`` steps and at the end.
    """
    from ..train import cosine_lr

    if loss not in ("rankings", "pairs"):
        raise ValueError(f"loss must be 'rankings' or 'pairs', not {loss!r}")
    if loss == "pairs" and data.K != 2:
        raise ValueError(f"loss='pairs' needs K = 2 responses per prompt, these have K = {data.K}")
    gen = set_seed(cfg.seed)
    order = torch.cat([torch.randperm(len(data), generator=gen) for _ in range(epochs)]).tolist()
    steps = max(1, -(-len(order) // cfg.batch_size))
    opt = make_optimizer(rm, cfg)
    params = [p for group in opt.param_groups for p in group["params"]]
    hist = RewardHistory()
    t0 = time.perf_counter()
    rm.train()
    for step in progress_bar(range(steps), progress, desc="reward model", mininterval=1.0):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, steps)
        ids, mask, ranks = data.batch(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
        scores = rm(ids, mask).view(ranks.shape)                                 # (B, K)
        if loss == "pairs":
            chosen = ranks.argmin(-1)
            rows = torch.arange(len(ranks))
            value = bradley_terry_loss(scores[rows, chosen], scores[rows, 1 - chosen])
        else:
            value = kwise_ranking_loss(scores, ranks)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        opt.step()
        hist.steps.append(step)
        hist.loss.append(value.item())
        if val is not None and ((eval_every and (step + 1) % eval_every == 0) or step == steps - 1):
            hist.eval_steps.append(step + 1)
            hist.accuracy.append(ranking_accuracy(rm, val))
            rm.train()
    hist.seconds = time.perf_counter() - t0
    rm.eval()
    return hist


@torch.no_grad()
def ranking_scores(rm: RewardModel, data: Rankings, batch_size: int = 32) -> torch.Tensor:
    """(N, K) scores of every response of ``data``."""
    was_training = rm.training
    rm.eval()
    out = []
    for start in range(0, len(data), batch_size):
        ids, mask, ranks = data.batch(range(start, min(start + batch_size, len(data))))
        out.append(rm(ids, mask).view(ranks.shape))
    rm.train(was_training)
    return torch.cat(out)


def pair_accuracy(scores: torch.Tensor, ranks: torch.Tensor) -> float:
    """Share of the pairs (i, j) of each row, i ranked above j, with scores[i] > scores[j];
    a tie counts one half."""
    better = ranks[:, :, None] < ranks[:, None, :]
    diff = scores[:, :, None] - scores[:, None, :]
    right = (diff > 0).double() + 0.5 * (diff == 0).double()
    return float(right[better].mean())


def ranking_accuracy(rm: RewardModel, data: Rankings, batch_size: int = 32) -> float:
    """Held-out comparison accuracy: the share of ranked pairs the reward model orders as the labeller did."""
    return pair_accuracy(ranking_scores(rm, data, batch_size), data.ranks)


# ----------------------------------------------------------------------------- collecting comparisons


@torch.no_grad()
def sample_responses(model: GPT, tokenizer, prompts: list[str], K: int, max_new_tokens: int,
                     temperature: float, generator: torch.Generator, eos_id=None,
                     batch_size: int = 256) -> list[list[torch.Tensor]]:
    """K sampled responses to each prompt (1-D token tensors, end token included, padding not),
    from :func:`llmcourse.generation.generate`, ``batch_size`` sequences per call."""
    from ..generation import generate

    flat = [tokenizer.encode(p) for p in prompts for _ in range(K)]
    out: list[torch.Tensor] = []
    for start in range(0, len(flat), batch_size):
        g = generate(model, flat[start:start + batch_size], max_new_tokens, temperature=temperature,
                     generator=generator, eos_id=eos_id)
        out += [row[:n].clone() for row, n in zip(g.tokens, g.lengths.tolist())]
    return [out[i * K:(i + 1) * K] for i in range(len(prompts))]


def collect_rankings(model: GPT, tokenizer, prompts: list[str], labeller, K: int, max_new_tokens: int,
                     temperature: float, generator: torch.Generator, eos_id=None,
                     batch_size: int = 256) -> tuple[Rankings, torch.Tensor]:
    """Sample K responses to each prompt and have ``labeller`` rank them (with its noise):
    ``(Rankings, noiseless scores (N, K))``."""
    responses = sample_responses(model, tokenizer, prompts, K, max_new_tokens, temperature, generator,
                                 eos_id, batch_size)
    texts = [[tokenizer.decode(r) for r in rs] for rs in responses]
    scores = labeller.score([p for p in prompts for _ in range(K)],
                            [t for ts in texts for t in ts]).view(len(prompts), K)
    from .labeller import sample_ranks

    ranks = sample_ranks(scores, labeller.temperature, generator)
    return Rankings([tokenizer.encode(p) for p in prompts], responses, ranks), scores


def load_reward_model(name: str, lm: GPT) -> RewardModel:
    """A reward model shipped in ``llmcourse/data`` (float16 weights) on the trunk shape of ``lm``.

    Raises ``ValueError`` when the file was trained on a GPT of another shape: the file then
    needs to be made again by its script (the pretrained checkpoint has changed).
    """
    from dataclasses import asdict

    from ..data import data_path

    with data_path(name).open("rb") as f:
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
    if ckpt["config"] != asdict(lm.config):
        raise ValueError(f"{name} was trained on a GPT with {ckpt['config']}, not {asdict(lm.config)}: rerun the "
                         "script that makes it (scripts/ch22_ziegler_runs.py for ch22_reward_model.pt)")
    rm = RewardModel(lm)
    rm.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    return rm.eval()
