"""The encoder-decoder Transformer (llmcourse.transformer) against independent references."""
import importlib.util
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.attention import causal_mask
from llmcourse.tasks import BOS, EOS, PAD, SRC_VOCAB, TGT_VOCAB, TaskConfig, encode_pairs, make_pairs
from llmcourse.transformer import (DecoderLayer, Embedding, EncoderLayer, Seq2SeqTransformer, TransformerConfig,
                                   label_smoothed_cross_entropy, noam_lr, sinusoidal_encoding)

ROOT = Path(__file__).resolve().parents[1]


def small_cfg(**kw):
    base = dict(src_vocab=11, tgt_vocab=13, d_model=16, n_heads=4, d_ff=32, n_layers=2, dropout=0.0)
    base.update(kw)
    return TransformerConfig(**base)


def test_seq2seq_shapes_and_attention_maps():
    torch.manual_seed(0)
    cfg = small_cfg()
    model = Seq2SeqTransformer(cfg).eval()
    src = torch.randint(3, 11, (3, 7))
    src[0, 5:] = PAD
    tgt_in = torch.randint(3, 13, (3, 5))
    logits, attn = model(src, tgt_in, return_attention=True)
    assert logits.shape == (3, 5, 13)
    assert len(attn["encoder"]) == len(attn["cross"]) == len(attn["decoder_self"]) == 2
    assert attn["encoder"][0].shape == (3, 4, 7, 7)
    assert attn["decoder_self"][0].shape == (3, 4, 5, 5)
    assert attn["cross"][0].shape == (3, 4, 5, 7)
    # padded source keys get no weight; rows sum to one
    assert attn["cross"][1][0, :, :, 5:].abs().max() == 0
    torch.testing.assert_close(attn["cross"][1].sum(-1), torch.ones(3, 4, 5))
    out = model.greedy_decode(src, max_len=6, bos_id=BOS, eos_id=EOS)
    assert out.shape[0] == 3 and out.shape[1] <= 6
    # output projection tied to the target embedding (section 3.4)
    assert model.out.weight is model.tgt_embed.tok.weight


def test_encoder_layer_matches_pytorch_post_norm():
    torch.manual_seed(0)
    cfg = small_cfg()
    ours = EncoderLayer(cfg).eval()
    ref = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, dropout=0.0,
                                     activation="relu", batch_first=True, norm_first=False).eval()
    with torch.no_grad():
        a = ours.self_attn
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.w_q.weight, a.w_k.weight, a.w_v.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.w_q.bias, a.w_k.bias, a.w_v.bias]))
        ref.self_attn.out_proj.weight.copy_(a.w_o.weight)
        ref.self_attn.out_proj.bias.copy_(a.w_o.bias)
        for name in ("linear1", "linear2"):
            getattr(ref, name).weight.copy_(getattr(ours.ff, name).weight)
            getattr(ref, name).bias.copy_(getattr(ours.ff, name).bias)
        for name in ("norm1", "norm2"):
            getattr(ref, name).weight.copy_(torch.randn(cfg.d_model))
            getattr(ours, name).weight.copy_(getattr(ref, name).weight)
            getattr(ref, name).bias.copy_(torch.randn(cfg.d_model))
            getattr(ours, name).bias.copy_(getattr(ref, name).bias)
    x = torch.randn(2, 6, cfg.d_model)
    real = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    with torch.no_grad():
        got, _ = ours(x, real[:, None, None, :])
        want = ref(x, src_key_padding_mask=~real)
    # PyTorch's fast path may zero padded rows; compare real positions
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)


def test_decoder_layer_causal_mask_leaks_nothing():
    torch.manual_seed(0)
    cfg = small_cfg()
    layer = DecoderLayer(cfg)
    T = 6
    y = torch.randn(2, T, cfg.d_model, requires_grad=True)
    memory = torch.randn(2, 4, cfg.d_model)
    probe = torch.randn(cfg.d_model)          # a plain sum would be constant after LayerNorm
    for t in range(T):
        y.grad = None
        out, _, _ = layer(y, memory, causal_mask(T))
        (out[:, t] @ probe).sum().backward()
        assert y.grad[:, t + 1:].abs().sum() == 0                  # no future position is read
        assert y.grad[:, : t + 1].abs().sum(-1).min() > 0          # every earlier position is read


