"""Fast-weight programmers, which are linear attention, and the delta rule.

Papers:
- Schmidhuber (1991), "Learning to Control Fast-Weight Memories: An Alternative to
  Dynamic Recurrent Networks", TU Munich report FKI-147-91; Neural Computation 4(1),
  131-139 (1992). A slow net emits, at every step, a key and a value; the fast weight
  matrix is changed by their outer product, and the fast net reads it with a query.
- Schlag, Irie, Schmidhuber (2021), "Linear Transformers Are Secretly Fast Weight
  Programmers", ICML, arXiv:2102.11174: unnormalised linear attention *is* the
  fast-weight programmer; its capacity is the feature dimension and the delta-rule
  update manages it (Sec. 4); the DPFP feature map (their new kernel).
- Katharopoulos, Vyas, Pappas, Fleuret (2020), "Transformers are RNNs: Fast
  Autoregressive Transformers with Linear Attention", arXiv:2006.16236 (Sec. 3):
  causal linear attention with the normaliser, its RNN form, the ELU+1 feature map.

In reading order:
1. feature maps phi (identity, ELU+1, DPFP);
2. ``fast_weight_programmer``: the recurrent form, W_t = W_{t-1} + v_t ⊗ phi(k_t),
   y_t = W_t phi(q_t), one (d_v, d_phi) matrix carried through time;
3. ``causal_linear_attention``: the attention form, y_t = Σ_{j≤t} v_j phi(k_j)ᵀ phi(q_t),
   a masked (T, T) matrix of scores, computed in parallel;
4. ``delta_rule``: W_t = W_{t-1} + β_t (v_t - W_{t-1} phi(k_t)) ⊗ phi(k_t);
5. ``FastWeightLayer``: a slow net (linear maps to q, k, v, β) that programs the fast
   weights, with a typed config.

Checked against naive double loops in ``tests/test_fastweights.py``.
Shapes: B batch, T time, d_k key/query width, d_v value width, d_phi feature width.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- feature maps

def identity(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = x: the plain outer-product memory of 1991, used for the recall experiments."""
    return x


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = ELU(x) + 1 > 0 (Katharopoulos et al. 2020); d_phi = d_k."""
    return F.elu(x) + 1.0


def dpfp(x: torch.Tensor, nu: int = 1) -> torch.Tensor:
    """Deterministic parameter-free projection (Schlag et al. 2021).

    r = ReLU([x, -x]) has 2 d_k entries; phi multiplies r elementwise with r rolled by
    1..nu places and concatenates, so d_phi = 2 d_k nu: a larger memory for the same key.
    """
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)                       # (..., 2 d_k)
    rolled = torch.cat([r.roll(shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)
    return torch.cat([r] * nu, dim=-1) * rolled                          # (..., 2 d_k nu)


# ----------------------------------------------------------------------------- sum rule, two ways

def fast_weight_programmer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           phi: FeatureMap = identity, normalize: bool = False,
                           eps: float = 1e-6):
    """The recurrent form: program a fast weight matrix by outer products, read it with q.

    q, k: (B, T, d_k); v: (B, T, d_v). Returns y (B, T, d_v) and the final fast weights
    W_T (B, d_v, d_phi). With ``normalize`` the read is divided by z_t·phi(q_t), where
    z_t = Σ_{j≤t} phi(k_j) (Katharopoulos et al. 2020, RNN form); phi must then be positive.
    """
    fq, fk = phi(q), phi(k)                                   # (B, T, d_phi)
    B, T, d_v = v.shape
    W = v.new_zeros(B, d_v, fk.size(-1))                      # fast weights (B, d_v, d_phi)
    z = v.new_zeros(B, fk.size(-1))                           # normaliser   (B, d_phi)
    ys = []
    for t in range(T):
        W = W + v[:, t, :, None] * fk[:, t, None, :]          # write: W += v_t ⊗ phi(k_t)
        y = (W @ fq[:, t, :, None]).squeeze(-1)               # read:  y_t = W_t phi(q_t)  (B, d_v)
        if normalize:
            z = z + fk[:, t]
            y = y / ((z * fq[:, t]).sum(-1, keepdim=True) + eps)
        ys.append(y)
    return torch.stack(ys, dim=1), W                          # (B, T, d_v), (B, d_v, d_phi)


def causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            phi: FeatureMap = identity, normalize: bool = False,
                            eps: float = 1e-6) -> torch.Tensor:
    """The attention form: softmax(q kᵀ) replaced by phi(q) phi(k)ᵀ, causally masked.

    q, k: (B, T, d_k); v: (B, T, d_v) -> y (B, T, d_v), where
    y_t = Σ_{j≤t} v_j phi(k_j)ᵀ phi(q_t)  [/ Σ_{j≤t} phi(k_j)ᵀ phi(q_t) with ``normalize``].
    """
    T = q.size(1)
    scores = phi(q) @ phi(k).transpose(-2, -1)                # (B, T, T): entry [t, j] = phi(q_t)·phi(k_j)
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()   # j <= t
    scores = scores.masked_fill(~keep, 0.0)                   # no softmax, so masked scores are 0
    y = scores @ v                                            # (B, T, d_v)
    if normalize:
        y = y / (scores.sum(-1, keepdim=True) + eps)
    return y


# ----------------------------------------------------------------------------- delta rule

def delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta,
               phi: FeatureMap = identity, W0: torch.Tensor | None = None):
    """Fast weights written with the delta rule (Schlag et al. 2021, Sec. 4).

    Before writing, the memory is read at the key: v̄_t = W_{t-1} phi(k_t). The write then
    replaces that old value by a mix of old and new, β_t v_t + (1-β_t) v̄_t:
        W_t = W_{t-1} + β_t (v_t - W_{t-1} phi(k_t)) ⊗ phi(k_t).
    With a unit-norm phi(k_t) and β_t = 1 the memory returns exactly v_t at that key.
    The paper also normalises phi(k) and phi(q), each by the sum of its entries; here that
    is left to the caller (``FastWeightLayer`` does it, ``FastWeightConfig.delta_norm``),
    so the rule stays one line.

    q, k: (B, T, d_k); v: (B, T, d_v); beta: a float or (B, T) in [0, 1];
    W0: optional starting fast weights (B, d_v, d_phi).
    Returns y (B, T, d_v) with y_t = W_t phi(q_t), and the final W_T (B, d_v, d_phi).
    """
    fq, fk = phi(q), phi(k)                                   # (B, T, d_phi)
    B, T, d_v = v.shape
    beta = torch.as_tensor(beta, dtype=v.dtype, device=v.device).expand(B, T)
    W = v.new_zeros(B, d_v, fk.size(-1)) if W0 is None else W0
    ys = []
    for t in range(T):
        v_old = (W @ fk[:, t, :, None]).squeeze(-1)           # what the memory holds at k_t  (B, d_v)
        delta = beta[:, t, None] * (v[:, t] - v_old)          # (B, d_v)
        W = W + delta[:, :, None] * fk[:, t, None, :]         # W += β (v - v̄) ⊗ phi(k_t)
        ys.append((W @ fq[:, t, :, None]).squeeze(-1))        # y_t = W_t phi(q_t)
    return torch.stack(ys, dim=1), W


def read(W: torch.Tensor, q: torch.Tensor, phi: FeatureMap = identity) -> torch.Tensor:
    """Query fast weights W (B, d_v, d_phi) with q (B, N, d_k) -> (B, N, d_v)."""
    return phi(q) @ W.transpose(-2, -1)


# ----------------------------------------------------------------------------- the slow net

@dataclass
class FastWeightConfig:
    d_model: int = 32        # width of the layer's input and output
    d_key: int = 16          # width of keys and queries before the feature map
    d_value: int = 16        # width of values (rows of the fast weight matrix)
    update: str = "sum"      # "sum" (1991 / linear attention) or "delta" (Schlag et al. 2021)
    feature_map: str = "identity"   # "identity", "elu+1" or "dpfp"
    normalize: bool = False  # divide by z_t·phi(q_t) (sum rule only, needs a positive phi)
    # delta rule only: how phi(k) and phi(q) are normalised before the write and the read.
    # "sum": each divided by the sum of its entries, as the paper does (needs a positive phi);
    # "l2": each scaled to unit Euclidean length, so a β = 1 write is exactly recalled
    # (the chapter's recall experiments use unit keys; a departure from the paper).
    delta_norm: str = "sum"


FEATURE_MAPS: dict[str, FeatureMap] = {"identity": identity, "elu+1": elu_plus_one, "dpfp": dpfp}


class FastWeightLayer(nn.Module):
    """A slow net (linear maps) that programs fast weights at every step of a sequence.

    Slow weights, learned by gradient descent: x_t -> q_t, k_t, v_t (and β_t for the
    delta rule). Fast weights, set within the sequence: W_t, by the chosen update rule.
    """

    def __init__(self, cfg: FastWeightConfig):
        super().__init__()
        if cfg.update not in ("sum", "delta"):
            raise ValueError(f"update must be 'sum' or 'delta', not {cfg.update!r}")
        if cfg.normalize and cfg.update == "delta":
            raise ValueError("normalize applies to the sum rule; the delta rule keeps W bounded itself")
        if cfg.delta_norm not in ("sum", "l2"):
            raise ValueError(f"delta_norm must be 'sum' or 'l2', not {cfg.delta_norm!r}")
        if cfg.update == "delta" and cfg.delta_norm == "sum" and cfg.feature_map == "identity":
            raise ValueError("delta_norm='sum' divides by the sum of phi's entries, which needs a positive "
                             "feature map ('elu+1' or 'dpfp'); use delta_norm='l2' with 'identity'")
        self.cfg = cfg
        self.phi = FEATURE_MAPS[cfg.feature_map]
        self.w_q = nn.Linear(cfg.d_model, cfg.d_key, bias=False)
        self.w_k = nn.Linear(cfg.d_model, cfg.d_key, bias=False)
        self.w_v = nn.Linear(cfg.d_model, cfg.d_value, bias=False)
        self.w_beta = nn.Linear(cfg.d_model, 1)               # used by the delta rule only
        self.w_o = nn.Linear(cfg.d_value, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, d_model) -> (B, T, d_model); causal: y_t depends on x_1..x_t only."""
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)      # (B, T, d_key), (B, T, d_key), (B, T, d_value)
        if self.cfg.update == "sum":
            y, _ = fast_weight_programmer(q, k, v, self.phi, self.cfg.normalize)
        else:
            fk, fq = self.phi(k), self.phi(q)                 # (B, T, d_phi)
            if self.cfg.delta_norm == "sum":                  # the paper: phi / sum of its entries
                fk = fk / (fk.sum(-1, keepdim=True) + 1e-6)
                fq = fq / (fq.sum(-1, keepdim=True) + 1e-6)
            else:                                             # unit length: a β=1 write is exact
                fk = fk / (fk.norm(dim=-1, keepdim=True) + 1e-6)
                fq = fq / (fq.norm(dim=-1, keepdim=True) + 1e-6)
            beta = torch.sigmoid(self.w_beta(x)).squeeze(-1)  # (B, T), learned write strength
            y, _ = delta_rule(fq, fk, v, beta)                # phi already applied
        return self.w_o(y)
