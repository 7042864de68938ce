"""Small generated corpora for the scaling chapters (14 Gopher, 16 Pythia), seeded and character-level.

Chapter 14 (Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", arXiv:2112.11446, section 4 and Figure 3: scale helps knowledge-heavy tasks
far more than mathematical and logical reasoning). :func:`make_world` invents a world of
entities with attributes; :func:`gopher_corpus` mixes its facts ("the city of bakor is
lumen.") with two-digit additions ("37+45=82.") and comparisons ("max 37 45=45."), and
:func:`gopher_eval` asks for each family: a fact's value (recall of something seen in
training), and sums and maxima of operand pairs held out of training (computation on
unseen inputs). :func:`accuracy` scores a model by greedy completion. What the toy can show:
whether adding parameters buys more accuracy on recall than on computation at this scale;
not what the paper measured (152 tasks, 44 million to 280 billion parameters).

Chapter 16 (Biderman et al. 2023, "Pythia: A Suite for Analyzing Large Language Models
Across Training and Scaling", arXiv:2304.01373, sections 3.1-3.3, and Biderman et al. 2023,
"Emergent and Predictable Memorization", arXiv:2304.11158). :func:`canary_stream` builds one
fixed training stream of filler sentences with random "canary" strings inserted at recorded
offsets, each a chosen number of times (a duplicated corpus) or once (deduplicated);
:func:`ordered_batches` reads a stream in one fixed order, so the step at which each offset
is seen is known (:func:`step_of_offset`); :func:`memorised` asks whether a model completes a
canary from its prefix (k-extractable memorisation, as in the memorisation paper).
:func:`frequency_arithmetic` makes additions whose first operand follows a Zipf law over a
shuffled order of the numbers 0-99, so that operand frequency is controlled and unrelated to
its size (Pythia section 3.3, after Razeghi et al. 2022, arXiv:2202.07206).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from .tokenizer import CharTokenizer

#: every character the generated corpora use (one tokenizer for all of them)
ALPHABET = "\n +.0123456789<=>?abcdefghijklmnopqrstuvwxyz"


def toy_tokenizer() -> CharTokenizer:
    """The character tokenizer of every corpus of this module."""
    return CharTokenizer(ALPHABET)


def invent_names(n: int, rng: random.Random, syllables: tuple[int, ...] = (2, 3)) -> list[str]:
    """``n`` distinct pronounceable invented words (consonant-vowel syllables)."""
    cons, vows = "bdfgklmnprstvz", "aeiou"
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        w = "".join(rng.choice(cons) + rng.choice(vows) for _ in range(rng.choice(syllables)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


# ----------------------------------------------------------------------------- chapter 14: facts and arithmetic

RELATIONS = ("city", "colour", "food", "pet")
FAMILIES = ("facts", "addition", "comparison")


@dataclass
class World:
    """Entities, one value per (relation, entity), and the operand pairs held out of training."""

    entities: list[str]
    values: dict[str, list[str]]                       # relation -> its pool of values
    facts: dict[tuple[str, str], str]                  # (relation, entity) -> value
    held_out: set[tuple[int, int]] = field(default_factory=set)

    def fact_lines(self) -> list[str]:
        return [fact_line(r, e, v) for (r, e), v in self.facts.items()]


def fact_line(relation: str, entity: str, value: str) -> str:
    return f"the {relation} of {entity} is {value}."


def addition_line(a: int, b: int) -> str:
    return f"{a}+{b}={a + b}."


def comparison_line(a: int, b: int) -> str:
    return f"max {a} {b}={max(a, b)}."


def make_world(n_entities: int = 64, n_values: int = 12, held_out: float = 0.2, seed: int = 0) -> World:
    """A world of ``n_entities`` invented entities, each with a value for every relation (drawn
    from ``n_values`` invented values per relation), and ``held_out`` of the 100 x 100 operand
    pairs (a, b) kept out of training for the arithmetic families."""
    rng = random.Random(seed)
    names = invent_names(n_entities + n_values * len(RELATIONS), rng)
    entities = names[:n_entities]
    values = {r: names[n_entities + i * n_values: n_entities + (i + 1) * n_values] for i, r in enumerate(RELATIONS)}
    facts = {(r, e): rng.choice(values[r]) for r in RELATIONS for e in entities}
    pairs = [(a, b) for a in range(100) for b in range(100)]
    rng.shuffle(pairs)
    return World(entities, values, facts, set(pairs[:round(held_out * len(pairs))]))


def gopher_corpus(world: World, n_lines: int, shares: tuple[float, float, float] = (0.4, 0.3, 0.3),
                  seed: int = 0) -> str:
    """``n_lines`` lines, one per line of text: facts (every fact equally often, in random order),
    additions and comparisons (random operand pairs, never a held-out one), in the given shares."""
    rng = random.Random(seed)
    facts = world.fact_lines()
    allowed = [(a, b) for a in range(100) for b in range(100) if (a, b) not in world.held_out]
    lines = []
    n_facts = round(shares[0] * n_lines)
    n_add = round(shares[1] * n_lines)
    order: list[str] = []
    while len(order) < n_facts:                       # whole passes over the facts, each shuffled
        batch = facts[:]
        rng.shuffle(batch)
        order.extend(batch)
    lines += order[:n_facts]
    lines += [addition_line(*rng.choice(allowed)) for _ in range(n_add)]
    lines += [comparison_line(*rng.choice(allowed)) for _ in range(n_lines - n_facts - n_add)]
    rng.shuffle(lines)
    return "\n".join(lines) + "\n"


def gopher_eval(world: World, family: str, n: int = 200, seed: int = 1) -> list[tuple[str, str]]:
    """``n`` (prompt, answer) pairs of one family: a fact's value, or the sum or maximum of a
    held-out operand pair. The answer ends with the line's full stop."""
    rng = random.Random(seed)
    if family == "facts":
        keys = sorted(world.facts)
        rng.shuffle(keys)
        return [(f"\nthe {r} of {e} is ", f"{world.facts[(r, e)]}.") for r, e in keys[:n]]
    pairs = sorted(world.held_out)
    rng.shuffle(pairs)
    if family == "addition":
        return [(f"\n{a}+{b}=", f"{a + b}.") for a, b in pairs[:n]]
    if family == "comparison":
        return [(f"\nmax {a} {b}=", f"{max(a, b)}.") for a, b in pairs[:n]]
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