def test_model_future_target_tokens_do_not_change_earlier_logits():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(small_cfg()).eval()
    src = torch.randint(3, 11, (2, 5))
    tgt = torch.randint(3, 13, (2, 6))
    tgt2 = tgt.clone()
    tgt2[:, 4:] = torch.randint(3, 13, (2, 2))
    with torch.no_grad():
        a, b = model(src, tgt), model(src, tgt2)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_sinusoidal_encoding_closed_form():
    L, d = 50, 16
    pe = sinusoidal_encoding(L, d)
    naive = torch.zeros(L, d)
    for pos in range(L):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            naive[pos, 2 * i] = math.sin(angle)
            naive[pos, 2 * i + 1] = math.cos(angle)
    torch.testing.assert_close(pe, naive, atol=1e-5, rtol=1e-5)


def test_noam_schedule_peak_and_formula():
    d, warmup = 512, 4000
    lrs = [noam_lr(s, d, warmup) for s in range(1, 3 * warmup)]
    assert max(range(len(lrs)), key=lrs.__getitem__) + 1 == warmup    # peak at the warm-up step
    assert lrs[warmup - 1] == pytest.approx((d * warmup) ** -0.5)
    assert noam_lr(100, d, warmup) == pytest.approx(d ** -0.5 * 100 * warmup ** -1.5)   # rising
    assert noam_lr(10000, d, warmup) == pytest.approx(d ** -0.5 * 10000 ** -0.5)        # decaying
    assert noam_lr(2000, 64, 200, factor=0.5) == pytest.approx(0.5 * 64 ** -0.5 * 2000 ** -0.5)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_pytorch(eps):
    torch.manual_seed(0)
    logits = torch.randn(20, 9)
    target = torch.randint(0, 9, (20,))
    target[[2, 7]] = PAD
    got = label_smoothed_cross_entropy(logits, target, eps, ignore_index=PAD)
    want = F.cross_entropy(logits, target, label_smoothing=eps, ignore_index=PAD)
    torch.testing.assert_close(got, want)


