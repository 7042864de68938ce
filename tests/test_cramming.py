"""llmcourse.mlm (the masked-LM encoder of chapter 11) and its sweep script.

The encoder's switches do what they say (no bias anywhere with ``bias=False``, the norms where
``norm`` puts them, a gated feed-forward with ``glu``); the sparse prediction gives the loss a
dense read-out would; bidirectional attention (a masked token sees both sides); the
schedules are functions of the spent budget; a budget run stops at its budget and learns; the
script that makes the shipped data runs on a tiny budget and the shipped file has the shape
the chapter reads.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse import mlm
from llmcourse.data import data_path
from nbgrader_harness import REPO


def small(**kw) -> mlm.MLMEncoder:
    torch.manual_seed(0)
    return mlm.MLMEncoder(mlm.MLMConfig(vocab_size=11, seq_len=16, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                                        dropout=0.0, **kw))


def test_bias_switch_removes_every_bias():
    with_b, without = small(bias=True), small(bias=False)
    assert any(n.endswith("bias") for n, _ in with_b.named_parameters())
    assert not any(n.endswith("bias") for n, _ in without.named_parameters())


def test_norm_positions():
    x = torch.randn(2, 5, 16)
    post, pre = small(norm="post"), small(norm="pre")
    b = post.blocks[0]
    h = b.norm1(x + b.attn(x, x, x)[0])
    torch.testing.assert_close(b(x), b.norm2(h + b.ff(h)))                    # LayerNorm(x + f(x))
    b = pre.blocks[0]
    h = x + b.attn(b.norm1(x), b.norm1(x), b.norm1(x))[0]
    torch.testing.assert_close(b(x), h + b.ff(b.norm2(h)))                    # x + f(LayerNorm(x))
    assert isinstance(pre.final_norm, nn.LayerNorm) and isinstance(post.final_norm, nn.Identity)
    with pytest.raises(ValueError):
        mlm.MLMConfig(norm="sandwich")


def test_glu_feed_forward():
    m = small(glu=True)
    ff = m.blocks[0].ff
    x = torch.randn(3, 16)
    h, gate = (x @ ff.w1.weight.T + ff.w1.bias).chunk(2, dim=-1)
    torch.testing.assert_close(ff(x), (F.gelu(h) * gate) @ ff.w2.weight.T + ff.w2.bias)
    assert ff.w1.out_features == 2 * 32


def test_sparse_prediction_equals_dense_loss_and_head_is_tied():
    m = small()
    ids = torch.randint(10, (3, 16))
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = ids[:, ::3]
    logits, loss = m(ids, labels)
    dense, _ = m(ids)
    assert logits.shape == (int((labels != -100).sum()), 11)
    torch.testing.assert_close(loss, F.cross_entropy(dense.reshape(-1, 11), labels.reshape(-1), ignore_index=-100))
    assert m.head.weight is m.tok.weight


def test_attention_is_bidirectional():
    """A position's output depends on tokens after it (unlike a causal LM)."""
    m = small()
    ids = torch.randint(10, (1, 16))
    emb = m.tok(ids).detach().requires_grad_()
    x = m.emb_norm(emb + m.pos(torch.arange(16)))
    for block in m.blocks:
        x = block(x)
    (x[0, 0] * torch.randn(16)).sum().backward()          # (a plain sum of a LayerNorm output is constant)
    assert emb.grad[0, 15].abs().sum() > 0


def test_schedules_follow_the_spent_budget():
    cfg = mlm.BudgetConfig(lr=1.0, warmup=0.25, batch_size=64)
    assert mlm.lr_at(0.0, cfg) == 0 and mlm.lr_at(0.125, cfg) == pytest.approx(0.5)
    assert mlm.lr_at(0.25, cfg) == pytest.approx(1.0) and mlm.lr_at(0.625, cfg) == pytest.approx(0.5)
    assert mlm.lr_at(1.0, cfg) == 0
    assert mlm.lr_at(0.7, mlm.BudgetConfig(lr=3.0, schedule="constant")) == 3.0
    ramp = mlm.BudgetConfig(batch_size=64, ramp=True)
    assert [mlm.batch_size_at(p, ramp) for p in (0.0, 0.5, 1.0)] == [8, 36, 64]
    assert mlm.batch_size_at(0.3, cfg) == 64
    with pytest.raises(ValueError):
        mlm.lr_at(0.5, mlm.BudgetConfig(schedule="cosine"))


def test_mlm_batch_masks_the_way_bert_does():
    ids = torch.randint(10, (5000,))
    x, y = mlm.mlm_batch(ids, 64, 32, mask_id=10, vocab_size=11, generator=torch.Generator().manual_seed(0))
    chosen = y != -100
    assert x.shape == y.shape == (64, 32)
    assert 0.12 < chosen.float().mean() < 0.18
    assert 0.75 < (x[chosen] == 10).float().mean() < 0.85 and not (x[~chosen] == 10).any()


def test_a_budget_run_stops_at_its_budget_and_learns():
    ids = torch.arange(40).repeat(200) % 10                       # a periodic text: easy to predict from context
    val = mlm.fixed_batches(ids, 2, 16, 16, mask_id=10, vocab_size=11)
    m = small(norm="pre", bias=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # the budget is CPU time: on a loaded machine a second thread's spinning eats it
    try:
        run = mlm.train_budget(m, ids, val, mlm.BudgetConfig(seconds=3.0, batch_size=16, lr=3e-3, evals=3),
                               mask_id=10)
    finally:
        torch.set_num_threads(threads)
    assert run.seconds[0] == 0 and 3.0 <= run.seconds[-1] < 3.5
    assert len(run.val_loss) == 4 and run.steps == sorted(run.steps) and run.tokens[-1] == 16 * 16 * run.steps[-1]
    assert run.val_loss[-1] < 0.5 * run.val_loss[0]
    assert not m.training


def test_script_runs_on_a_tiny_budget(tmp_path):
    out = tmp_path / "runs.json"
    proc = subprocess.run([sys.executable, "scripts/ch11_cramming_runs.py", "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {r["kind"] for r in data["runs"]} == {"size", "ablation"}
    assert all(len(r["val_loss"]) == len(r["tokens"]) == len(r["seconds"]) for r in data["runs"])


def test_shipped_runs_have_what_the_chapter_reads():
    data = json.loads(data_path("ch11_cramming_runs.json").read_text())
    s = data["settings"]
    assert len(s["seeds"]) >= 3 and s["seconds"] >= 60
    sizes = {r["name"] for r in data["runs"] if r["kind"] == "size"}
    ablations = {r["name"] for r in data["runs"] if r["kind"] == "ablation"}
    assert sizes == set(s["sizes"]) and len(sizes) >= 4
    assert len(ablations) >= 5 and s["base_size"] in sizes
    for r in data["runs"]:
        assert r["seconds"][-1] >= s["seconds"] and r["val_loss"][0] > 4.0
    assert data_path("ch11_cramming_runs.json").stat().st_size < 200_000
