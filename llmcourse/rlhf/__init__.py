"""RLHF on the course's own language model (chapters 17, 22, 23, 24).

- :mod:`llmcourse.rlhf.core`: log-probabilities of responses, the Bradley-Terry and K-wise
  ranking losses, KL-penalised per-token rewards, the KL controllers (the ``rlhf``
  assignment's contract).
- :mod:`llmcourse.rlhf.instructions`: instruction data made from the plays, its prompt
  format and end-of-response marker, exact correctness.
- :mod:`llmcourse.rlhf.sft`: supervised fine-tuning, the loss on response tokens only.
- :mod:`llmcourse.rlhf.labeller`: transparent labellers with Bradley-Terry noise.
- :mod:`llmcourse.rlhf.reward`: the reward model, trained on pairs or K-wise rankings.
- :mod:`llmcourse.rlhf.ppo`: PPO for a language model, with the KL penalty to a reference.
- :mod:`llmcourse.rlhf.summaries`: chapter 23's summarisation task and its labeller.
- :mod:`llmcourse.rlhf.pipeline`: the InstructGPT pipeline in one command (chapter 24):
  ``python -m llmcourse.rlhf.pipeline --out DIR``.
"""
from .core import (AdaptiveKLController, FixedKLController, bradley_terry_loss, kl_penalized_rewards,
                   kwise_ranking_loss, response_logprobs)
from .labeller import InstructionLabeller, Labeller, PlainWordsLabeller, sample_preferences, sample_ranks
from .ppo import PolicyWithValue, PPOTextConfig, PPOTextHistory, train_ppo_text
from .reward import RewardModel, Rankings, ranking_accuracy, rm_config, train_reward_model
from .sft import SFTData, sft_config, train_sft

__all__ = [
    "AdaptiveKLController", "FixedKLController", "bradley_terry_loss", "kl_penalized_rewards",
    "kwise_ranking_loss", "response_logprobs", "InstructionLabeller", "Labeller", "PlainWordsLabeller",
    "sample_preferences", "sample_ranks", "PolicyWithValue", "PPOTextConfig", "PPOTextHistory",
    "train_ppo_text", "RewardModel", "Rankings", "ranking_accuracy", "rm_config", "train_reward_model",
    "SFTData", "sft_config", "train_sft",
]
