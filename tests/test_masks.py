"""llmcourse.attention's masked_softmax and mlm_corrupt against independent references.

masked_softmax: the closed form exp(s_j) / sum over allowed k of exp(s_k), row by row in
float64, and PyTorch's own softmax where every entry is allowed; empty slices are zeros
with zero (finite) gradient. mlm_corrupt: exact properties of every draw (labels, special
tokens, the untouched input), the BERT rates on a large sample with 6-sigma bounds, and
reproducibility from the generator.
"""
import math
import warnings

import pytest
import torch

from llmcourse.attention import causal_mask, masked_softmax, mlm_corrupt, padding_mask

torch.set_num_threads(1)
TOL = dict(rtol=1e-10, atol=1e-12)


def _loop_softmax(scores, mask, dim):
    """Slice by slice in float64: the softmax over the allowed entries, zeros elsewhere."""
    mask = torch.broadcast_to(mask, scores.shape)
    s, m = scores.movedim(dim, -1), mask.movedim(dim, -1)
    out = torch.zeros(s.shape, dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in s.shape[:-1]]).view(-1, s.dim() - 1).tolist():
        row, keep = s[tuple(idx)], m[tuple(idx)]
        if keep.any():
            e = [math.exp(float(x)) if k else 0.0 for x, k in zip(row, keep)]
            out[tuple(idx)] = torch.tensor(e, dtype=torch.float64) / sum(e)
    return out.movedim(-1, dim)


@pytest.mark.parametrize("shape,mask_shape,dim", [((3, 5), (3, 5), -1), ((2, 3, 4, 6), (2, 1, 1, 6), -1),
                                                  ((4, 7), (4, 7), 0), ((2, 6, 3), (2, 6, 1), 1)])
def test_masked_softmax_against_loop(shape, mask_shape, dim):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(*shape, generator=g, dtype=torch.float64)
    mask = torch.rand(*mask_shape, generator=g) < 0.5
    got = masked_softmax(scores, mask, dim)
    torch.testing.assert_close(got, _loop_softmax(scores, mask, dim), **TOL)
    assert (got[~torch.broadcast_to(mask, shape)] == 0).all()            # exactly zero, not tiny


def test_masked_softmax_all_allowed_is_softmax():
    scores = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(masked_softmax(scores, torch.ones(5, dtype=torch.bool)), torch.softmax(scores, -1),
                               **TOL)


def test_masked_softmax_empty_rows_are_zero_with_finite_gradients():
    scores = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(4, 6) < 0.5
    mask[0], mask[2] = False, False
    mask[1, 0] = mask[3, 0] = True
    p = masked_softmax(scores, mask)
    assert torch.equal(p[0], torch.zeros(6, dtype=torch.float64)) and torch.equal(p[2], p[0])
    torch.testing.assert_close(p[[1, 3]].sum(-1), torch.ones(2, dtype=torch.float64), **TOL)
    r = torch.randn(4, 6, dtype=torch.float64)
    (grad,) = torch.autograd.grad((p * r).sum(), scores)
    assert torch.isfinite(grad).all()
    assert (grad[~mask] == 0).all()
    # allowed entries: the softmax Jacobian p (r - <p, r>) of the allowed sub-vector
    want = p * (r - (p * r).sum(-1, keepdim=True))
    torch.testing.assert_close(grad, want.detach(), **TOL)
    # no NaN anywhere on the way, not even one masked out later: anomaly detection (how one hunts
    # NaNs) checks every backward step and stays quiet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                  # "anomaly detection enabled"
        with torch.autograd.detect_anomaly():
            (masked_softmax(scores, mask) * r).sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_masked_softmax_with_causal_and_padding_masks():
    scores = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    pad = padding_mask([4, 2])                                          # (B, T)
    queries_and_keys = (pad[:, None, :, None] & pad[:, None, None, :]) & causal_mask(4)
    p = masked_softmax(scores, queries_and_keys)
    assert torch.equal(p[1, :, 2:], torch.zeros(3, 2, 4, dtype=torch.float64))   # padded queries: empty rows
    torch.testing.assert_close(p, _loop_softmax(scores, queries_and_keys, -1), **TOL)


VOCAB, MASK, SPECIALS = 20, 4, (0, 1, 2, 3)


def _tokens(rows=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (rows, 64), generator=g)


def test_mlm_corrupt_exact_properties():
    tokens = _tokens(500)
    before = tokens.clone()
    inputs, labels = mlm_corrupt(tokens, MASK, VOCAB, SPECIALS, p=0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(tokens, before)                                   # not modified
    assert inputs.shape == labels.shape == tokens.shape and inputs.dtype == labels.dtype == torch.long
    excluded = torch.isin(tokens, torch.tensor([MASK, *SPECIALS]))
    selected = labels != -100
    assert not (selected & excluded).any()
    assert torch.equal(labels[selected], tokens[selected])
    assert torch.equal(inputs[~selected], tokens[~selected])
    assert not torch.isin(inputs[selected & (inputs != MASK)], torch.tensor(SPECIALS)).any()
    # p = 0 and p = 1
    i0, l0 = mlm_corrupt(tokens, MASK, VOCAB, SPECIALS, p=0.0)
    assert torch.equal(i0, tokens) and (l0 == -100).all()
    _, l1 = mlm_corrupt(tokens, MASK, VOCAB, SPECIALS, p=1.0)
    assert torch.equal(l1 != -100, ~excluded)


def test_mlm_corrupt_rates_match_bert():
    """Selection p among ordinary tokens; 80% mask, 10% uniform random ordinary token, 10% unchanged."""
    tokens = _tokens()
    p = 0.15
    inputs, labels = mlm_corrupt(tokens, MASK, VOCAB, SPECIALS, p=p, generator=torch.Generator().manual_seed(2))
    ordinary = ~torch.isin(tokens, torch.tensor([MASK, *SPECIALS]))
    selected = labels != -100
    n = int(ordinary.sum())

    def within(k, total, rate):
        return abs(k / total - rate) <= 6 * math.sqrt(rate * (1 - rate) / total)

    assert within(int(selected.sum()), n, p)
    s = int(selected.sum())
    n_ok = VOCAB - 1 - len(SPECIALS)
    assert within(int((inputs[selected] == MASK).sum()), s, 0.8)
    assert within(int((inputs[selected] == tokens[selected]).sum()), s, 0.1 + 0.1 / n_ok)
    other = inputs[selected & (inputs != MASK) & (inputs != tokens)]
    counts = torch.bincount(other, minlength=VOCAB)[5:].double()
    assert torch.bincount(other, minlength=VOCAB)[:5].sum() == 0
    chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
    assert chi2 < 60                                                     # 14 dof: far in the tail


def test_mlm_corrupt_is_reproducible_from_the_generator():
    tokens = _tokens(50)
    a = mlm_corrupt(tokens, MASK, VOCAB, SPECIALS, generator=torch.Generator().manual_seed(3))
    b = mlm_corrupt(tokens, MASK, VOCAB, SPECIALS, generator=torch.Generator().manual_seed(3))
    c = mlm_corrupt(tokens, MASK, VOCAB, SPECIALS, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