@torch.no_grad()
def greedy_complete(model, tok: CharTokenizer, prompts: list[str], n_chars: int | list[int]) -> list[str]:
    """Greedy continuations of ``n_chars`` characters (one number, or one per prompt); prompts of
    the same length are decoded together as one batch."""
    lengths = [n_chars] * len(prompts) if isinstance(n_chars, int) else list(n_chars)
    out = [""] * len(prompts)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (p, k) in enumerate(zip(prompts, lengths)):
        groups.setdefault((len(p), k), []).append(i)
    was_training = model.training
    model.eval()
    block = model.config.block_size
    for (_, k), idx in groups.items():
        ids = torch.stack([tok.encode(prompts[i]) for i in idx])
        for _ in range(k):
            logits, _ = model(ids[:, -block:])
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        for row, i in enumerate(idx):
            out[i] = tok.decode(ids[row, -k:])
    model.train(was_training)
    return out


def accuracy(model, tok: CharTokenizer, pairs: list[tuple[str, str]]) -> float:
    """Share of prompts whose greedy completion is exactly the answer."""
    got = greedy_complete(model, tok, [p for p, _ in pairs], [len(a) for _, a in pairs])
    return sum(g == a for g, (_, a) in zip(got, pairs)) / max(1, len(pairs))


# ----------------------------------------------------------------------------- chapter 16: one fixed order, canaries


@dataclass
class Canary:
    """A random string inserted into a stream ``count`` times, at character ``offsets``."""

    text: str
    count: int
    offsets: list[int]

    @property
    def line(self) -> str:
        return f"code {self.text}."


def filler_sentences(n: int, rng: random.Random, n_words: int = 200) -> list[str]:
    """``n`` simple sentences over a small invented vocabulary: text with structure a tiny
    model can learn, around which the canaries stand out."""
    words = invent_names(n_words, random.Random(1234))
    verbs = words[:20]
    nouns = words[20:]
    out = []
    for _ in range(n):
        s = f"the {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(nouns)}"
        if rng.random() < 0.3:
            s += f" and the {rng.choice(nouns)}"
        out.append(s + ".")
    return out


