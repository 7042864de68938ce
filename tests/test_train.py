"""llmcourse.train: the learning-rate schedule's shape, seeding, and a deterministic loop."""
import math

import numpy as np
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
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    assert opt.defaults["fused"]                                    # PyTorch's fused kernel on the CPU
    decay, no_decay = opt.param_groups
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


def test_train_lm_matches_a_plain_loop():
    """train_lm = nanoGPT's loop written plainly: PyTorch's reference AdamW (no fused kernel),
    the warm-up/cosine schedule, global-norm clipping (small, so it acts), the same batches."""
    import copy

    from llmcourse.data import get_batch

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=16))
    ref = copy.deepcopy(model).train()
    ids = torch.arange(300) % 7
    cfg = TrainConfig(max_iters=12, batch_size=4, block_size=8, lr=3e-3, min_lr=3e-4, warmup_iters=3,
                      grad_clip=0.05, weight_decay=0.5, seed=4)
    hist = train_lm(model, ids, None, cfg, progress=False)
    decay = [p for p in ref.parameters() if p.dim() >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.5},
                             {"params": [p for p in ref.parameters() if p.dim() < 2], "weight_decay": 0.0}],
                            lr=cfg.lr, betas=cfg.betas, foreach=False, fused=False)
    gen = set_seed(cfg.seed)
    losses, norms = [], []
    for step in range(cfg.max_iters):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.max_iters)
        _, loss = ref(*get_batch(ids, cfg.batch_size, cfg.block_size, gen))
        opt.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg.grad_clip)))
        opt.step()
        losses.append(loss.item())
    assert min(norms) > 2 * cfg.grad_clip                          # the clip acted at every step
    np.testing.assert_allclose(hist.train_loss, losses, rtol=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_estimate_loss_is_the_mean_over_its_batches():
    """Batches run several at a time give the mean of the one-batch-at-a-time losses."""
    from llmcourse.data import get_batch

    model, _, cfg, ids = _run(seed=1)
    cfg.eval_iters = 7
    gen = torch.Generator().manual_seed(0)
    ref = [model(*get_batch(ids, cfg.batch_size, cfg.block_size, gen))[1].item() for _ in range(7)]
    for max_tokens in (1, 64, 100, 10_000):                     # one, two, three and seven batches a pass
        assert estimate_loss(model, ids, cfg, max_tokens=max_tokens) == pytest.approx(sum(ref) / 7, rel=1e-6)
    assert estimate_loss(model, ids, cfg, seed=1) != pytest.approx(sum(ref) / 7, rel=1e-6)


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


def test_glue_passes_numpy_scalars_and_tensors_as_python_numbers(monkeypatch):
    """``llmcourse.plots.glue``: what a ``{glue:text}`` format spec can read (numpy 2 prints
    ``np.float64(0.5)``, which it cannot)."""
    import myst_nb
    import numpy as np

    from llmcourse.plots import glue

    seen = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: seen.append((name, value, display)))
    fig = object()
    for name, value in [("a", np.float64(0.5)), ("b", np.int64(3)), ("c", torch.tensor(2.5)),
                        ("d", 7), ("e", "leads"), ("f", fig)]:
        glue(name, value)
    assert seen == [("a", 0.5, False), ("b", 3, False), ("c", 2.5, False), ("d", 7, False),
                    ("e", "leads", False), ("f", fig, False)]
    assert [type(v) for _, v, _ in seen[:3]] == [float, int, float]
    assert f"{seen[0][1]!r}" == "0.5"
