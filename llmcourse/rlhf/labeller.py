"""Labellers: transparent scoring functions standing in for the human judges of RLHF.

Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
arXiv:1909.08593, Sec. 3.1.1, first studied their method against a *known* reward, a
"mock sentiment" classifier, before asking people; this module does the same with rules a
reader can check. A labeller gives each response a score; people are not that consistent,
so its comparisons are sampled from the Bradley-Terry model (Bradley and Terry 1952),

    P(a preferred to b) = sigmoid((s_a - s_b) / temperature),

and its rankings of K responses from the Plackett-Luce model, Bradley-Terry's extension
to K items (sort the scores over the temperature plus Gumbel noise). ``temperature`` 0 is
a perfectly consistent labeller (ties broken at random); a larger one flips more labels.
The reward model therefore learns from noisy labels, as in the papers, and its accuracy is
measured both against the noisy labels and against the noiseless scores.

- :class:`PlainWordsLabeller` prefers continuations in plain words (chapter 22): its score
  is minus the mean number of letters per word, the word-length term of readability
  formulas such as Flesch's reading ease. It stands in for a reader who asks for plain
  English, a style preference like the paper's "positive sentiment" and "physically
  descriptive" tasks, and it is dense (every response gets its own score) so that a small
  reward model can learn it from a few thousand comparisons. (A sentiment word list, the
  first choice, gave about 60% of the pretrained model's continuations a score of 0, too
  sparse for our reward models to learn from a thousand prompts in trials.) Like the paper's mock-sentiment classifier it says nothing about fluency:
  a string of one-letter words would please it, which is what the KL penalty prevents.
- :class:`InstructionLabeller` prefers responses that follow the instruction (chapters 17
  and 24): the similarity of the answer to the correct one, less a penalty when the end
  marker never comes.
"""
from __future__ import annotations

import re
from difflib import SequenceMatcher

import torch

from . import instructions as I


def preference_probability(score_a, score_b, temperature: float) -> torch.Tensor:
    """Bradley-Terry: P(a preferred to b) = sigmoid((s_a - s_b) / T); 0.5 at a tie, a step for T = 0."""
    diff = torch.as_tensor(score_a, dtype=torch.float64) - torch.as_tensor(score_b, dtype=torch.float64)
    if temperature == 0:
        return 0.5 + 0.5 * torch.sign(diff)
    return torch.sigmoid(diff / temperature)


def sample_preferences(score_a, score_b, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """(B,) bool: True where the labeller prefers a, each drawn from :func:`preference_probability`."""
    p = preference_probability(score_a, score_b, temperature)
    return torch.rand(p.shape, generator=generator, dtype=torch.float64) < p


def sample_ranks(scores, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """(B, K) scores -> (B, K) long ranks (0 = best) from the Plackett-Luce model: sort by
    ``scores / T + Gumbel noise`` (for K = 2 exactly Bradley-Terry). ``T = 0``: sort by score,
    ties in random order."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    u = torch.rand(s.shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    gumbel = -torch.log(-torch.log(u))
    if temperature == 0:
        order = torch.argsort(gumbel, dim=-1)                     # random order first ...
        best_first = torch.gather(order, -1, torch.sort(torch.gather(s, -1, order), dim=-1,
                                                        descending=True, stable=True).indices)
    else:                                                         # ... then by score (stable)
        best_first = torch.argsort(s / temperature + gumbel, dim=-1, descending=True)
    return torch.argsort(best_first, dim=-1)                      # position in the order = rank


class Labeller:
    """Scores (prompt, response) pairs; compares and ranks them with Bradley-Terry noise."""

    temperature: float = 1.0

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(B,) float64 scores: higher is preferred."""
        raise NotImplementedError

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.score(prompts, responses)

    def compare(self, prompts, responses_a, responses_b, generator: torch.Generator) -> torch.Tensor:
        """(B,) bool: True where response a is preferred (a noisy judgement)."""
        return sample_preferences(self.score(prompts, responses_a), self.score(prompts, responses_b),
                                  self.temperature, generator)

    def win_rate(self, prompts, responses_a, responses_b) -> float:
        """How often the labeller would prefer a to b, on average: the mean of the Bradley-Terry
        probabilities (exact, no sampling; a tie counts one half)."""
        return float(preference_probability(self.score(prompts, responses_a), self.score(prompts, responses_b),
                                            self.temperature).mean())

    def rank(self, prompts, responses, generator: torch.Generator) -> torch.Tensor:
        """``responses``: B lists of K responses to each prompt -> (B, K) ranks, 0 = best (noisy)."""
        K = len(responses[0])
        flat = self.score([p for p in prompts for _ in range(K)], [r for rs in responses for r in rs])
        return sample_ranks(flat.view(len(prompts), K), self.temperature, generator)


WORD = re.compile(r"[A-Za-z]+")
NO_WORDS = 10.0          #: letters per word charged to a response without any word


class PlainWordsLabeller(Labeller):
    """Prefers plain words: the score is minus the mean number of letters per word.

    "I go, I go; look how I go" (2.0 letters a word) beats "Unquestionably, notwithstanding"
    (14.5). A response without any word scores as if its words had :data:`NO_WORDS` letters.
    """

    def __init__(self, temperature: float = 0.5):
        self.temperature = temperature

    @staticmethod
    def score_text(text: str) -> float:
        words = WORD.findall(text)
        return -(sum(map(len, words)) / len(words) if words else NO_WORDS)

    def score(self, prompts, responses) -> torch.Tensor:
        return torch.tensor([self.score_text(r) for r in responses], dtype=torch.float64)


class InstructionLabeller(Labeller):
    """How well a response follows its instruction (prompts in :data:`instructions.PROMPT_FORMAT`).

    Score: the similarity (``difflib`` ratio, 0 to 1) of the text before the end marker to
    the correct answer, minus 0.5 when the marker never comes; 1 exactly for a correct
    answer that ends properly. The correct answer is recomputed from the prompt itself.
    """

    def __init__(self, temperature: float = 0.1):
        self.temperature = temperature

    @staticmethod
    def score_one(example: "I.Example", response: str) -> float:
        head, ended = I.answer_of(response)
        return SequenceMatcher(None, head, example.answer, autojunk=False).ratio() - (0.0 if ended else 0.5)

    def score(self, prompts, responses) -> torch.Tensor:
        return torch.tensor([self.score_one(I.parse_prompt(p), r) for p, r in zip(prompts, responses)],
                            dtype=torch.float64)