def test_transformer_overfits_a_tiny_batch():
    torch.manual_seed(0)
    data = encode_pairs(make_pairs(TaskConfig(n=6, min_len=3, max_len=5, seed=3)))
    model = Seq2SeqTransformer(TransformerConfig(len(SRC_VOCAB), len(TGT_VOCAB), d_model=32,
                                                 n_heads=4, d_ff=64, n_layers=2, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        logits = model(data.src, data.tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), data.tgt[:, 1:].reshape(-1),
                               ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = model.greedy_decode(data.src, data.tgt.size(1), BOS, EOS)
    assert loss.item() < 0.05
    for row, ref in zip(out, data.tgt):
        assert TGT_VOCAB.decode(row) == TGT_VOCAB.decode(ref)


def test_ch02_script_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("ch02", ROOT / "scripts" / "ch02_transformer_vs_gru.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    mod.main(["--n-train", "32", "--n-val", "8", "--max-len", "6", "--epochs", "1", "--seeds", "0",
              "--out", str(out)])
    res = json.loads(out.read_text())
    assert {r["model"] for r in res["runs"]} == {"transformer", "gru_attention"}
    assert all(len(r["final_exact_each"]) == 8 for r in res["runs"])


def test_shipped_ch02_results_match_the_script():
    """The data file the chapter loads has what the chapter reads, from the script's defaults."""
    res = json.loads((ROOT / "llmcourse" / "data" / "ch02_transformer_vs_gru.json").read_text())
    assert res["meta"]["epochs"] == 16 and res["meta"]["max_len"] == 30
    assert sorted((r["model"], r["seed"]) for r in res["runs"]) == [
        ("gru_attention", 0), ("gru_attention", 1), ("transformer", 0), ("transformer", 1)]
    for r in res["runs"]:
        assert len(r["final_exact_each"]) == len(r["src_len"]) == res["meta"]["n_val"]
        assert len(r["epoch_cpu_seconds"]) == 16 and r["eval_epochs"][-1] == 16
        assert r["exact"][-1] == sum(r["final_exact_each"]) / len(r["final_exact_each"])


# ----------------------------------------------------------------------------- the whole model against nn.Transformer


def _copy_attention(ours, ref):
    ref.in_proj_weight.copy_(torch.cat([ours.w_q.weight, ours.w_k.weight, ours.w_v.weight]))
    ref.in_proj_bias.copy_(torch.cat([ours.w_q.bias, ours.w_k.bias, ours.w_v.bias]))
    ref.out_proj.weight.copy_(ours.w_o.weight)
    ref.out_proj.bias.copy_(ours.w_o.bias)


def _copy_norm(ours, ref):
    """Random affine parameters (not the 1 and 0 of a fresh LayerNorm), the same in both."""
    ours.weight.copy_(torch.randn_like(ours.weight) * 0.5 + 1)
    ours.bias.copy_(torch.randn_like(ours.bias) * 0.5)
    ref.weight.copy_(ours.weight)
    ref.bias.copy_(ours.bias)


def copy_decoder_layer(ours, ref):
    with torch.no_grad():
        _copy_attention(ours.self_attn, ref.self_attn)
        _copy_attention(ours.cross_attn, ref.multihead_attn)
        for name in ("linear1", "linear2"):
            getattr(ref, name).weight.copy_(getattr(ours.ff, name).weight)
            getattr(ref, name).bias.copy_(getattr(ours.ff, name).bias)
        for name in ("norm1", "norm2", "norm3"):
            _copy_norm(getattr(ours, name), getattr(ref, name))


def copy_encoder_layer(ours, ref):
    with torch.no_grad():
        _copy_attention(ours.self_attn, ref.self_attn)
        for name in ("linear1", "linear2"):
            getattr(ref, name).weight.copy_(getattr(ours.ff, name).weight)
            getattr(ref, name).bias.copy_(getattr(ours.ff, name).bias)
        for name in ("norm1", "norm2"):
            _copy_norm(getattr(ours, name), getattr(ref, name))


@pytest.mark.parametrize("position", ["post", "pre"])
def test_decoder_layer_matches_pytorch(position):
    """Masked self-attention, cross-attention over a padded memory, feed-forward; Post- and Pre-LN."""
    torch.manual_seed(0)
    cfg = small_cfg(norm_position=position)
    ours = DecoderLayer(cfg).eval()
    ref = nn.TransformerDecoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, dropout=0.0, activation="relu",
                                     batch_first=True, norm_first=(position == "pre")).eval()
    copy_decoder_layer(ours, ref)
    y, memory = torch.randn(2, 5, cfg.d_model), torch.randn(2, 7, cfg.d_model)
    real = torch.arange(7) < torch.tensor([[7], [4]])                 # (B, S): the second source is padded
    causal = causal_mask(5)
    got, w_self, w_cross = ours(y, memory, causal, real[:, None, None, :])
    want = ref(y, memory, tgt_mask=~causal, memory_key_padding_mask=~real)   # PyTorch: True = may NOT attend
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert w_self.shape == (2, 4, 5, 5) and w_cross.shape == (2, 4, 5, 7)
    assert w_cross[1, :, :, 4:].abs().max() == 0 and w_self.triu(1).abs().max() == 0
    ref.norm_first = position != "pre"                                # the other placement differs
    assert not torch.allclose(got, ref(y, memory, tgt_mask=~causal, memory_key_padding_mask=~real), atol=1e-3)


@pytest.mark.parametrize("position", ["post", "pre"])
def test_seq2seq_equals_nn_transformer_with_copied_weights(position):
    """The whole encoder-decoder (padding and causal masks, final norms of Pre-LN, tied output)
    against nn.Transformer fed the same embeddings; Post-LN has no final norms (the paper)."""
    torch.manual_seed(0)
    cfg = small_cfg(norm_position=position, n_layers=2)
    pre = position == "pre"
    ours = Seq2SeqTransformer(cfg).eval()
    with warnings.catch_warnings():                       # "enable_nested_tensor is True, but ...": we never use it
        warnings.simplefilter("ignore", UserWarning)
        ref = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.n_layers, cfg.d_ff, dropout=0.0,
                             batch_first=True, norm_first=pre).eval()
    for ours_l, ref_l in zip(ours.encoder, ref.encoder.layers):
        copy_encoder_layer(ours_l, ref_l)
    for ours_l, ref_l in zip(ours.decoder, ref.decoder.layers):
        copy_decoder_layer(ours_l, ref_l)
    if pre:
        with torch.no_grad():
            _copy_norm(ours.enc_norm, ref.encoder.norm)
            _copy_norm(ours.dec_norm, ref.decoder.norm)
    else:
        ref.encoder.norm = ref.decoder.norm = None
    src = torch.randint(3, 11, (3, 7))
    src[1, 5:] = PAD
    src[2, 2:] = PAD
    tgt = torch.randint(3, 13, (3, 6))
    pad = src == PAD
    # with gradients on, PyTorch takes its reference path (no nested-tensor fast path)
    out = ref(ours.src_embed(src), ours.tgt_embed(tgt), tgt_mask=~causal_mask(6), src_key_padding_mask=pad,
              memory_key_padding_mask=pad)
    torch.testing.assert_close(ours(src, tgt), ours.out(out), atol=1e-5, rtol=1e-5)
    memory = ours.encode(src)
    enc = ref.encoder(ours.src_embed(src), src_key_padding_mask=pad)
    torch.testing.assert_close(memory[~pad], enc[~pad], atol=1e-5, rtol=1e-5)


