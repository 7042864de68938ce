"""A summarisation task made from the plays, and a labeller who judges summaries by rule.

Stiennon, Ouyang, Wu, Ziegler, Lowe, Voss, Radford, Amodei, Christiano (2020), "Learning
to summarize from human feedback", arXiv:2009.01325: Reddit posts (TL;DR) in, one-line
summaries out; supervised fine-tuning on reference summaries, a reward model from human
comparisons, then PPO against it with a KL penalty to the SFT policy (their Sec. 3-4).
Their Fig. 5: optimised too hard, the reward model's score keeps rising while the people's
preference peaks and falls.

Here, in 128 characters of context:

- **a passage**: one line of a speech and its speaker, ``"KING RICHARD: I am in health, I
  breathe, and see thee ill."`` (at most :data:`MAX_PASSAGE` characters), from the first 90%
  of the shipped text only (as :mod:`~llmcourse.rlhf.instructions`);
- **a summary**: the speaker's name and the passage's content words, telegraphic,
  ``"King Richard: health breathe see ill}"``, ending with the end marker ``END``;
- **reference summaries** by rule: the name, then the line's content words in order for as
  long as the summary stays within :data:`BUDGET` characters (a content word has at least
  three letters and is not one of the corpus's :data:`N_FUNCTION` most frequent words:
  rarity decides what is content);
- **the labeller** (:class:`SummaryLabeller`), whose score says what it rewards:
  ``coverage - length_penalty * (characters past the budget) - invented_penalty * (invented
  words) - no_end_penalty * (no end marker)``. Coverage is the share of the passage's key
  content, the speaker's name and the line's content words, that the summary names.

(A first design asked for the three rarest content words in any order; the SFT policy of a
few hundred steps named almost none of them. Asked for the content words in order, it still
names the speaker and writes words of its own: copying from the context is what the course's
small GPT learns slowest, see chapter 17's ``repeat``. The shipped runs of chapter 23 show it.)

The trade-off designed in for a reward model to get wrong: more of the passage's words
raise coverage (or cost nothing) while the summary is within :data:`BUDGET` characters, and
past it a word costs more than it can earn. (The shipped runs found another: shorter
summaries invent fewer words, until the name itself goes.) Checked by ``tests/test_rlhf_summaries.py``.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import torch

from .instructions import END
from .labeller import Labeller

PROMPT_FORMAT = "Passage: {passage}\nSummary: "
MAX_PASSAGE = 68            #: characters of a passage: its prompt (87) and 41 summary tokens fit 128
MAX_NEW_TOKENS = 41         #: the longest summary sampled, end marker included
BUDGET = 34                 #: characters a summary may have before the end marker, free of charge
N_KEY = 3                   #: content words a passage has at least
N_FUNCTION = 100            #: the corpus's most frequent words are function words, not content
TRAIN_FRACTION = 0.9        #: passages come from this first share of the text; the rest stays held out

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
SPEAKER = re.compile(r"^([A-Z][A-Z' ]+)\.$")


def words(text: str) -> list[str]:
    """Lowercase words of ``text``, apostrophes inside kept: ``"Dar'st thou"`` -> ``["dar'st", "thou"]``."""
    return WORD.findall(text.lower())


@lru_cache(maxsize=1)
def _corpus() -> tuple[str, str]:
    from ..data import load_shakespeare

    full = load_shakespeare()
    return full[: int(TRAIN_FRACTION * len(full))], "".join(sorted(set(full)))


@lru_cache(maxsize=1)
def word_counts() -> Counter:
    """How often each word occurs in the first 90% of the shipped text."""
    return Counter(words(_corpus()[0]))


@lru_cache(maxsize=1)
def function_words() -> frozenset:
    """The corpus's :data:`N_FUNCTION` most frequent words (``the``, ``and``, ``thou``, ``king``, ...)."""
    return frozenset(w for w, _ in word_counts().most_common(N_FUNCTION))


def content_words(line: str) -> list[str]:
    """Distinct words of ``line`` (as it spells them) with three letters or more that are not
    function words, in order: ``"I am in health, I breathe"`` -> ``["health", "breathe"]``."""
    out, seen, stop = [], set(), function_words()
    for m in WORD.finditer(line.lower()):
        w = m.group()
        if len(w.replace("'", "")) >= 3 and w not in stop and w not in seen:
            seen.add(w)
            out.append(line[m.start():m.end()])
    return out


@dataclass(frozen=True)
class Passage:
    """One line of a speech and its speaker (as the plays spell it: ``"KING RICHARD"``)."""

    speaker: str
    line: str

    @property
    def text(self) -> str:
        return f"{self.speaker}: {self.line}"

    @property
    def prompt(self) -> str:
        return PROMPT_FORMAT.format(passage=self.text)

    @property
    def name(self) -> str:
        """The speaker's name as a summary writes it: ``"King Richard"``."""
        return " ".join(w.capitalize() for w in self.speaker.split())

    def key(self) -> list[str]:
        """What the labeller looks for besides the name: the line's content words, lowercase."""
        return [w.lower() for w in content_words(self.line)]

    def reference(self) -> str:
        """The reference summary (without the end marker): the name, then the line's content
        words in order for as long as the summary stays within :data:`BUDGET` characters."""
        out = f"{self.name}:"
        for w in content_words(self.line):
            if len(out) + 1 + len(w) > BUDGET:
                break
            out += " " + w
        return out

    @property
    def response(self) -> str:
        """The SFT demonstration: the reference summary and the end marker."""
        return self.reference() + END


