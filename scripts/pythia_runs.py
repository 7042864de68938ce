"""Four toy tests of Pythia's findings: the data of chapter 16 (issue 19).

Biderman et al. (2023), "Pythia: A Suite for Analyzing Large Language Models Across Training
and Scaling", arXiv:2304.01373: 16 models trained on the same data in the same order, with 154
checkpoints each. The four findings the course tests at toy scale, each on the course's GPT:

1. ``dedup`` (Pythia section 2.6 and Appendix G: the Pile against the deduplicated Pile): a corpus
   where a tenth of the lines is repeated ten times against the same unique lines only, the same
   number of training tokens; validation loss on fresh lines of the same kind.
2. ``memorisation`` (section 3.2; "Emergent and Predictable Memorization", arXiv:2304.11158):
   one fixed order (``llmcourse.toydata.ordered_batches``) over a stream with canaries, each
   seen once a pass, for many passes; at checkpoints, which canaries the model completes in
   their training context (``memorised_in_window``), against their place in the order.
3. ``frequency`` (section 3.3, after Razeghi et al. 2022): additions whose first operand follows a
   Zipf law; accuracy on held-out pairs, operand by operand, against the operand's count.
4. ``batch`` (section 2.4: Pythia's 1,024-sequence batches, larger than comparable models', trained
   in about half the steps): the same model and tokens at batch 16 and 32; loss against steps and
   against tokens.

    .venv/bin/python scripts/pythia_runs.py                     # all four -> llmcourse/data/pythia_runs.json
    .venv/bin/python scripts/pythia_runs.py --only batch        # one of them (resumable: the others are kept)
    .venv/bin/python scripts/pythia_runs.py --smoke --out /tmp/p.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "llmcourse" / "data" / "pythia_runs.json"
SHAPE = {"n_layer": 2, "n_embd": 64, "n_head": 4}
FULL = {"shape": SHAPE, "block_size": 64, "batch_size": 32, "lr": 3e-3, "dedup_lines": 12000, "dedup_steps": 1500,
        "mem_lines": 1000, "mem_canaries": 120, "mem_passes": 100, "mem_checkpoints": 8, "freq_lines": 40000,
        "freq_steps": 2500, "freq_eval_b": 30, "batch_steps": 2000, "batch_sizes": [16, 32], "seed": 0}
SMOKE = {**FULL, "dedup_lines": 300, "dedup_steps": 12, "mem_lines": 300, "mem_canaries": 4, "mem_passes": 2,
         "mem_checkpoints": 2, "freq_lines": 400, "freq_steps": 10, "freq_eval_b": 2, "batch_steps": 12}
EXPERIMENTS = ("dedup", "memorisation", "frequency", "batch")


def _model(s, vocab_size, seed):
    import torch

    from llmcourse.gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=s["block_size"], **s["shape"]))


def _train(model, batches, steps: int, lr: float, every: int | None = None, at_checkpoint=None) -> list[float]:
    """train_lm's update (AdamW, warm-up and cosine decay, clipping) over the given batches, in
    their order, calling ``at_checkpoint(step)`` every ``every`` steps; the training losses."""
    import torch

    from llmcourse.train import TrainConfig, cosine_lr, make_optimizer

    cfg = TrainConfig(max_iters=steps, lr=lr, min_lr=lr / 10, warmup_iters=max(1, min(100, steps // 10)))
    opt = make_optimizer(model, cfg)
    losses = []
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.max_iters)
        x, y = next(batches)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if every and at_checkpoint is not None and ((step + 1) % every == 0 or step + 1 == steps):
            at_checkpoint(step + 1)
            model.train()
    return losses


def _random_batches(ids, s, seed):
    import torch

    from llmcourse.data import get_batch

    g = torch.Generator().manual_seed(seed)
    while True:
        yield get_batch(ids, s["batch_size"], s["block_size"], g)


def dedup(s) -> dict:
    from llmcourse.toydata import filler_sentences, toy_tokenizer
    from llmcourse.train import TrainConfig, estimate_loss

    tok = toy_tokenizer()
    rng = random.Random(s["seed"])
    unique = filler_sentences(s["dedup_lines"], rng)
    repeated = unique[: len(unique) // 10] * 9                   # a tenth of the lines, 10 times in all
    val = tok.encode("\n".join(filler_sentences(2000, random.Random(s["seed"] + 99))) + "\n")
    out = {}
    for name, lines in (("duplicated", unique + repeated), ("deduplicated", unique)):
        lines = lines[:]
        random.Random(s["seed"] + 1).shuffle(lines)
        ids = tok.encode("\n".join(lines) + "\n")
        model = _model(s, tok.vocab_size, s["seed"])
        curve = []
        cfg = TrainConfig(batch_size=s["batch_size"], block_size=s["block_size"], eval_iters=20)
        _train(model, _random_batches(ids, s, s["seed"]), s["dedup_steps"], s["lr"], s["dedup_steps"] // 5,
               lambda step: curve.append((step, estimate_loss(model, val, cfg))))
        out[name] = {"chars": len(ids), "epochs": s["dedup_steps"] * s["batch_size"] * s["block_size"] / len(ids),
                     "step": [c[0] for c in curve], "val_loss": [c[1] for c in curve]}
    return out


def memorisation(s) -> dict:
    """Canaries seen once a pass, ``mem_passes`` passes over one fixed order; at checkpoints,
    which ones the model completes in their training context, against their place in a pass."""
    from llmcourse.toydata import canary_stream, memorised_in_window, ordered_batches, step_of_offset, toy_tokenizer

    tok = toy_tokenizer()
    text, canaries = canary_stream(s["mem_lines"], [1] * s["mem_canaries"], seed=s["seed"])
    ids = tok.encode(text)
    per_pass = (len(ids) - 1) // s["block_size"] // s["batch_size"]
    steps = per_pass * s["mem_passes"]
    model = _model(s, tok.vocab_size, s["seed"])
    record = {"step": [], "memorised": []}

    def check(step):
        record["step"].append(step)
        record["memorised"].append(memorised_in_window(model, tok, ids, canaries, s["block_size"]))

    _train(model, ordered_batches(ids, s["batch_size"], s["block_size"]), steps, s["lr"],
           max(1, steps // s["mem_checkpoints"]), check)
    return {"steps": steps, "steps_per_pass": per_pass, "canaries": [c.text for c in canaries],
            "place_in_pass": [c.offsets[0] / len(ids) for c in canaries],
            "seen_at_step_of_pass": [step_of_offset(c.offsets[0], len(ids), s["batch_size"], s["block_size"])
                                     for c in canaries], **record}


def frequency(s) -> dict:
    from llmcourse.toydata import accuracy, frequency_arithmetic, toy_tokenizer

    tok = toy_tokenizer()
    text, counts, held = frequency_arithmetic(s["freq_lines"], seed=s["seed"])
    ids = tok.encode(text)
    model = _model(s, tok.vocab_size, s["seed"])
    _train(model, _random_batches(ids, s, s["seed"]), s["freq_steps"], s["lr"])
    held_by_a: dict[int, list[int]] = {}
    for a, b in sorted(held):
        held_by_a.setdefault(a, []).append(b)
    acc = {}
    for a in range(100):
        bs = held_by_a.get(a, [])[: s["freq_eval_b"]]
        acc[a] = accuracy(model, tok, [(f"\n{a}+{b}=", f"{a + b}.") for b in bs]) if bs else None
    return {"count": [counts[a] for a in range(100)], "accuracy": [acc[a] for a in range(100)],
            "n_eval": [len(held_by_a.get(a, [])[: s["freq_eval_b"]]) for a in range(100)]}


def batch(s) -> dict:
    from llmcourse.data import shakespeare_splits
    from llmcourse.train import TrainConfig, estimate_loss

    tok, train_ids, val_ids = shakespeare_splits()
    out = {}
    tokens = s["batch_steps"] * s["batch_sizes"][0] * s["block_size"]
    for bs in s["batch_sizes"]:
        steps = tokens // (bs * s["block_size"])
        model = _model(s, tok.vocab_size, s["seed"])
        curve = []
        cfg = TrainConfig(batch_size=16, block_size=s["block_size"], eval_iters=20)
        t0 = time.perf_counter()
        _train(model, _random_batches(train_ids, {**s, "batch_size": bs}, s["seed"]), steps, s["lr"],
               max(1, steps // 10), lambda step: curve.append((step, estimate_loss(model, val_ids, cfg))))
        out[str(bs)] = {"steps": [c[0] for c in curve], "tokens": [c[0] * bs * s["block_size"] for c in curve],
                        "val_loss": [c[1] for c in curve], "seconds": round(time.perf_counter() - t0, 1)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--only", choices=EXPERIMENTS, action="append")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    s = SMOKE if args.smoke else FULL
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if data.get("settings") != s:
        data = {"settings": s}
    for name in args.only or EXPERIMENTS:
        if name in data and not args.only:
            print(f"{name}: already in {args.out}")
            continue
        t0 = time.perf_counter()
        data[name] = {**globals()[name](s), "seconds": 0.0}
        data[name]["seconds"] = round(time.perf_counter() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data))
        print(f"{name}: {data[name]['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
