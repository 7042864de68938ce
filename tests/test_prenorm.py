"""Post-LN / Pre-LN (TransformerConfig.norm_position, llmcourse.prenorm) against PyTorch and closed forms."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from llmcourse.prenorm import (WarmupRunConfig, ffn_grad_norms, last_ffn_grad_by_depth, make_lm,
                               train_with_warmup)
from llmcourse.transformer import DecoderLayer, EncoderLayer, Seq2SeqTransformer, TransformerConfig

ROOT = Path(__file__).resolve().parents[1]


def small_cfg(**kw):
    base = dict(src_vocab=11, tgt_vocab=13, d_model=16, n_heads=4, d_ff=32, n_layers=2, dropout=0.0)
    base.update(kw)
    return TransformerConfig(**base)


def copy_into_pytorch(ours, ref, d_model):
    with torch.no_grad():
        a = ours.self_attn
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.w_q.weight, a.w_k.weight, a.w_v.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.w_q.bias, a.w_k.bias, a.w_v.bias]))
        ref.self_attn.out_proj.weight.copy_(a.w_o.weight)
        ref.self_attn.out_proj.bias.copy_(a.w_o.bias)
        for name in ("linear1", "linear2"):
            getattr(ref, name).weight.copy_(getattr(ours.ff, name).weight)
            getattr(ref, name).bias.copy_(getattr(ours.ff, name).bias)
        for name in ("norm1", "norm2"):                       # non-trivial affine norms
            getattr(ours, name).weight.copy_(torch.randn(d_model))
            getattr(ours, name).bias.copy_(torch.randn(d_model))
            getattr(ref, name).weight.copy_(getattr(ours, name).weight)
            getattr(ref, name).bias.copy_(getattr(ours, name).bias)


@pytest.mark.parametrize("position", ["post", "pre"])
def test_encoder_layer_matches_pytorch_norm_first(position):
    torch.manual_seed(0)
    cfg = small_cfg(norm_position=position)
    ours = EncoderLayer(cfg).eval()
    ref = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, dropout=0.0, activation="relu",
                                     batch_first=True, norm_first=(position == "pre")).eval()
    copy_into_pytorch(ours, ref, cfg.d_model)
    x = torch.randn(2, 6, cfg.d_model)
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    with torch.no_grad():
        got, _ = ours(x, causal)
        want = ref(x, src_mask=~causal)                       # PyTorch: True = may NOT attend
        other, _ = EncoderLayer(small_cfg(norm_position={"post": "pre", "pre": "post"}[position])).eval()(x, causal)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, other, atol=1e-3)          # the switch changes the computation
    # the other placement of PyTorch's layer is a different function
    ref.norm_first = position != "pre"
    with torch.no_grad():
        assert not torch.allclose(got, ref(x, src_mask=~causal), atol=1e-3)


def test_pre_norm_closed_form_and_identity_residual():
    """Pre-LN: x + FFN(LN2(y)), y = x + Attn(LN1(x)); with zeroed sublayer outputs, the identity."""
    torch.manual_seed(0)
    layer = EncoderLayer(small_cfg(norm_position="pre")).eval()
    with torch.no_grad():
        for lin in (layer.self_attn.w_o, layer.ff.linear2):
            lin.weight.zero_()
            lin.bias.zero_()
    x = torch.randn(2, 5, 16) * 7
    torch.testing.assert_close(layer(x)[0], x)                # Post-LN would normalise x


def test_bad_norm_position_is_rejected():
    with pytest.raises(ValueError):
        EncoderLayer(small_cfg(norm_position="middle"))
    with pytest.raises(ValueError):
        DecoderLayer(small_cfg(norm_position="Pre"))


def test_seq2seq_pre_norm_has_final_norms_and_post_is_unchanged():
    torch.manual_seed(0)
    post, pre = Seq2SeqTransformer(small_cfg()), Seq2SeqTransformer(small_cfg(norm_position="pre"))
    assert not any(k.startswith(("enc_norm", "dec_norm")) for k in post.state_dict())
    assert isinstance(pre.enc_norm, nn.LayerNorm) and isinstance(pre.dec_norm, nn.LayerNorm)
    src, tgt = torch.randint(3, 11, (2, 7)), torch.randint(3, 13, (2, 5))
    assert pre(src, tgt).shape == (2, 5, 13)
    # decoder causality holds for Pre-LN too: changing the last target token leaves earlier logits
    tgt2 = tgt.clone()
    tgt2[:, -1] = 3 + (tgt[:, -1] - 2) % 10
    torch.testing.assert_close(pre(src, tgt)[:, :-1], pre(src, tgt2)[:, :-1])


@pytest.mark.parametrize("position", ["post", "pre"])
def test_norm_lm_is_causal(position):
    model = make_lm(position, vocab=20, n_layers=2, d_model=16, n_heads=2, d_ff=32).eval()
    x = torch.randint(0, 20, (2, 9))
    x2 = x.clone()
    x2[:, 5:] = (x2[:, 5:] + 1) % 20
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0][:, :5], model(x2)[0][:, :5])
        assert not torch.allclose(model(x)[0][:, 5:], model(x2)[0][:, 5:])


def test_ffn_grad_norms_match_autograd():
    model = make_lm("post", vocab=20, n_layers=3, d_model=16, n_heads=2, d_ff=32, seed=1)
    x, y = torch.randint(0, 20, (2, 8)), torch.randint(0, 20, (2, 8))
    got = ffn_grad_norms(model, x, y)
    _, loss = model(x, y)
    grads = torch.autograd.grad(loss, [l.ff.linear2.weight for l in model.layers])
    torch.testing.assert_close(got, torch.stack([g.norm() for g in grads]))
    assert got.shape == (3,)


def test_warmup_scales_the_first_steps():
    """With a warm-up of 10^9 steps the learning rate is ~0: weights stay put; without, they move."""
    ids = torch.randint(0, 20, (500,))
    moved = {}
    for warmup in (10 ** 9, 0):
        model = make_lm("pre", vocab=20, n_layers=1, d_model=16, n_heads=2, d_ff=32)
        before = model.out.weight.clone()
        losses = train_with_warmup(model, ids, WarmupRunConfig(lr=1e-2, warmup=warmup, steps=2,
                                                               batch_size=2, block_size=8))
        assert len(losses) == 2
        moved[warmup] = (model.out.weight - before).abs().max().item()
    assert moved[10 ** 9] < 1e-7 < 1e-4 < moved[0]


def test_ch03_script_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("ch03", ROOT / "scripts" / "ch03_prenorm_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    mod.main(["--n-layers", "2", "--steps", "2", "--seeds", "0", "--lrs", "1e-3", "--grad-seeds", "1",
              "--out", str(out)])
    res = json.loads(out.read_text())
    assert {(r["norm_position"], r["warmup"]) for r in res["runs"]} == {
        ("post", 0), ("post", 50), ("pre", 0), ("pre", 50)}
    assert len(res["grad_norms"]["pre"]) == 2 and len(res["grad_norms"]["pre"][0]) == 2


def test_shipped_ch03_results_match_the_script():
    res = json.loads((ROOT / "llmcourse" / "data" / "ch03_prenorm_runs.json").read_text())
    m = res["meta"]
    assert m["n_layers"] == 6 and m["steps"] == 150 and m["grad_seeds"] == 10
    assert len(res["runs"]) == 3 * 2 * 2 * 2
    assert all(len(r["loss"]) == 150 for r in res["runs"])
    for pos in ("post", "pre"):
        assert len(res["grad_norms"][pos]) == 20 and all(len(row) == 6 for row in res["grad_norms"][pos])


def test_last_layer_gradient_against_depth_follows_theorem_1():
    """Xiong et al.'s Theorem 1 at initialisation: the last FFN's gradient shrinks with depth for
    Pre-LN (as sqrt(1/L) for large L) and does not for Post-LN."""
    ids = torch.randint(0, 20, (5000,), generator=torch.Generator().manual_seed(0))
    depths = (2, 12)
    pre = last_ffn_grad_by_depth("pre", 20, ids, depths, seeds=(0, 1), batches=1, batch_size=8, block_size=16)
    post = last_ffn_grad_by_depth("post", 20, ids, depths, seeds=(0, 1), batches=1, batch_size=8, block_size=16)
    assert pre.shape == post.shape == (2, 2)
    assert pre[1].mean() < 0.75 * pre[0].mean()
    assert post[1].mean() > 0.75 * post[0].mean()
    from llmcourse.data import get_batch
    from llmcourse.train import set_seed
    x, y = get_batch(ids, 8, 16, generator=set_seed(1234))          # column 0: seed 0, first batch
    torch.testing.assert_close(pre[0, 0], ffn_grad_norms(make_lm("pre", 20, n_layers=2, seed=0), x, y)[-1])


@pytest.mark.parametrize("position", ["post", "pre"])
def test_norm_lm_equals_pytorch_encoder_stack_with_final_norm(position):
    """NormLM = embedding, nn.TransformerEncoder(norm_first=...) under a causal mask, the final
    LayerNorm for Pre-LN only (Xiong et al.), the read-out; weights copied."""
    from test_transformer import _copy_norm, copy_encoder_layer

    pre = position == "pre"
    model = make_lm(position, vocab=20, n_layers=3, d_model=16, n_heads=2, d_ff=32, seed=2).eval()
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=pre)
    ref = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(16) if pre else None, enable_nested_tensor=False).eval()
    for ours_l, ref_l in zip(model.layers, ref.layers):
        copy_encoder_layer(ours_l, ref_l)
    if pre:
        with torch.no_grad():
            _copy_norm(model.final_norm, ref.norm)
    else:
        assert isinstance(model.final_norm, nn.Identity)
    idx = torch.randint(0, 20, (2, 9))
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    want = model.out(ref(model.embed(idx), mask=~causal))
    torch.testing.assert_close(model(idx)[0], want, atol=1e-5, rtol=1e-5)
