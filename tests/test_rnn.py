"""The GRU encoder-decoder (llmcourse.rnn), with and without additive attention."""
import pytest
import torch
import torch.nn.functional as F

from llmcourse.rnn import AdditiveAttention, GRUSeq2Seq, RNNConfig
from llmcourse.tasks import BOS, EOS, PAD, SRC_VOCAB, TGT_VOCAB, TaskConfig, encode_pairs, make_pairs


def batch():
    src = torch.tensor([[5, 6, 7, 8, 9], [4, 5, 6, PAD, PAD], [7, PAD, PAD, PAD, PAD]])
    tgt_in = torch.tensor([[BOS, 4, 5, 6], [BOS, 7, 8, PAD], [BOS, 9, PAD, PAD]])
    return src, tgt_in


@pytest.mark.parametrize("attention", [True, False])
def test_shapes(attention):
    torch.manual_seed(0)
    model = GRUSeq2Seq(RNNConfig(12, 14, emb=8, hidden=10, attention=attention)).eval()
    src, tgt_in = batch()
    logits, alpha = model(src, tgt_in, return_attention=True)
    assert logits.shape == (3, 4, 14)
    assert (alpha is None) == (not attention)
    if attention:
        assert alpha.shape == (3, 4, 5)
    out = model.greedy_decode(src, max_len=6, bos_id=BOS, eos_id=EOS)
    assert out.shape[0] == 3 and out.shape[1] <= 6


def test_attention_weights_sum_to_one_and_skip_padding():
    torch.manual_seed(0)
    model = GRUSeq2Seq(RNNConfig(12, 14, emb=8, hidden=10, attention=True)).eval()
    src, tgt_in = batch()
    _, alpha = model(src, tgt_in, return_attention=True)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 4))
    pad = src == PAD
    assert alpha.masked_select(pad[:, None, :].expand_as(alpha)).abs().max() == 0
    assert (alpha.masked_select(~pad[:, None, :].expand_as(alpha)) > 0).all()


def test_additive_attention_against_a_naive_loop():
    torch.manual_seed(0)
    att = AdditiveAttention(query_dim=6, key_dim=4, attn_dim=5)
    s, h = torch.randn(2, 6), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    ctx, alpha = att(s, att.U(h), h, mask)
    for b in range(2):
        e = torch.stack([att.v.weight[0] @ torch.tanh(att.W.weight @ s[b] + att.U.weight @ h[b, j] + att.U.bias)
                         for j in range(3) if mask[b, j]])
        a = torch.softmax(e, 0)
        torch.testing.assert_close(alpha[b, : len(a)], a)
        torch.testing.assert_close(ctx[b], (a[:, None] * h[b, : len(a)]).sum(0))


@pytest.mark.parametrize("attention", [True, False])
def test_padding_does_not_change_the_output(attention):
    """A sentence decoded alone equals the same sentence padded inside a batch."""
    torch.manual_seed(0)
    model = GRUSeq2Seq(RNNConfig(12, 14, emb=8, hidden=10, attention=attention)).eval()
    src, tgt_in = batch()
    with torch.no_grad():
        together = model(src, tgt_in)
        alone = model(src[1:2, :3], tgt_in[1:2])
    torch.testing.assert_close(together[1:2], alone)


@pytest.mark.parametrize("attention", [True, False])
def test_overfits_a_tiny_batch(attention):
    torch.manual_seed(0)
    data = encode_pairs(make_pairs(TaskConfig(n=6, min_len=3, max_len=5, seed=3)))
    model = GRUSeq2Seq(RNNConfig(len(SRC_VOCAB), len(TGT_VOCAB), emb=32, hidden=32, attention=attention))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        logits = model(data.src, data.tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), data.tgt[:, 1:].reshape(-1),
                               ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.05
    out = model.greedy_decode(data.src, data.tgt.size(1), BOS, EOS)
    for row, ref in zip(out, data.tgt):
        assert TGT_VOCAB.decode(row) == TGT_VOCAB.decode(ref)


def test_summary_is_the_final_forward_and_backward_states():
    """c (RNNencdec) = [forward state after the last real token; backward state after the first],
    read off the per-position annotations h_j = [fwd_j; bwd_j], padding skipped by packing."""
    torch.manual_seed(0)
    model = GRUSeq2Seq(RNNConfig(12, 14, emb=8, hidden=10, attention=False)).eval()
    src, _ = batch()
    with torch.no_grad():
        h, summary, mask = model.encode(src)
    for b, n in enumerate(mask.sum(1).tolist()):
        torch.testing.assert_close(summary[b], torch.cat([h[b, n - 1, :10], h[b, 0, 10:]]))
        if n < src.size(1):                                       # padded positions carry nothing
            assert h[b, n:].abs().max() == 0


@pytest.mark.parametrize("attention", [True, False])
def test_decoder_step_reads_the_context_in_the_state_and_the_readout(attention):
    """s_i = GRU([E y_{i-1}; c_i], s_{i-1}), logits = W_o [s_i; c_i; E y_{i-1}] + b_o, with c_i from
    s_{i-1} (RNNsearch) or c fixed (RNNencdec)."""
    torch.manual_seed(0)
    model = GRUSeq2Seq(RNNConfig(12, 14, emb=8, hidden=10, attention=attention)).eval()
    src, tgt_in = batch()
    with torch.no_grad():
        h, summary, mask, s, Uh = model._start(src)
        y = tgt_in[:, 1]
        s_new, logits, alpha = model._step(y, s, h, Uh, summary, mask)
        c = model.attn(s, Uh, h, mask)[0] if attention else summary
        e = model.tgt_embed(y)
        want_s = model.cell(torch.cat([e, c], -1), s)
        torch.testing.assert_close(s_new, want_s)
        torch.testing.assert_close(logits, model.readout(torch.cat([want_s, c, e], -1)))
        # the state itself depends on the context: another source, same s and y, another s_i
        h2, summary2, mask2, _, Uh2 = model._start(src.flip(0))
        assert not torch.allclose(model._step(y, s, h2, Uh2, summary2, mask2)[0], s_new)


def test_greedy_decode_pads_after_eos_and_stops_when_all_are_done():
    model = GRUSeq2Seq(RNNConfig(12, 14, emb=8, hidden=10)).eval()
    rows = [[5, EOS, 7, 8, 9], [5, 6, EOS, 8, 9], [4, 4, 4, 4, 4]]
    src, _ = batch()
    for n, want in ((3, [[5, EOS, PAD, PAD, PAD], [5, 6, EOS, PAD, PAD], [4] * 5]),
                    (2, [[5, EOS, PAD], [5, 6, EOS]])):
        steps = iter(range(5))

        def scripted(y, s, h, Uh, summary, mask):
            t = next(steps)
            logits = torch.zeros(y.size(0), 14)
            logits[torch.arange(y.size(0)), torch.tensor([r[t] for r in rows[:n]])] = 1.0
            return s, logits, None
        model._step = scripted
        assert model.greedy_decode(src[:n], max_len=5, bos_id=BOS, eos_id=EOS).tolist() == want
