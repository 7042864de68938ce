"""Build ``llmcourse/data/instructions.json.gz``: the instruction data of chapters 17 and 24.

Instruction-response pairs made by a program from lines of the shipped Shakespeare
(:mod:`llmcourse.rlhf.instructions` says which kinds and why). Only the first 90% of the
text is used, the part the pretrained GPT trained on: the last 10% stays the held-out text
on which chapter 17 measures the alignment tax. Seeded: a rerun writes the same bytes.

Usage (the shipped file; a second of CPU)::

    python scripts/build_instructions.py

Smoke run (writes elsewhere)::

    python scripts/build_instructions.py --n-train 20 --n-eval 5 --out /tmp/instructions_smoke.json.gz
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from llmcourse.data import load_shakespeare
from llmcourse.rlhf.instructions import build

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "instructions.json.gz"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=1000, help="training examples per trained kind")
    p.add_argument("--n-eval", type=int, default=100, help="evaluation examples per kind")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    text = load_shakespeare()
    vocab = "".join(sorted(set(text)))
    data = build(text[: int(0.9 * len(text))], vocab, args.n_train, args.n_eval, args.seed)
    data["source"] = "the first 90% of llmcourse/data/shakespeare.txt.gz (public domain)"
    data["command"] = "python scripts/build_instructions.py " + " ".join(argv or [])
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(blob)                                   # mtime=0: the same bytes on every run
    print(f"wrote {args.out}: {len(data['train'])} training and {len(data['eval'])} evaluation examples "
          f"from {data['lines']['usable']} usable lines ({args.out.stat().st_size / 1024:.0f} KiB)")
    return data


if __name__ == "__main__":
    main()
