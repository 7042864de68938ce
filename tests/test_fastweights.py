"""Fast weights (Schmidhuber 1991) = causal linear attention (Schlag et al. 2021), and the
delta rule, each checked against a naive loop written independently here."""
from __future__ import annotations

import pytest
import torch

from llmcourse.fastweights import (FastWeightConfig, FastWeightLayer, causal_linear_attention,
                                   delta_rule, dpfp, elu_plus_one, fast_weight_programmer,
                                   identity, read)

torch.set_num_threads(1)
TOL = dict(atol=1e-10, rtol=1e-10)   # float64 throughout: the forms differ only by round-off


def inputs(B=3, T=7, dk=5, dv=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, T, dk, generator=g, dtype=torch.float64), torch.randn(B, T, dk, generator=g, dtype=torch.float64)
    return q, k, torch.randn(B, T, dv, generator=g, dtype=torch.float64)


def naive_linear_attention(q, k, v, phi, normalize):
    """y[b, t] = Σ_{j≤t} v[b, j] (phi(k[b, j])·phi(q[b, t])), scalar by scalar."""
    B, T, _ = q.shape
    y = torch.zeros(B, T, v.shape[-1], dtype=v.dtype)
    for b in range(B):
        for t in range(T):
            num, den = torch.zeros(v.shape[-1], dtype=v.dtype), 0.0
            for j in range(t + 1):
                s = float(torch.dot(phi(k[b, j]), phi(q[b, t])))
                num += s * v[b, j]
                den += s
            y[b, t] = num / (den + 1e-6) if normalize else num
    return y


def naive_delta(q, k, v, beta):
    """One sample at a time, W as a plain matrix, phi = identity."""
    B, T, _ = q.shape
    ys, Ws = [], []
    for b in range(B):
        W = torch.zeros(v.shape[-1], k.shape[-1], dtype=v.dtype)
        out = []
        for t in range(T):
            W = W + beta[b, t] * torch.outer(v[b, t] - W @ k[b, t], k[b, t])
            out.append(W @ q[b, t])
        ys.append(torch.stack(out))
        Ws.append(W)
    return torch.stack(ys), torch.stack(Ws)


@pytest.mark.parametrize("phi,normalize", [(identity, False), (elu_plus_one, False),
                                           (elu_plus_one, True), (dpfp, True)])
def test_fast_weights_equal_causal_linear_attention(phi, normalize):
    q, k, v = inputs()
    ref = naive_linear_attention(q, k, v, phi, normalize)
    y_fw, W = fast_weight_programmer(q, k, v, phi, normalize)
    y_att = causal_linear_attention(q, k, v, phi, normalize)
    torch.testing.assert_close(y_fw, ref, **TOL)
    torch.testing.assert_close(y_att, ref, **TOL)
    # the final fast weights are Σ_t v_t ⊗ phi(k_t) = Vᵀ phi(K)
    torch.testing.assert_close(W, v.transpose(1, 2) @ phi(k), **TOL)


def test_normalised_rows_are_convex_combinations():
    q, k, v = inputs()
    ones = torch.ones_like(v)
    torch.testing.assert_close(causal_linear_attention(q, k, ones, elu_plus_one, True), ones,
                               atol=1e-5, rtol=0)