_PROMPT = re.compile(r"Passage: ([A-Z][A-Z' ]+): ([^\n]+)\nSummary: ")


def parse_prompt(prompt: str) -> Passage:
    """The :class:`Passage` of a prompt in :data:`PROMPT_FORMAT`; ``ValueError`` otherwise."""
    m = _PROMPT.fullmatch(prompt)
    if m is None:
        raise ValueError(f"not a summarisation prompt: {prompt!r}")
    return Passage(m.group(1), m.group(2))


# ----------------------------------------------------------------------------- the data


def candidate_passages(text: str | None = None, vocab: str | None = None) -> list[Passage]:
    """Every distinct (speaker, line of their speech) of ``text`` (default: the first 90% of the
    shipped plays) that fits :data:`MAX_PASSAGE`, uses only characters of ``vocab`` (no end
    marker, no brackets), has :data:`N_KEY` content words and a reference within the budget."""
    if text is None:
        text, vocab = _corpus()
    allowed = set(vocab or text) - {END, "[", "]", "\n"}
    seen, out = set(), []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        m = SPEAKER.match(lines[0].strip())
        if m is None or m.group(1).startswith(("ACT", "SCENE")):
            continue
        for raw in lines[1:]:
            p = Passage(m.group(1), raw.strip())
            if (p.line and len(p.text) <= MAX_PASSAGE and set(p.text) <= allowed and p.text not in seen
                    and len(content_words(p.line)) >= N_KEY and len(p.reference()) > len(p.name) + 1):
                seen.add(p.text)
                out.append(p)
    return out


@lru_cache(maxsize=4)
def build(n_eval: int = 200, seed: int = 0) -> tuple[tuple[Passage, ...], tuple[Passage, ...]]:
    """``(train, eval)``: the candidate passages shuffled with ``seed``; the first ``n_eval``
    are held out, the rest train (SFT, comparisons and PPO). Deterministic; built in about a second."""
    ps = candidate_passages()
    random.Random(seed).shuffle(ps)
    return tuple(ps[n_eval:]), tuple(ps[:n_eval])


# ----------------------------------------------------------------------------- the labeller


@dataclass(frozen=True)
class Terms:
    """What the labeller sees in one summary."""

    coverage: float         #: share of [the name, the salient words] the summary names, 0 to 1
    over_budget: int        #: characters before the end marker past :data:`BUDGET`
    invented: int           #: words of the summary that are not in the passage (each occurrence)
    ended: bool             #: the end marker came


class SummaryLabeller(Labeller):
    """Scores summaries of passages (prompts in :data:`PROMPT_FORMAT`) by stated rules:

    ``score = coverage - length_penalty * over_budget - invented_penalty * invented
    - no_end_penalty * (not ended)``, from :meth:`terms`. A reference-like summary scores up
    to 1; a word wholly past the budget costs more (at least 4 characters with its space,
    0.28) than a content word can earn (at most 1/4: the name and three content words). Comparisons carry Bradley-Terry noise at ``temperature``.
    """

    def __init__(self, temperature: float = 0.15, budget: int = BUDGET, length_penalty: float = 0.07,
                 invented_penalty: float = 0.25, no_end_penalty: float = 1.0):
        self.temperature, self.budget = temperature, budget
        self.length_penalty, self.invented_penalty, self.no_end_penalty = length_penalty, invented_penalty, no_end_penalty

    def terms(self, passage: Passage, response: str) -> Terms:
        head, marker, _ = response.partition(END)
        said, known = words(head), set(words(passage.text))
        items = [all(w in said for w in words(passage.name))] + [w in said for w in passage.key()]
        return Terms(sum(items) / len(items), max(0, len(head) - self.budget),
                     sum(w not in known for w in said), bool(marker))

    def score_one(self, passage: Passage, response: str) -> float:
        t = self.terms(passage, response)
        return (t.coverage - self.length_penalty * t.over_budget - self.invented_penalty * t.invented
                - self.no_end_penalty * (not t.ended))

    def score(self, prompts, responses) -> torch.Tensor:
        return torch.tensor([self.score_one(parse_prompt(p), r) for p, r in zip(prompts, responses)],
                            dtype=torch.float64)


class LabellerLog:
    """A :class:`SummaryLabeller` for :func:`~llmcourse.rlhf.ppo.train_ppo_text`'s log that also
    records, for each batch it scores, the mean of each term and the expected preference of the
    labeller for these summaries over the reference summaries of the same passages (the y-axis
    of Stiennon et al.'s Fig. 5: "fraction preferred to ref")."""

    KEYS = ("score", "coverage", "over_budget", "invented", "ended", "length", "vs_reference")

    def __init__(self, labeller: SummaryLabeller):
        self.labeller = labeller
        self.log = {k: [] for k in self.KEYS}

    def __call__(self, prompts, responses) -> torch.Tensor:
        from .labeller import preference_probability

        passages = [parse_prompt(p) for p in prompts]
        terms = [self.labeller.terms(p, r) for p, r in zip(passages, responses)]
        scores = self.labeller.score(prompts, responses)
        refs = self.labeller.score(prompts, [p.response for p in passages])
        n = len(terms)
        self.log["score"].append(float(scores.mean()))
        for key in ("coverage", "over_budget", "invented", "ended"):
            self.log[key].append(sum(float(getattr(t, key)) for t in terms) / n)
        self.log["length"].append(sum(len(r.partition(END)[0]) for r in responses) / n)
        self.log["vs_reference"].append(float(preference_probability(scores, refs, self.labeller.temperature).mean()))
        return scores
