"""Benchmark: batched sampling from the pretrained GPT, with the KV cache against without.

A batch of ``--batch`` prompts of different lengths (random windows of the held-out
Shakespeare, ``--min-prompt`` to ``--max-prompt`` characters, left-padded), then
``--new-tokens`` sampled tokens each (temperature 1, no end token, so every row runs to
the end), by :func:`llmcourse.generation.generate` with ``use_cache=True`` and with
``use_cache=False`` (which recomputes the whole padded prefix at every step). Same
generator seed for both: the script checks they sample the same tokens. Prints new
tokens per second for each (best of ``--repeats``) and the ratio.

The pretrained model's context window must hold the longest prompt plus the new tokens;
when it does not (``load_pretrained()``'s window is 128 tokens, the same as the 128 new
tokens), the model is rebuilt with a longer position table: the same weights, and the
extra positions randomly initialised. Speed does not depend on what the positions
hold; the sampled text past the trained window is not meant to be read.

Usage::

    python benchmarks/generate.py --threads 2           # 64 prompts x 128 new tokens
    python benchmarks/generate.py --quick               # 8 prompts x 16 new tokens, a smoke test
"""
from __future__ import annotations

import argparse
import json
import time

_T0 = time.perf_counter()                     # whole process: imports and loading count

import torch  # noqa: E402

from llmcourse.data import shakespeare_splits  # noqa: E402
from llmcourse.generation import generate  # noqa: E402
from llmcourse.gpt import GPT, GPTConfig, load_pretrained  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64, help="prompts in the batch")
    p.add_argument("--new-tokens", type=int, default=128, help="tokens sampled per prompt")
    p.add_argument("--min-prompt", type=int, default=8, help="shortest prompt, in tokens")
    p.add_argument("--max-prompt", type=int, default=32, help="longest prompt, in tokens")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best counts")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="8 prompts x 16 new tokens, 1 repeat")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.new_tokens, args.repeats = 8, 16, 1
    return args


def model_with_window(model: GPT, window: int) -> GPT:
    """``model`` itself if its context holds ``window`` tokens, else a copy with a longer position table."""
    if model.config.block_size >= window:
        return model
    cfg = GPTConfig(**{**vars(model.config), "block_size": window})
    torch.manual_seed(0)
    longer = GPT(cfg)
    state = model.state_dict()
    wpe = longer.wpe.weight.detach().clone()
    wpe[:model.config.block_size] = state["wpe.weight"]
    state["wpe.weight"] = wpe
    longer.load_state_dict(state)
    return longer.eval()


def timed(model, prompts, args, use_cache: bool):
    best, out = float("inf"), None
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = generate(model, prompts, args.new_tokens, temperature=1.0,
                       generator=torch.Generator().manual_seed(args.seed), use_cache=use_cache)
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base, tok, _ = load_pretrained()
    model = model_with_window(base, args.max_prompt + args.new_tokens)
    _, _, val_ids = shakespeare_splits()
    g = torch.Generator().manual_seed(args.seed)
    lengths = torch.randint(args.min_prompt, args.max_prompt + 1, (args.batch,), generator=g)
    starts = torch.randint(len(val_ids) - args.max_prompt, (args.batch,), generator=g)
    prompts = [val_ids[s:s + n] for s, n in zip(starts.tolist(), lengths.tolist())]
    generate(model, prompts[:2], 2)                                 # warm-up
    cached_s, cached = timed(model, prompts, args, use_cache=True)
    uncached_s, uncached = timed(model, prompts, args, use_cache=False)
    n_tokens = args.batch * args.new_tokens
    res = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "model": {"n_layer": model.config.n_layer, "n_head": model.config.n_head,
                  "n_embd": model.config.n_embd, "block_size": model.config.block_size,
                  "trained_block_size": base.config.block_size},
        "cached": {"seconds": cached_s, "tokens_per_s": n_tokens / cached_s},
        "uncached": {"seconds": uncached_s, "tokens_per_s": n_tokens / uncached_s},
        "speedup": uncached_s / cached_s,
        "same_tokens": bool(torch.equal(cached.sequences, uncached.sequences)),
        "sample": tok.decode(cached.tokens[0, :60].tolist()),
        "process_seconds": time.perf_counter() - _T0,
        "threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
    }
    m = res["model"]
    print(f"GPT {m['n_layer']} layers x {m['n_head']} heads x {m['n_embd']} wide (context "
          f"{m['block_size']}{'' if m['block_size'] == m['trained_block_size'] else ', extended from ' + str(m['trained_block_size'])}), "
          f"{args.batch} prompts of {args.min_prompt}-{args.max_prompt} tokens x {args.new_tokens} new tokens, "
          f"{res['threads']} thread(s), best of {args.repeats}, torch {res['torch_version']}")
    print(f"  KV cache        {cached_s:8.3f} s   {res['cached']['tokens_per_s']:10.0f} tokens/s")
    print(f"  no cache        {uncached_s:8.3f} s   {res['uncached']['tokens_per_s']:10.0f} tokens/s")
    print(f"  speed-up        {res['speedup']:8.2f} x   (same tokens: {res['same_tokens']})")
    print(f"  whole process   {res['process_seconds']:8.1f} s")
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
