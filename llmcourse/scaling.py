"""Scaling laws: power laws, the Chinchilla fits, and the compute of a training run.

Papers:

- Kaplan et al. (2020), "Scaling Laws for Neural Language Models", arXiv:2001.08361:
  losses follow power laws in parameters, data and compute; a training run costs about
  ``6 N D`` floating-point operations (section 2.1, eq. 2.2: ``C_forward = 2N + 2 n_layer
  n_ctx d_model`` per token, and the backward pass twice the forward).
- Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models" (Chinchilla),
  arXiv:2203.15556, section 3: three approaches to the compute-optimal model size.
  Approach 1 (section 3.1): the minimum loss over all runs at each FLOP count, the
  envelope of the training curves. Approach 2 (section 3.2): at a fixed FLOP budget a
  parabola of the loss against log N; its vertex is the optimal size (Figure 3).
  Approach 3 (section 3.3, eq. 2): the parametric loss ``L(N, D) = E + A/N^alpha +
  B/D^beta`` fitted by minimising the Huber loss (delta = 1e-3) of the log loss with
  L-BFGS from a grid of initialisations (Appendix D.2); its compute-optimal frontier in
  closed form (eq. 4). The paper's fit: E = 1.69, A = 406.4, B = 410.7, alpha = 0.34,
  beta = 0.28 (:data:`CHINCHILLA`).

Everything here works with numpy arrays (the fits use torch in float64 for L-BFGS);
scipy is not a dependency. Logarithms are natural.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

#: the paper's fitted parameters of eq. 2 (Hoffmann et al. 2022, section 3.3 / Appendix D.2)
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

#: the grid of initialisations of Appendix D.2: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1},
#: a, b in {0, 5, ..., 25}
PAPER_GRID = {"a": np.arange(0, 26, 5.0), "b": np.arange(0, 26, 5.0), "e": np.arange(-1, 1.01, 0.5),
              "alpha": np.arange(0, 2.01, 0.5), "beta": np.arange(0, 2.01, 0.5)}


def _positive_1d(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must hold positive finite numbers")
    return a


# ----------------------------------------------------------------------------- power laws


def fit_power_law(x, y) -> tuple[float, float]:
    """``(a, b)`` with ``y ≈ a x^b``: least squares of ``log y`` on ``log x``.

    1-D arrays (or tensors) of positive numbers of the same length, at least 2 points
    with at least two different x; ``ValueError`` otherwise.
    """
    x, y = _positive_1d(x, "x"), _positive_1d(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y have different lengths ({len(x)} and {len(y)})")
    if len(x) < 2:
        raise ValueError("a power law needs at least 2 points")
    lx, ly = np.log(x), np.log(y)
    if np.ptp(lx) == 0:
        raise ValueError("every x is the same: the exponent is undetermined")
    b, log_a = np.polyfit(lx, ly, 1)
    return float(math.exp(log_a)), float(b)


# ----------------------------------------------------------------------------- the parametric loss (approach 3)


def chinchilla_loss(N, D, params: dict):
    """``E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, eq. 2), broadcast over N and D.

    Floats in, float out; arrays in, numpy array out.
    """
    if isinstance(N, torch.Tensor):
        N = N.detach().cpu().numpy()
    if isinstance(D, torch.Tensor):
        D = D.detach().cpu().numpy()
    N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    out = params["E"] + params["A"] / N ** params["alpha"] + params["B"] / D ** params["beta"]
    return float(out) if np.ndim(out) == 0 else out


def _log_pred(theta: torch.Tensor, logN: torch.Tensor, logD: torch.Tensor) -> torch.Tensor:
    """log L predicted by ``theta = (a, b, e, alpha, beta)`` (any leading shape): a log-sum-exp."""
    a, b, e, alpha, beta = theta.unbind(-1)
    terms = torch.stack([a[..., None] - alpha[..., None] * logN, b[..., None] - beta[..., None] * logD,
                         e[..., None].expand(*e.shape, logN.shape[-1])], dim=-1)
    return torch.logsumexp(terms, dim=-1)


def huber(r: torch.Tensor, delta: float | None) -> torch.Tensor:
    """Huber's loss of residuals ``r``: ``r²/2`` within ``delta``, ``delta (|r| - delta/2)`` outside
    (``delta=None``: ``r²/2`` everywhere, least squares)."""
    if delta is None:
        return 0.5 * r * r
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def chinchilla_objective(theta, N, D, L, delta: float | None = 1e-3) -> torch.Tensor:
    """The objective of approach 3: ``sum_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e)
    - log L_i)`` for every row of ``theta`` (..., 5) at once."""
    logN, logD, logL = (torch.as_tensor(np.log(np.asarray(v, dtype=np.float64))) for v in (N, D, L))
    theta = torch.as_tensor(theta, dtype=torch.float64)
    return huber(_log_pred(theta, logN, logD) - logL, delta).sum(-1)


def _lbfgs(theta0: torch.Tensor, logN, logD, logL, delta: float | None, max_iter: int) -> tuple[torch.Tensor, float]:
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = huber(_log_pred(theta, logN, logD) - logL, delta).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = huber(_log_pred(theta, logN, logD) - logL, delta).sum().item()
    return theta.detach(), final


def fit_chinchilla(N, D, L, delta: float = 1e-3, grid: dict | None = None, n_starts: int = 32,
                   max_iter: int = 200, loss: str = "huber") -> dict:
    """Fit ``L(N, D) = E + A/N^alpha + B/D^beta`` as the paper's approach 3 (Appendix D.2).

    Minimises ``sum_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i)``
    over ``(a, b, e, alpha, beta)`` with torch's L-BFGS (float64, strong Wolfe line search).
    The starting points are a grid (default :data:`PAPER_GRID`, 4,500 points): the objective
    is evaluated at every one of them in one vectorised pass and L-BFGS runs from the
    ``n_starts`` best (``n_starts=None``: from every one, as the paper does; slow), keeping
    the best result. ``loss="squares"`` minimises ``(1/2) sum r_i^2`` instead (for comparison:
    least squares is pulled by outliers, the Huber loss much less).

    Returns ``{"E", "A", "B", "alpha", "beta"}`` (``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``)
    and ``"objective"``, the final value of the minimised loss.
    """
    N, D, L = (_positive_1d(v, name) for v, name in ((N, "N"), (D, "D"), (L, "L")))
    if not len(N) == len(D) == len(L):
        raise ValueError(f"N, D and L have different lengths ({len(N)}, {len(D)}, {len(L)})")
    if len(N) < 5:
        raise ValueError("five parameters need at least 5 runs")
    if loss == "squares":
        delta = None                                           # r²/2: least squares
    elif loss != "huber":
        raise ValueError(f"loss must be 'huber' or 'squares', got {loss!r}")
    g = grid or PAPER_GRID
    starts = torch.tensor(list(itertools.product(g["a"], g["b"], g["e"], g["alpha"], g["beta"])),
                          dtype=torch.float64)
    logN, logD, logL = (torch.as_tensor(np.log(v)) for v in (N, D, L))
    with torch.no_grad():
        first = huber(_log_pred(starts, logN, logD) - logL, delta).sum(-1)
    order = torch.argsort(first)
    if n_starts is not None:
        order = order[:n_starts]
    best, best_val = None, math.inf
    for i in order.tolist():
        theta, val = _lbfgs(starts[i], logN, logD, logL, delta, max_iter)
        if math.isfinite(val) and val < best_val:
            best, best_val = theta, val
    a, b, e, alpha, beta = best.tolist()
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta,
            "objective": best_val}


def compute_optimal(C, params: dict):
    """``(N_opt, D_opt)`` minimising :func:`chinchilla_loss` subject to ``C = 6 N D`` (paper eq. 4).

    ``G = (alpha A / (beta B))^(1 / (alpha + beta))``, ``N_opt = G (C/6)^(beta / (alpha + beta))``,
    ``D_opt = (C/6)^(alpha / (alpha + beta)) / G``. ``C`` a number (floats out) or an array.
    """
    A, B, alpha, beta = params["A"], params["B"], params["alpha"], params["beta"]
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    c6 = np.asarray(C, dtype=np.float64) / 6.0
    n_opt = G * c6 ** (beta / (alpha + beta))
    d_opt = c6 ** (alpha / (alpha + beta)) / G
    if np.ndim(n_opt) == 0:
        return float(n_opt), float(d_opt)
    return n_opt, d_opt


# ----------------------------------------------------------------------------- isoFLOP profiles (approach 2)


def isoflop_parabola(N, L) -> tuple[float, float, float]:
    """``(c2, c1, c0)`` of the least-squares parabola ``L ≈ c2 x² + c1 x + c0``, ``x = ln N``."""
    N, L = _positive_1d(N, "N"), np.asarray(L, dtype=np.float64)
    if L.shape != N.shape:
        raise ValueError(f"N and L have different shapes ({N.shape} and {L.shape})")
    if len(np.unique(N)) < 3:
        raise ValueError("a parabola needs at least 3 different model sizes")
    c2, c1, c0 = np.polyfit(np.log(N), L, 2)
    return float(c2), float(c1), float(c0)


def isoflop_minimum(N, L) -> float:
    """The model size at the vertex of the parabola of ``L`` against ``ln N`` (approach 2).

    ``ValueError`` for fewer than 3 points or a parabola that opens downwards (no minimum).
    """
    N = _positive_1d(N, "N")
    if len(N) < 3:
        raise ValueError("a parabola needs at least 3 points")
    c2, c1, _ = isoflop_parabola(N, L)
    if not c2 > 0:
        raise ValueError("the parabola has no minimum (it opens downwards or is a line)")
    return float(math.exp(-c1 / (2 * c2)))


# ----------------------------------------------------------------------------- the envelope (approach 1)


def envelope(curves: list[dict], flops) -> dict:
    """Approach 1: at each FLOP count in ``flops``, the run with the lowest loss.

    ``curves``: one dict per run with ``"N"`` (parameters), ``"flops"`` (increasing, the
    compute spent at each recorded point) and ``"loss"`` (the loss there). Each curve is
    interpolated linearly in (log FLOPs, loss) and only within its own range. Returns arrays
    ``flops``, ``loss`` (the envelope), ``N`` (the size of the best run there) and ``run``
    (its index); FLOP counts no run reaches are dropped.
    """
    flops = np.asarray(flops, dtype=np.float64)
    best_loss = np.full(flops.shape, np.inf)
    best_run = np.full(flops.shape, -1)
    lf = np.log(flops)
    for i, c in enumerate(curves):
        cf, cl = np.log(np.asarray(c["flops"], dtype=np.float64)), np.asarray(c["loss"], dtype=np.float64)
        inside = (lf >= cf[0]) & (lf <= cf[-1])
        val = np.interp(lf, cf, cl)
        better = inside & (val < best_loss)
        best_loss[better], best_run[better] = val[better], i
    keep = best_run >= 0
    sizes = np.array([c["N"] for c in curves], dtype=np.float64)
    return {"flops": flops[keep], "loss": best_loss[keep], "N": sizes[best_run[keep]], "run": best_run[keep]}


# ----------------------------------------------------------------------------- counting


def training_flops(n_params: int, n_layer: int, n_embd: int, block_size: int, tokens) -> float:
    """FLOPs of training on ``tokens`` tokens: ``6 N D + 6 n_layer n_ctx d_model D``.

    Kaplan et al. (2020) eq. 2.2: a forward pass costs ``2 N + 2 n_layer n_ctx d_attn`` per
    token (the weights, then the attention scores and their weighted sum over a context of
    ``n_ctx`` tokens, ``d_attn = d_model``); the backward pass twice that. ``N`` is the
    non-embedding count. The attention term is Kaplan's full-context count (a causal mask
    would halve it on average); for the course's tiny models at ``n_ctx = 128`` it is not
    small against ``6N``, so it is kept.
    """
    per_token = 6.0 * n_params + 6.0 * n_layer * block_size * n_embd
    return per_token * np.asarray(tokens, dtype=np.float64) if np.ndim(tokens) else per_token * float(tokens)


def non_embedding_params(n_layer: int, n_embd: int, bias: bool = True) -> int:
    """Parameters of the blocks of the course's GPT (attention, MLP, LayerNorms) and the final
    LayerNorm: ``12 n_layer d² `` plus biases and gains; no token or position embedding."""
    d = n_embd
    per_block = 12 * d * d + (13 * d if bias else 2 * d)      # 9d biases of the Linears, 2 LayerNorms
    return n_layer * per_block + (2 * d if bias else d)


# ----------------------------------------------------------------------------- the shipped grid


def load_runs(name: str = "scaling_runs.json") -> dict:
    """The grid of ``scripts/scaling_runs.py`` shipped in ``llmcourse/data`` (``{"meta", "runs"}``)."""
    import json

    from .data import data_path

    path = data_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in llmcourse/data: run scripts/scaling_runs.py to make it")
    return json.loads(path.read_text())


def analyse_grid(runs: list[dict], n_envelope: int = 40) -> dict:
    """The paper's three approaches on a grid of runs (each with ``budget``, ``N``, ``D``,
    ``final_loss`` and a ``curve`` of ``flops``, ``tokens``, ``val_loss``).

    - approach 1: :func:`envelope` of every curve at ``n_envelope`` FLOP counts (up to the end of the
      shortest run of the largest budget), the best run's
      N and tokens there, and power laws ``N_opt ∝ C^a``, ``D_opt ∝ C^b`` fitted to them;
    - approach 2: :func:`isoflop_minimum` at each budget; D_opt read off the budget's runs
      (log D interpolated against log N, since a run's FLOPs include attention); power laws;
    - approach 3: :func:`fit_chinchilla` on every run's final (N, D, loss), and eq. 4's exponents
      ``a = beta / (alpha + beta)``, ``b = alpha / (alpha + beta)``.
    """
    out: dict = {}
    budgets = sorted({r["budget"] for r in runs})
    curves = [{"N": r["N"], "flops": r["curve"]["flops"], "loss": r["curve"]["val_loss"],
               "tokens": r["curve"]["tokens"]} for r in runs]
    lo = min(c["flops"][1] for c in curves)
    # up to where every run of the largest budget has arrived: a run whose step count rounds up ends a little
    # beyond the others, and past their ends it would be the envelope alone (and not for being better)
    hi = min(c["flops"][-1] for c, r in zip(curves, runs) if r["budget"] == budgets[-1])
    env = envelope(curves, np.geomspace(lo, hi, n_envelope))
    env["D"] = np.array([np.exp(np.interp(np.log(f), np.log(curves[i]["flops"]), np.log(curves[i]["tokens"])))
                         for f, i in zip(env["flops"], env["run"])])
    distinct = len(np.unique(env["N"])) >= 2
    out["approach1"] = {**env, "a": fit_power_law(env["flops"], env["N"])[1] if distinct else float("nan"),
                        "b": fit_power_law(env["flops"], env["D"])[1] if distinct else float("nan")}
    profiles = []
    for C in budgets:
        at = sorted((r for r in runs if r["budget"] == C), key=lambda r: r["N"])
        N = np.array([r["N"] for r in at], dtype=np.float64)
        L = np.array([r["final_loss"] for r in at], dtype=np.float64)
        D = np.array([r["D"] for r in at], dtype=np.float64)
        try:
            n_opt = isoflop_minimum(N, L)
            parabola = isoflop_parabola(N, L)
        except ValueError:
            n_opt, parabola = float("nan"), None
        d_opt = float(np.exp(np.interp(np.log(n_opt), np.log(N), np.log(D),
                                       left=np.nan, right=np.nan))) if math.isfinite(n_opt) else float("nan")
        profiles.append({"C": C, "N": N, "D": D, "loss": L, "N_opt": n_opt, "D_opt": d_opt, "parabola": parabola,
                         "inside": bool(N[0] <= n_opt <= N[-1]) if math.isfinite(n_opt) else False})
    ok = [p for p in profiles if p["inside"] and math.isfinite(p["D_opt"])]
    out["approach2"] = {"profiles": profiles,
                        "a": fit_power_law([p["C"] for p in ok], [p["N_opt"] for p in ok])[1] if len(ok) >= 2 else
                        float("nan"),
                        "b": fit_power_law([p["C"] for p in ok], [p["D_opt"] for p in ok])[1] if len(ok) >= 2 else
                        float("nan")}
    N = np.array([r["N"] for r in runs], dtype=np.float64)
    D = np.array([r["D"] for r in runs], dtype=np.float64)
    L = np.array([r["final_loss"] for r in runs], dtype=np.float64)
    fit = fit_chinchilla(N, D, L)
    s = fit["alpha"] + fit["beta"]
    out["approach3"] = {"params": fit, "a": fit["beta"] / s, "b": fit["alpha"] / s}
    return out
