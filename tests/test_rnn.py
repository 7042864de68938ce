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
