"""Instruction-response pairs made from the shipped Shakespeare: the demonstrations of SFT.

Ouyang et al. (2022), "Training language models to follow instructions with human
feedback", arXiv:2203.02155, Sec. 3.2-3.4: labellers wrote demonstrations of the desired
behaviour on prompts, and the pretrained model was fine-tuned on them (SFT). Held-out
instruction *kinds* test whether following instructions generalises beyond the kinds
trained on, as the held-out task clusters of Wei et al. (2021), arXiv:2109.01652 (FLAN).

Here the "labeller" who writes the demonstrations is a program: every instruction has one
correct answer computed from a line of the plays, so success is exact and cheap to check.
Six kinds; ``capitals``, ``repeat``, ``first_word`` and ``count_words`` are trained on,
``lowercase`` and ``last_word`` are held out (each the mirror image of a trained kind).
The prompt format ends with ``Answer: ``; a response ends with the end-of-response marker
:data:`END` (``}``, a character the plays use twice, so it means nothing else to the model).

``scripts/build_instructions.py`` builds ``llmcourse/data/instructions.json.gz`` (seeded)
from lines of the first 90% of the text only: the last 10% stays the held-out text on
which the alignment tax is measured. :func:`load_instructions` reads it.
"""
from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass

END = "}"                                   #: the end-of-response marker
PROMPT_FORMAT = "Task: {instruction}\nLine: {line}\nAnswer: "
DATA_FILE = "instructions.json.gz"

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _words(line: str) -> list[str]:
    return line.split()


def _bare(word: str) -> str:
    """A word without the punctuation around it: ``"speak."`` -> ``"speak"``."""
    return word.strip(".,;:!?'\"()-")


#: kind -> (phrasings of the instruction, the answer for a line, held out of training)
KINDS: dict[str, tuple[tuple[str, ...], object, bool]] = {
    "capitals": (("Write the line in capitals.", "Say the line in capital letters."),
                 lambda line: line.upper(), False),
    "repeat": (("Repeat the line.", "Say the line again."), lambda line: line, False),
    "first_word": (("Give the first word of the line.", "What is the first word?"),
                   lambda line: _bare(_words(line)[0]), False),
    "count_words": (("How many words are in the line?", "Count the words of the line."),
                    lambda line: NUMBER_WORDS[len(_words(line))], False),
    "lowercase": (("Write the line in small letters.", "Say the line in lower case."),
                  lambda line: line.lower(), True),
    "last_word": (("Give the last word of the line.", "What is the last word?"),
                  lambda line: _bare(_words(line)[-1]), True),
}
TRAINED = tuple(k for k, (_, _, held) in KINDS.items() if not held)
HELD_OUT = tuple(k for k, (_, _, held) in KINDS.items() if held)


@dataclass(frozen=True)
class Example:
    """One instruction, the line it is about, and its correct answer (without the marker)."""

    kind: str
    instruction: str
    line: str
    answer: str

    @property
    def prompt(self) -> str:
        return PROMPT_FORMAT.format(instruction=self.instruction, line=self.line)

    @property
    def response(self) -> str:
        """The demonstration: the answer and the end-of-response marker."""
        return self.answer + END


def make_example(kind: str, line: str, phrasing: int = 0) -> Example:
    phrasings, answer, _ = KINDS[kind]
    return Example(kind, phrasings[phrasing % len(phrasings)], line, answer(line))


_PROMPT = re.compile(r"Task: (.*)\nLine: (.*)\nAnswer: ", re.S)
_KIND_OF = {phrasing: kind for kind, (phrasings, _, _) in KINDS.items() for phrasing in phrasings}


def parse_prompt(prompt: str) -> Example:
    """The :class:`Example` a prompt was made from (its answer recomputed); ``ValueError`` if
    the prompt is not in :data:`PROMPT_FORMAT` with one of the known instructions."""
    m = _PROMPT.fullmatch(prompt)
    if m is None or m.group(1) not in _KIND_OF:
        raise ValueError(f"not an instruction prompt of this data set: {prompt!r}")
    kind = _KIND_OF[m.group(1)]
    return make_example(kind, m.group(2), KINDS[kind][0].index(m.group(1)))


def answer_of(response: str) -> tuple[str, bool]:
    """A generated response -> (its text before the first marker, whether the marker came)."""
    head, marker, _ = response.partition(END)
    return head, bool(marker)


def is_correct(example: Example, response: str) -> bool:
    """Exactly the answer, then the marker (what follows the marker is never read)."""
    head, ended = answer_of(response)
    return ended and head == example.answer