def canary_stream(n_lines: int, counts: list[int], length: int = 24, seed: int = 0,
                  burst: int | None = None, words: bool = False) -> tuple[str, list[Canary]]:
    """One training stream: ``n_lines`` filler sentences with canary ``i`` inserted ``counts[i]``
    times at random line positions (``counts`` all 1: a deduplicated corpus); with ``burst``,
    the copies of each canary fall within ``burst`` lines of one random position, so that each
    canary has a place in the training order. A canary is ``length`` random letters, or with
    ``words`` the filler's own words in a random order cut to ``length`` characters (lower
    entropy, closer to the natural text a real model memorises). Returns the text and the
    canaries with the character offset of every copy, in stream order."""
    rng = random.Random(seed)
    lines: list[str | int] = list(filler_sentences(n_lines, rng))
    vocab = invent_names(200, random.Random(1234))
    if words:
        texts = []
        for _ in counts:
            t = ""
            while len(t) < length:
                t += rng.choice(vocab) + " "
            texts.append(t[:length])
    else:
        texts = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length)) for _ in counts]
    for i, c in enumerate(counts):
        centre = rng.randrange(len(lines) + 1)
        for _ in range(c):
            if burst is None:
                pos = rng.randrange(len(lines) + 1)
            else:
                pos = min(len(lines), max(0, centre + rng.randrange(-burst // 2, burst // 2 + 1)))
            lines.insert(pos, i)
    canaries = [Canary(t, c, []) for t, c in zip(texts, counts)]
    parts, pos = [], 0
    for item in lines:
        s = item if isinstance(item, str) else canaries[item].line
        if not isinstance(item, str):
            canaries[item].offsets.append(pos)
        parts.append(s)
        pos += len(s) + 1
    return "\n".join(parts) + "\n", canaries


def ordered_batches(ids: torch.Tensor, batch_size: int, block_size: int, start_step: int = 0):
    """Batches ``(x, y)`` in one fixed order: step ``s``, row ``r`` is the window starting at
    ``(s * batch_size + r) * block_size`` (wrapping around the stream). Pythia trains every
    model on the same data in the same order; so does every run that reads this."""
    n_windows = (len(ids) - 1) // block_size
    offsets = torch.arange(block_size)
    step = start_step
    while True:
        w = (step * batch_size + torch.arange(batch_size)) % n_windows
        starts = w * block_size
        yield ids[starts[:, None] + offsets], ids[starts[:, None] + offsets + 1]
        step += 1


def step_of_offset(offset: int, n_chars: int, batch_size: int, block_size: int) -> int:
    """The first step of :func:`ordered_batches` whose inputs contain character ``offset``."""
    n_windows = (n_chars - 1) // block_size
    window = offset // block_size
    if window >= n_windows:
        raise ValueError(f"offset {offset} lies beyond the last whole window")
    return window // batch_size


def memorised(model, tok: CharTokenizer, canaries: list[Canary], prefix: int = 8) -> list[bool]:
    """For each canary: does greedy decoding from ``"code " + its first prefix characters`` give
    the rest of it exactly (k-extractable memorisation, k = length - prefix)?"""
    prompts = ["\ncode " + c.text[:prefix] for c in canaries]
    got = greedy_complete(model, tok, prompts, [len(c.text) - prefix for c in canaries])
    return [g == c.text[prefix:] for g, c in zip(got, canaries)]


@torch.no_grad()
def memorised_in_window(model, tok: CharTokenizer, ids: torch.Tensor, canaries: list[Canary], block_size: int,
                        prefix: int = 8) -> list[bool | None]:
    """Memorisation as Pythia measures it, in the context the model was trained in: for each
    canary's first copy, the prompt is the stream from the start of its training window
    (:func:`ordered_batches` cuts the stream into fixed windows of ``block_size``) up to the
    canary's first ``prefix`` characters; memorised when greedy decoding gives the rest exactly.
    ``None`` for a canary that straddles two windows (its end was never seen with its start).
    A prompt out of context (:func:`memorised`) finds far less: a model with learned positions
    recalls a sequence where it saw it."""
    was_training = model.training
    model.eval()
    out: list[bool | None] = []
    for c in canaries:
        o = c.offsets[0]
        w = o // block_size * block_size
        if o + len(c.line) > w + block_size:
            out.append(None)
            continue
        x = ids[w:o + len("code ") + prefix][None]
        k = len(c.text) - prefix
        for _ in range(k):
            x = torch.cat([x, model(x)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
        out.append(tok.decode(x[0, -k:]) == c.text[prefix:])
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------- chapter 16: operand frequency


def zipf_operand_weights(s: float = 1.2, seed: int = 0) -> dict[int, float]:
    """Probability of each first operand 0-99: a Zipf law of exponent ``s`` over a shuffled
    order of the numbers, so that how often a number is seen does not follow its size."""
    rng = random.Random(seed)
    order = list(range(100))
    rng.shuffle(order)
    raw = {a: 1.0 / (rank + 1) ** s for rank, a in enumerate(order)}
    total = sum(raw.values())
    return {a: w / total for a, w in raw.items()}


def frequency_arithmetic(n_lines: int, s: float = 1.2, held_out: float = 0.3,
                         seed: int = 0) -> tuple[str, dict[int, int], set[tuple[int, int]]]:
    """``n_lines`` additions ``a+b=c.``: ``a`` drawn from :func:`zipf_operand_weights`, ``b``
    uniform, never a held-out pair. Returns the text, how often each ``a`` occurs, and the
    held-out pairs (for evaluation on sums never seen)."""
    rng = random.Random(seed)
    weights = zipf_operand_weights(s, seed)
    pairs = [(a, b) for a in range(100) for b in range(100)]
    rng.shuffle(pairs)
    held = set(pairs[:round(held_out * len(pairs))])
    allowed_b = {a: [b for b in range(100) if (a, b) not in held] for a in range(100)}
    operands = rng.choices(list(weights), weights=list(weights.values()), k=n_lines)
    counts = {a: 0 for a in range(100)}
    lines = []
    for a in operands:
        counts[a] += 1
        lines.append(addition_line(a, rng.choice(allowed_b[a])))
    return "\n".join(lines) + "\n", counts, held