def test_embedding_is_scaled_token_plus_position():
    torch.manual_seed(0)
    cfg = small_cfg()
    emb = Embedding(13, cfg).eval()
    ids = torch.randint(0, 13, (2, 9))
    want = emb.tok.weight[ids] * math.sqrt(cfg.d_model) + sinusoidal_encoding(cfg.max_len, cfg.d_model)[:9]
    torch.testing.assert_close(emb(ids), want)


# ----------------------------------------------------------------------------- greedy decoding


def test_greedy_decode_is_the_stepwise_argmax_of_the_model():
    """Each token is the argmax of the teacher-forced logits after the tokens chosen so far."""
    torch.manual_seed(1)
    model = Seq2SeqTransformer(small_cfg(norm_position="pre")).eval()
    src = torch.randint(3, 11, (4, 6))
    src[3, 3:] = PAD
    got = model.greedy_decode(src, max_len=7, bos_id=BOS, eos_id=EOS)
    ys = torch.full((4, 1), BOS)
    with torch.no_grad():
        for _ in range(7):
            ys = torch.cat([ys, model(src, ys)[:, -1].argmax(-1, keepdim=True)], dim=1)
    want = ys[:, 1:]
    for row, ref in zip(got.tolist(), want.tolist()):                 # compared up to each row's EOS
        cut = ref.index(EOS) + 1 if EOS in ref else len(ref)
        assert row[:cut] == ref[:cut]


def scripted(rows, vocab):
    """Logits (B, T, V) whose last position's argmax follows ``rows[b][T-1]``."""
    def logits(T):
        out = torch.zeros(len(rows), T, vocab)
        for b, r in enumerate(rows):
            out[b, -1, r[T - 1]] = 1.0
        return out
    return logits


def test_greedy_decode_pads_after_eos_and_stops_when_all_are_done():
    model = Seq2SeqTransformer(small_cfg()).eval()
    rows = [[5, EOS, 7, 8, 9, 10], [5, 6, 7, EOS, 9, 10], [4, 4, 4, 4, 4, 4]]
    src = torch.randint(3, 11, (3, 4))
    for n, want in ((3, [[5, EOS, PAD, PAD, PAD, PAD], [5, 6, 7, EOS, PAD, PAD], [4] * 6]),
                    (2, [[5, EOS, PAD, PAD], [5, 6, 7, EOS]])):           # both done after 4 steps: stop
        script = scripted(rows[:n], 13)
        model.decode = lambda ys, memory, src, attn=None: script(ys.size(1))
        assert model.greedy_decode(src[:n], max_len=6, bos_id=BOS, eos_id=EOS).tolist() == want


def test_predict_cuts_at_eos():
    from llmcourse.seq2seq_train import predict
    from llmcourse.tasks import Seq2SeqData

    class Fixed(nn.Module):
        def greedy_decode(self, src, max_len, bos_id, eos_id):
            return torch.tensor([[5, 6, EOS, PAD], [7, 7, 7, 7], [EOS, PAD, PAD, PAD]])[: src.size(0)]
    data = Seq2SeqData(torch.ones(3, 2, dtype=torch.long), torch.ones(3, 3, dtype=torch.long),
                       torch.tensor([2, 2, 2]), [None] * 3)
    assert predict(Fixed(), data) == [[5, 6], [7, 7, 7, 7], []]