@dataclass
class Evaluation:
    """Greedy responses to evaluation examples and how they fare, per kind."""

    responses: list                 #: the generated text of each example (end marker included if it came)
    correct: list                   #: exactly right, per example
    ended: list                     #: the end marker came, per example

    def rate(self, examples, kind: str | None = None, what: str = "correct") -> float:
        """Share of the examples (of ``kind``, or all) that are correct (or ``what="ended"``)."""
        flags = [f for e, f in zip(examples, getattr(self, what)) if kind is None or e.kind == kind]
        return sum(flags) / len(flags)


def evaluate(model, tokenizer, examples: list[Example], max_new_tokens: int = 40,
             batch_size: int = 200) -> Evaluation:
    """Greedy responses of ``model`` to each example's prompt, stopped at the end marker."""
    from ..generation import generate

    end = tokenizer.stoi[END]
    texts = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        g = generate(model, [ex.prompt for ex in chunk], max_new_tokens, temperature=0.0, eos_id=end,
                     tokenizer=tokenizer)
        texts += g.texts(tokenizer)
    return Evaluation(texts, [is_correct(e, t) for e, t in zip(examples, texts)],
                      [answer_of(t)[1] for t in texts])


# ----------------------------------------------------------------------------- lines of the plays

HEADER = re.compile(r"^[A-Z][A-Z' ,&-]*\.$")         # a speaker, "ACT I.", a title


def candidate_lines(text: str, vocab: str, min_words: int = 2, max_words: int = 7,
                    max_chars: int = 32) -> list[str]:
    """Distinct lines of speech from ``text``: ``min_words`` to ``max_words`` words, at most
    ``max_chars`` characters, some lowercase, every character in ``vocab``; no headers,
    stage directions (brackets) or scene lines. In order of first appearance."""
    seen, out = set(), []
    allowed = set(vocab) - {END, "\n"}
    for raw in text.split("\n"):
        line = raw.strip()
        if (not line or HEADER.match(line) or line.startswith(("ACT ", "SCENE", "Scene"))
                or "[" in line or "]" in line or not any(c.islower() for c in line)):
            continue
        n = len(_words(line))
        if not (min_words <= n <= max_words and len(line) <= max_chars and set(line) <= allowed):
            continue
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def build(text: str, vocab: str, n_train: int = 1000, n_eval: int = 100, seed: int = 0) -> dict:
    """The data set: ``n_train`` examples of each trained kind, ``n_eval`` of every kind for
    evaluation, on disjoint lines (shuffled with ``seed``), as a JSON-ready dict."""
    rng = random.Random(seed)
    lines = candidate_lines(text, vocab)
    rng.shuffle(lines)
    n_eval_lines = n_eval * len(KINDS)
    if len(lines) < n_eval_lines + n_train:
        raise ValueError(f"only {len(lines)} usable lines for {n_eval_lines} + {n_train}")
    eval_lines, train_lines = lines[:n_eval_lines], lines[n_eval_lines:]

    def rows(kinds, pool, per_kind):
        out = []
        for i, kind in enumerate(kinds):
            for j in range(per_kind):
                line = pool[(i * per_kind + j) % len(pool)] if pool is eval_lines else rng.choice(pool)
                ex = make_example(kind, line, rng.randrange(len(KINDS[kind][0])))
                out.append([ex.kind, ex.instruction, ex.line, ex.answer])
        return out

    train = rows(TRAINED, train_lines, n_train)
    rng.shuffle(train)
    return {"format": PROMPT_FORMAT, "end": END, "seed": seed, "trained": list(TRAINED),
            "held_out": list(HELD_OUT), "columns": ["kind", "instruction", "line", "answer"],
            "train": train, "eval": rows(list(KINDS), eval_lines, n_eval),
            "lines": {"usable": len(lines), "train": len(train_lines), "eval": len(eval_lines)}}


def load_instructions(name: str = DATA_FILE) -> tuple[list[Example], list[Example]]:
    """The shipped data set: ``(train, eval)`` lists of :class:`Example`."""
    from ..data import data_path

    with data_path(name).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        data = json.load(f)
    return ([Example(*row) for row in data["train"]], [Example(*row) for row in data["eval"]])


# ----------------------------------------------------------------------------- continuation prompts

OPENING = re.compile(r"\n\n([A-Z][A-Z' ]+\.)\n(\S+ \S+ \S+)")


def speech_openings(text: str | None = None, vocab: str | None = None, max_chars: int = 40) -> list[str]:
    """Prompts of the continuation task of chapter 22: a speaker's name and the first three
    words of one of their speeches (``"FIRST CITIZEN.\\nBefore we proceed"``), from the first
    90% of the shipped text (default), at most ``max_chars`` characters, in order."""
    if text is None:
        from ..data import load_shakespeare

        full = load_shakespeare()
        text, vocab = full[: int(0.9 * len(full))], vocab or "".join(sorted(set(full)))
    allowed = set(vocab or text)
    return [p for p in (f"{a}\n{b}" for a, b in OPENING.findall(text))
            if len(p) <= max_chars and set(p) <= allowed]
