"""The formulas of RLHF on a language model: the contract of the ``rlhf`` assignment.

- Log-probabilities of the tokens of a sequence: the policy, the reference model and
  PPO's ratio all read them from one forward pass (shifted by one position).
- The Bradley-Terry loss of a reward model on pairwise comparisons: Ziegler, Stiennon,
  Wu, Brown, Radford, Amodei, Christiano, Irving (2019), "Fine-Tuning Language Models
  from Human Preferences", arXiv:1909.08593, eq. 1 with two samples; Stiennon et al.
  (2020), arXiv:2009.01325, eq. 1.
- The K-wise ranking loss, all K(K-1)/2 pairs of a prompt in one batch element: Ouyang
  et al. (2022), "Training language models to follow instructions with human feedback",
  arXiv:2203.02155, Sec. 3.5, eq. 1.
- The KL-penalised reward R = r - beta log(pi / rho), paid per token with the score at
  the last token: Ziegler et al. (2019), Sec. 2.2 (eq. 2); per token as in their code
  (openai/lm-human-preferences, ``train_policy.py``) and in Ouyang et al. (2022), eq. 2.
- The adaptive KL controller: Ziegler et al. (2019), Sec. 2.2,
  beta_{t+1} = beta_t (1 + K_beta e_t), e_t = clip(KL_t / KL_target - 1, -0.2, 0.2), in
  the form of their code (K_beta = n_steps / horizon).

Checked by ``tests/test_rlhf_core.py`` against loops and hand computations, and by the
hidden tests of the ``rlhf`` assignment (``llmcourse/grading/checks/rlhf.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def response_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits computed on (B, T) ids -> (B, T-1) log-probabilities of the next tokens.

    ``out[b, t] = log_softmax(logits[b, t])[input_ids[b, t + 1]]``: position t predicts
    token t + 1. ``log_softmax`` (a log-sum-exp) keeps it finite for any logits.
    """
    logp = F.log_softmax(logits[:, :-1], dim=-1)                       # (B, T-1, V)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)         # (B, T-1)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected): the Bradley-Terry negative log-likelihood
    that the labeller preferred each chosen response. ``logsigmoid`` keeps margins of
    +-100 finite with the right gradient (``log(sigmoid(-100))`` underflows in float32)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def kwise_ranking_loss(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """InstructGPT's eq. 1: ``rewards`` (B, K) of K responses to each of B prompts, ``ranks``
    (B, K) from the labeller (0 = best, distinct within a row). The mean over prompts of the
    mean over the K(K-1)/2 pairs of -log sigmoid(r_better - r_worse): every pair of a prompt
    in one batch element, each response's reward computed once."""
    K = rewards.shape[-1]
    margin = rewards[:, :, None] - rewards[:, None, :]                 # (B, K, K): r_i - r_j
    better = ranks[:, :, None] < ranks[:, None, :]                     # i is ranked above j
    nll = torch.where(better, -F.logsigmoid(margin), torch.zeros_like(margin))
    return (nll.sum(dim=(1, 2)) / (K * (K - 1) / 2)).mean()


def last_true(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool -> (B,) index of each row's last True (T - 1 - argmax of the reversed row)."""
    T = mask.shape[-1]
    return T - 1 - mask.flip(-1).to(torch.uint8).argmax(-1)


@torch.no_grad()
def kl_penalized_rewards(score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards (B, T): ``-beta * (logprobs - ref_logprobs)`` at the response tokens
    (``mask`` True), 0 elsewhere, and the reward model's ``score`` (B,) added at each row's
    last response token. A new tensor without gradient; the inputs are left as they were.

    Summed over a row, this is Ziegler et al.'s R(x, y) = r(x, y) - beta log(pi(y|x) / rho(y|x)):
    the penalty is paid token by token, the score once, when the response is complete.
    """
    rewards = torch.where(mask, -beta * (logprobs - ref_logprobs), torch.zeros_like(logprobs))
    rows = torch.nonzero(mask.any(-1)).squeeze(-1)                     # rows with a response
    rewards[rows, last_true(mask)[rows]] += score[rows].to(rewards.dtype)
    return rewards


class AdaptiveKLController:
    """Ziegler et al.'s adaptive KL coefficient: ``value`` (beta) grows while the policy's KL
    from the reference is above ``target_kl`` and shrinks while it is below, by at most
    20% x n_steps / horizon per update."""

    def __init__(self, init_beta: float, target_kl: float, horizon: float):
        self.value = float(init_beta)
        self.target_kl = float(target_kl)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """One update after ``n_steps`` episodes whose mean KL was ``current_kl``; returns beta."""
        error = min(max(float(current_kl) / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


class FixedKLController:
    """A constant beta with the same interface as :class:`AdaptiveKLController`."""

    def __init__(self, beta: float):
        self.value = float(beta)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value
