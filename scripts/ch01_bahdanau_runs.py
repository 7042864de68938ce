"""Chapter 1's runs over seeds: GRU encoder-decoder with and without additive attention.

Bahdanau, Cho, Bengio (2014), arXiv:1409.0473, Fig. 2: accuracy against source length for
RNNencdec (one fixed-length context vector) and RNNsearch (additive attention). Too slow for
the book's 90-second budget, so this script writes ``llmcourse/data/ch01_bahdanau_runs.json``,
which chapter 1 loads (the chapter also reruns a reduced version live). Rerun, on one thread
(about 10 minutes of CPU time):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/ch01_bahdanau_runs.py

Smoke test (tests/test_bahdanau.py): ``--n-train 64 --n-val 16 --epochs 1 --seeds 0 --out /tmp/x.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from llmcourse.rnn import GRUSeq2Seq, RNNConfig
from llmcourse.seq2seq_train import Seq2SeqTrainConfig, evaluate, train_seq2seq
from llmcourse.tasks import SRC_VOCAB, TGT_VOCAB, make_splits
from llmcourse.train import set_seed

OUT = Path(__file__).resolve().parents[1] / "llmcourse" / "data" / "ch01_bahdanau_runs.json"


def build(attention: bool, seed: int):
    """The model and recipe, exactly as the chapter's live run builds them."""
    set_seed(seed)
    model = GRUSeq2Seq(RNNConfig(len(SRC_VOCAB), len(TGT_VOCAB), emb=64, hidden=64, attention=attention))
    cfg = Seq2SeqTrainConfig(batch_size=32, schedule="constant", lr=3e-3, label_smoothing=0.0, seed=seed)
    return model, cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--max-len", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    train, val = make_splits(args.n_train, args.n_val, max_len=args.max_len, seed=0)
    meta = {"n_train": args.n_train, "n_val": args.n_val, "max_len": args.max_len,
            "epochs": args.epochs, "torch": torch.__version__, "threads": 1,
            "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
            "note": "one torch thread on a shared, loaded 2-core machine: epoch_seconds is wall clock, epoch_cpu_seconds is CPU time of the process"}
    runs = []
    for seed in args.seeds:
        for attention in (False, True):
            model, cfg = build(attention, seed)
            cfg.epochs, cfg.eval_every = args.epochs, args.eval_every
            h = train_seq2seq(model, train, val, cfg, progress=False)
            final = evaluate(model, val)
            runs.append({"attention": attention, "seed": seed,
                         "params": sum(p.numel() for p in model.parameters()),
                         "eval_epochs": h.eval_epochs, "exact": h.epoch_exact,
                         "token_acc": h.epoch_token_acc, "epoch_seconds": h.epoch_seconds,
                         "epoch_cpu_seconds": h.epoch_cpu_seconds,
                         "final_exact_each": final["exact_each"].int().tolist(),
                         "src_len": final["src_len"].tolist()})
            args.out.write_text(json.dumps({"meta": meta, "runs": runs}))   # after every run
            print(f"attention={attention} seed {seed}: exact {h.epoch_exact[-1]:.3f} "
                  f"token {h.epoch_token_acc[-1]:.3f} cpu s/epoch "
                  f"{sum(h.epoch_cpu_seconds) / len(h.epoch_cpu_seconds):.1f}", flush=True)


if __name__ == "__main__":
    main()