def test_delta_rule_matches_naive_loop():
    q, k, v = inputs(T=9)
    beta = torch.rand(3, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, W = delta_rule(q, k, v, beta)
    y_ref, W_ref = naive_delta(q, k, v, beta)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(W, W_ref, **TOL)
    # a scalar β is broadcast over batch and time
    torch.testing.assert_close(delta_rule(q, k, v, 0.3)[0], naive_delta(q, k, v, torch.full((3, 9), 0.3, dtype=torch.float64))[0], **TOL)


def orthonormal_keys(B, N, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(B, d, d, generator=g, dtype=torch.float64))[0]   # columns orthonormal
    return Q.transpose(1, 2)[:, :N]                                                  # (B, N, d), rows orthonormal


@pytest.mark.parametrize("N", [1, 5, 8])
def test_sum_rule_recalls_exactly_with_orthonormal_keys(N):
    d = 8
    k = orthonormal_keys(2, N, d)
    v = torch.randn(2, N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, W = fast_weight_programmer(k, k, v)
    torch.testing.assert_close(read(W, k), v, **TOL)


def test_sum_rule_cannot_recall_more_than_d_pairs():
    d, N = 8, 12
    g = torch.Generator().manual_seed(3)
    k = torch.nn.functional.normalize(torch.randn(1, N, d, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(1, N, 3, generator=g, dtype=torch.float64)
    for rule in (lambda: fast_weight_programmer(k, k, v)[1], lambda: delta_rule(k, k, v, 1.0)[1]):
        assert (read(rule(), k) - v).abs().max() > 0.1      # rank d < N: no linear memory is exact


def test_delta_rule_overwrites_a_key_written_twice():
    d = 6
    keys = orthonormal_keys(1, 3, d)                          # three distinct keys
    k = keys[:, [0, 1, 0, 2]]                                 # key 0 written at t=0 and again at t=2
    v = torch.randn(1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, W = delta_rule(k, k, v, 1.0)
    torch.testing.assert_close(read(W, keys)[0], v[0, [2, 1, 3]], **TOL)   # latest value of each key
    _, W_sum = fast_weight_programmer(k, k, v)                # the sum rule returns old + new
    torch.testing.assert_close(read(W_sum, keys[:, :1])[0, 0], v[0, 0] + v[0, 2], **TOL)


def test_delta_rule_writes_the_last_pair_exactly_even_with_random_keys():
    g = torch.Generator().manual_seed(5)
    k = torch.nn.functional.normalize(torch.randn(2, 20, 8, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(2, 20, 3, generator=g, dtype=torch.float64)
    _, W = delta_rule(k, k, v, 1.0)
    torch.testing.assert_close(read(W, k[:, -1:]), v[:, -1:], **TOL)


def test_shapes_and_batch_independence():
    q, k, v = inputs(B=4, T=6, dk=5, dv=3)
    assert dpfp(q, nu=3).shape == (4, 6, 2 * 5 * 3)
    y, W = fast_weight_programmer(q, k, v, dpfp)
    assert y.shape == (4, 6, 3) and W.shape == (4, 3, 10)
    y_d, W_d = delta_rule(q, k, v, 0.5)
    assert y_d.shape == (4, 6, 3) and W_d.shape == (4, 3, 5)
    for b in range(4):   # each batch element computed alone gives the same answer
        sl = slice(b, b + 1)
        torch.testing.assert_close(fast_weight_programmer(q[sl], k[sl], v[sl], dpfp)[0], y[sl], **TOL)
        torch.testing.assert_close(delta_rule(q[sl], k[sl], v[sl], 0.5)[0], y_d[sl], **TOL)


@pytest.mark.parametrize("cfg", [FastWeightConfig(update="sum"),
                                 FastWeightConfig(update="sum", feature_map="elu+1", normalize=True),
                                 FastWeightConfig(update="delta", feature_map="dpfp"),
                                 FastWeightConfig(update="delta", delta_norm="l2")])
def test_layer_is_causal(cfg):
    torch.manual_seed(0)
    layer = FastWeightLayer(cfg).double()
    x = torch.randn(2, 10, cfg.d_model, dtype=torch.float64)
    y = layer(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 6:] = torch.randn(2, 4, cfg.d_model, dtype=torch.float64)   # change the future only
    y2 = layer(x2)
    torch.testing.assert_close(y2[:, :6], y[:, :6], **TOL)
    assert (y2[:, 6:] - y[:, 6:]).abs().max() > 1e-3                    # and the future does change


def test_functions_are_causal():
    q, k, v = inputs(T=8)
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    for t in (q2, k2, v2):
        t[:, 5:] += 1.0
    for f in (lambda a, b, c: fast_weight_programmer(a, b, c)[0], causal_linear_attention,
              lambda a, b, c: delta_rule(a, b, c, 0.7)[0]):
        torch.testing.assert_close(f(q2, k2, v2)[:, :5], f(q, k, v)[:, :5], **TOL)


def test_layer_sum_is_linear_attention_of_its_projections():
    torch.manual_seed(1)
    layer = FastWeightLayer(FastWeightConfig(feature_map="elu+1", normalize=True)).double()
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    ref = layer.w_o(causal_linear_attention(layer.w_q(x), layer.w_k(x), layer.w_v(x), elu_plus_one, True))
    torch.testing.assert_close(layer(x), ref, **TOL)


def test_config_rejects_unknown_update():
    with pytest.raises(ValueError):
        FastWeightLayer(FastWeightConfig(update="hebb"))


def test_dpfp_matches_its_definition():
    """Schlag et al. 2021 eq. 37: r = ReLU([x, -x]); phi_{(j-1)·2d + i} = r_i r_{i-j}, j = 1..nu."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    r = torch.cat([x.clamp(min=0), (-x).clamp(min=0)], dim=-1)
    n = r.shape[-1]
    ref = torch.tensor([[float(r[b, i] * r[b, (i - j) % n]) for j in (1, 2) for i in range(n)]
                        for b in range(3)], dtype=torch.float64)
    torch.testing.assert_close(dpfp(x, nu=2), ref, **TOL)
    assert (dpfp(x) >= 0).all()


@pytest.mark.parametrize("norm", ["sum", "l2"])
def test_layer_delta_normalises_keys_and_queries(norm):
    """delta_norm='sum' divides phi(k) and phi(q) by the sum of their entries (Schlag et al.'s
    layer), 'l2' scales both to unit length; checked against delta_rule on hand-normalised inputs."""
    torch.manual_seed(0)
    fmap = "dpfp" if norm == "sum" else "identity"
    layer = FastWeightLayer(FastWeightConfig(update="delta", feature_map=fmap, delta_norm=norm)).double()
    x = torch.randn(2, 9, layer.cfg.d_model, dtype=torch.float64)
    with torch.no_grad():
        fk, fq = layer.phi(layer.w_k(x)), layer.phi(layer.w_q(x))
        if norm == "sum":
            fk, fq = fk / (fk.sum(-1, keepdim=True) + 1e-6), fq / (fq.sum(-1, keepdim=True) + 1e-6)
        else:
            fk, fq = fk / (fk.norm(dim=-1, keepdim=True) + 1e-6), fq / (fq.norm(dim=-1, keepdim=True) + 1e-6)
        beta = torch.sigmoid(layer.w_beta(x)).squeeze(-1)
        want = layer.w_o(delta_rule(fq, fk, layer.w_v(x), beta)[0])
        torch.testing.assert_close(layer(x), want)


def test_delta_norm_is_a_checked_switch():
    with pytest.raises(ValueError, match="delta_norm"):
        FastWeightLayer(FastWeightConfig(update="delta", delta_norm="max"))
    with pytest.raises(ValueError, match="positive"):
        FastWeightLayer(FastWeightConfig(update="delta", feature_map="identity", delta_norm="sum"))


def test_delta_rule_starts_from_the_given_fast_weights():
    """With W0 the recursion starts there; two halves chained through W equal the whole sequence."""
    q, k, v = inputs(B=2, T=8, dk=4, dv=3, seed=5)
    beta = torch.rand(2, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    W0 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y, W = delta_rule(q, k, v, beta, W0=W0.clone())
    for b in range(2):                                        # naive loop from W0
        Wb = W0[b].clone()
        for t in range(8):
            Wb = Wb + beta[b, t] * torch.outer(v[b, t] - Wb @ k[b, t], k[b, t])
            torch.testing.assert_close(y[b, t], Wb @ q[b, t], **TOL)
        torch.testing.assert_close(W[b], Wb, **TOL)
    whole, W_whole = delta_rule(q, k, v, beta)
    y1, W1 = delta_rule(q[:, :5], k[:, :5], v[:, :5], beta[:, :5])
    y2, W2 = delta_rule(q[:, 5:], k[:, 5:], v[:, 5:], beta[:, 5:], W0=W1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), whole, **TOL)
    torch.testing.assert_close(W2, W_whole, **TOL)
    assert not torch.allclose(delta_rule(q[:, 5:], k[:, 5:], v[:, 5:], beta[:, 5:])[0], y2)
