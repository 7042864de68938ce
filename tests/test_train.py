"""llmcourse.train: the learning-rate schedule's shape, seeding, and a deterministic loop."""
import math

import pytest
import torch

from llmcourse.gpt import GPT, GPTConfig
from llmcourse.train import TrainConfig, cosine_lr, estimate_loss, make_optimizer, set_seed, train_lm

torch.set_num_threads(1)


def test_cosine_lr_shape():
    max_lr, min_lr, warmup, total = 1e-3, 1e-4, 10, 110
    lrs = [cosine_lr(s, max_lr, min_lr, warmup, total) for s in range(total + 5)]
    # linear warm-up: (s + 1) / warmup of the peak, reaching the peak at the last warm-up step
    for s in range(warmup):
        assert lrs[s] == pytest.approx(max_lr * (s + 1) / warmup)
    assert lrs[warmup] == pytest.approx(max_lr)
    # cosine decay: monotone, half-way at the midpoint, min_lr at the end and after
    decay = lrs[warmup:total + 1]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lrs[warmup + (total - warmup) // 2] == pytest.approx((max_lr + min_lr) / 2)
    assert lrs[total] == pytest.approx(min_lr) and lrs[-1] == min_lr
    # closed form at an arbitrary step
    s = 37
    assert lrs[s] == pytest.approx(min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))


def test_set_seed_makes_draws_repeat():
    g = set_seed(3)
    a, b = torch.rand(4), torch.rand(4, generator=g)
    g = set_seed(3)
    assert torch.equal(a, torch.rand(4)) and torch.equal(b, torch.rand(4, generator=g))


def test_optimizer_decays_matrices_only():
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8))
    decay, no_decay = make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _run(seed: int):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    ids = torch.arange(300) % 7                                  # a periodic stream: learnable
    cfg = TrainConfig(max_iters=60, batch_size=4, block_size=8, lr=3e-3, warmup_iters=5,
                      eval_interval=20, eval_iters=3, seed=seed)
    return model, train_lm(model, ids, ids, cfg, progress=False), cfg, ids


def test_train_lm_is_deterministic_and_learns():
    model, h1, cfg, ids = _run(seed=1)
    _, h2, _, _ = _run(seed=1)
    _, h3, _, _ = _run(seed=2)
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss   # bit-identical
    assert h1.train_loss != h3.train_loss                                 # the seed matters
    assert h1.steps == list(range(60)) and h1.eval_steps == [0, 20, 40, 59]
    assert h1.val_loss[-1] < 0.5 * h1.val_loss[0]
    assert not model.training
    # estimate_loss uses the same batches every call and restores the mode
    model.train()
    assert estimate_loss(model, ids, cfg) == estimate_loss(model, ids, cfg) and model.training


def _run_script(*argv):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, *map(str, argv)], cwd=root, env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return root, out


def test_benchmark_script_runs():
    """benchmarks/train_gpt.py on a tiny budget: it runs and its numbers are consistent."""
    import json

    _, out = _run_script("benchmarks/train_gpt.py", "--iters", "5", "--eval-iters", "2",
                         "--matmul-size", "256", "--json")
    res = json.loads(out.strip().splitlines()[-1])
    assert "MFU" in out and "tokens per second" in out
    cfg = res["config"]
    assert (cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["block_size"], cfg["batch_size"]) == (4, 4, 128, 64, 12)
    assert res["flops_per_token"] == 6 * res["params_non_embedding"] + 12 * 4 * 64 * 128
    assert res["tokens_per_s"] == pytest.approx(12 * 64 * 1000 / res["ms_per_iter"])
    assert res["mfu"] == pytest.approx(res["achieved_flops"] / res["matmul_peak_flops"])
    assert 0 < res["mfu"] < 1.5 and 3.0 < res["val_loss"] < 5.0


def test_pretrain_script_runs(tmp_path):
    """scripts/pretrain_gpt.py on a tiny budget writes a checkpoint load_pretrained can read."""
    from llmcourse.gpt import GPT

    out = tmp_path / "gpt_smoke.pt"
    _run_script("scripts/pretrain_gpt.py", "--n-layer", "1", "--n-embd", "32", "--block-size", "16",
                "--batch-size", "4", "--iters", "3", "--eval-iters", "2", "--out", out, "--no-progress")
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"config", "state_dict", "chars", "info"}
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    for key in ("val_loss", "train", "iterations", "seconds", "torch_version"):
        assert key in ckpt["info"], key
    assert ckpt["info"]["iterations"] == 3
    model = GPT.from_checkpoint(ckpt)
    assert model.config.n_layer == 1 and model.config.vocab_size == len(ckpt["chars"])


def test_plots_smooth_against_loop():
    import numpy as np

    from llmcourse.plots import smooth

    v = np.random.default_rng(0).normal(size=40)
    for w in (1, 5, 60):
        ref = [v[max(0, i + 1 - w):i + 1].mean() for i in range(len(v))]
        np.testing.assert_allclose(smooth(v, w), ref, rtol=1e-12)
