"""Hidden tests of the `scaling_laws` assignment (solutions/scaling_laws/scaling_laws.ipynb).

Papers: Kaplan et al. (2020), "Scaling Laws for Neural Language Models", arXiv:2001.08361
(power laws); Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models",
arXiv:2203.15556, section 3.2 (isoFLOP parabolas), section 3.3 and Appendix D.2 (eq. 2 fitted
with the Huber loss, delta = 1e-3, and L-BFGS from a grid of starts) and eq. 4. The learner
writes ``fit_power_law(x, y)``, ``chinchilla_loss(N, D, params)``, ``fit_chinchilla(N, D, L)``,
``compute_optimal(C, params)`` and ``isoflop_minimum(N, L)``; numpy or torch (contract in
issue 19).

References here are written out independently of ``llmcourse.scaling``: closed-form least
squares, eq. 2 and eq. 4 as formulas, and synthetic runs with known parameters for the fit
(noise-free, so a correct fit recovers them; then with outliers, which pull a least-squares
fit and not a Huber one). When a value check fails, the learner's answer is compared with
a catalogue of known mistakes and the message names the one it matches. Calling
``llmcourse.scaling`` gets no credit.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..common import Forbidden, _module_file, call_learner, graded

NO_LIBRARY = Forbidden(files={p: "the course's own llmcourse.scaling" for m in ("llmcourse.scaling",)
                              if (p := _module_file(m))})

KEYS = ("E", "A", "B", "alpha", "beta")
PAPER = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
TOY = {"E": 1.5, "A": 250.0, "B": 600.0, "alpha": 0.35, "beta": 0.3}       # the clean-fit test
TOY2 = {"E": 0.8, "A": 80.0, "B": 2000.0, "alpha": 0.3, "beta": 0.42}      # the outlier test


# ----------------------------------------------------------------------------- helpers


def _call(fn, *args, what):
    return call_learner(fn, *args, what=what, forbid=NO_LIBRARY)


def _num(v, what: str) -> float:
    """A number the learner returned, as a float; a clear failure if it is not one."""
    if isinstance(v, torch.Tensor):
        assert v.numel() == 1, f"{what} is a tensor of shape {tuple(v.shape)}, not a number"
        return float(v.item())
    if isinstance(v, np.ndarray):
        assert v.size == 1, f"{what} is an array of shape {v.shape}, not a number"
        return float(v.reshape(()))
    assert isinstance(v, (int, float, np.number)) and not isinstance(v, bool), (
        f"{what} should be a number, got {type(v).__name__}")
    return float(v)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _near(a: float, b: float, rtol: float) -> bool:
    return math.isfinite(a) and _rel(a, b) <= rtol


def _pair(out, what: str) -> tuple:
    assert isinstance(out, (tuple, list)) and len(out) == 2, (
        f"{what} should return a pair (a tuple of two values), got {type(out).__name__}"
        + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    return out


def _expect_value_error(fn, args, what: str, why: str) -> None:
    try:
        out = _call(fn, *args, what=what)
    except AssertionError as e:
        msg = str(e)
        raised = getattr(e, "raised", None)
        if isinstance(raised, type) and issubclass(raised, ValueError):      # subclasses are ValueErrors too
            return
        if msg.startswith(f"{what} raised "):
            kind = msg[len(f"{what} raised "):].split(":")[0].split(" ")[0]
            raise AssertionError(f"{what} raised {kind}; it should raise ValueError ({why})") from None
        raise
    raise AssertionError(f"{what} returned {out!r} instead of raising ValueError ({why}): check the input "
                         f"first and `raise ValueError(...)`")


def _match(got: tuple, variants: dict, rtol: float = 1e-4) -> str | None:
    """The first variant (message -> tuple of floats) that ``got`` equals, if any."""
    for message, want in variants.items():
        try:
            if all(_near(g, w, rtol) for g, w in zip(got, want, strict=True)):
                return message
        except (ValueError, TypeError, OverflowError, ZeroDivisionError):
            continue
    return None


def _lstsq_line(u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line v ≈ slope u + intercept (closed form)."""
    um, vm = u.mean(), v.mean()
    slope = float(((u - um) * (v - vm)).sum() / ((u - um) ** 2).sum())
    return slope, float(vm - slope * um)


# ----------------------------------------------------------------------------- fit_power_law


def _power_cases():
    g = np.random.default_rng(11)
    x1 = np.array([1e3, 3e3, 1e4, 5e4, 2e5])
    x2 = np.exp(g.uniform(0.0, 6.0, 25))
    x3 = np.geomspace(1e17, 1e21, 6)                 # FLOP counts: large numbers, positive exponent
    return [("exact, y = 3.5 x^-0.37", x1, 3.5 * x1 ** -0.37),
            ("noisy, y ≈ 2 x^0.8", x2, 2.0 * x2 ** 0.8 * np.exp(g.normal(0.0, 0.3, 25))),
            ("FLOP-sized x, y = 0.1 x^0.5", x3, 0.1 * x3 ** 0.5)]


def _power_variants(x, y):
    lx, ly = np.log(x), np.log(y)
    b, la = _lstsq_line(lx, ly)
    b10, la10 = _lstsq_line(np.log10(x), np.log10(y))
    bl, al = _lstsq_line(x, y)
    by, ay = _lstsq_line(lx, y)
    b1, la1 = _lstsq_line(np.log10(x), ly)               # log10 of x, natural log of y
    b2, la2 = _lstsq_line(lx, np.log10(y))               # natural log of x, log10 of y
    mixed = ("log10 on one side and the natural log on the other: take the same logarithm of x and of y "
             "(np.log), or the slope is not b")
    return {
        "the outputs are swapped: return (a, b), the factor first and the exponent second": (b, math.exp(la)),
        "a is returned as log(a): the intercept of the line is log a; return a = exp(intercept)": (la, b),
        "log10 and the natural log are mixed: the intercept of a fit in log10 is log10(a), so a = 10**intercept, "
        "not exp(intercept)": (math.exp(la10), b10),
        "the fit is in linear space: fit log y against log x (a straight line in log-log space)": (al, bl),
        "the fit is in linear space: fit log y against log x (a straight line in log-log space)  ": (bl, al),
        "y was not logged: fit log y (not y) against log x": (math.exp(ay), by),
        "y was not logged: fit log y (not y) against log x  ": (ay, by),
        mixed: (math.exp(la1), b1),
        mixed + " ": (10 ** la1, b1),
        mixed + "  ": (10 ** la2, b2),
        mixed + "   ": (math.exp(la2), b2),
    }


@graded("fit_power_law: y ≈ a x^b by least squares of log y on log x, Python floats out")
def check_power_law_values(fit_power_law):
    for desc, x, y in _power_cases():
        for kind, (xx, yy) in (("numpy arrays", (x, y)), ("torch tensors", (torch.tensor(x), torch.tensor(y)))):
            what = f"fit_power_law({desc}, {kind})"
            out = _pair(_call(fit_power_law, xx, yy, what=what), what)
            for name, v in zip("ab", out):
                assert isinstance(v, float), (
                    f"{what}: {name} is a {type(v).__name__}; return Python floats (float(...))")
            a, b = out
            b_ref, la_ref = _lstsq_line(np.log(x), np.log(y))
            a_ref = math.exp(la_ref)
            if not (_near(a, a_ref, 1e-4) and _near(b, b_ref, 1e-4)):          # float32 arithmetic passes
                why = _match((a, b), _power_variants(x, y), 1e-3)
                raise AssertionError(
                    f"{what} returned (a, b) = ({a:.6g}, {b:.6g}); least squares of log y on log x gives "
                    f"({a_ref:.6g}, {b_ref:.6g}). " + (why.strip() if why else
                                                       "Fit the line log y = log a + b log x by least squares."))


@graded("fit_power_law: ValueError for non-positive values, fewer than 2 points, mismatched lengths")
def check_power_law_errors(fit_power_law):
    ok = np.array([1.0, 2.0, 4.0])
    _call(fit_power_law, ok, 3.0 * ok, what="fit_power_law on three good points")
    cases = [
        ("a zero in x", (np.array([0.0, 2.0, 4.0]), ok), "log 0 is undefined"),
        ("a negative y", (ok, np.array([1.0, -2.0, 3.0])), "the log of a negative number is undefined"),
        ("a zero in y", (ok, np.array([1.0, 0.0, 3.0])), "log 0 is undefined"),
        ("one point", (np.array([2.0]), np.array([3.0])), "a line needs at least 2 points"),
        ("x of length 3 and y of length 2", (ok, np.array([1.0, 2.0])), "the lengths differ"),
    ]
    for desc, args, why in cases:
        _expect_value_error(fit_power_law, args, f"fit_power_law with {desc}", why)


# ----------------------------------------------------------------------------- chinchilla_loss


def _loss_ref(N, D, p):
    return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


def _loss_variants(N, D, p):
    E, A, B, al, be = (p[k] for k in KEYS)
    return {
        "the exponents are swapped: alpha goes with N, beta with D": E + A / N ** be + B / D ** al,
        "N and D are swapped: A / N^alpha is the parameter term, B / D^beta the data term":
            E + A / D ** al + B / N ** be,
        "A and B are swapped: A goes with N, B with D": E + B / N ** al + A / D ** be,
        "E is missing: the loss is E + A / N^alpha + B / D^beta": A / N ** al + B / D ** be,
        "the terms are multiplied by N^alpha and D^beta instead of divided": E + A * N ** al + B * D ** be,
    }


@graded("chinchilla_loss: E + A / N^alpha + B / D^beta, float in, float out")
def check_chinchilla_loss_values(chinchilla_loss):
    for p in (PAPER, TOY2):
        for N, D in ((7.0e10, 1.4e12), (2.5e5, 3.0e7), (1e3, 1e9)):
            what = f"chinchilla_loss({N:g}, {D:g}, {p})"
            out = _call(chinchilla_loss, N, D, dict(p), what=what)
            assert isinstance(out, float) and not isinstance(out, np.ndarray), (
                f"{what} returned a {type(out).__name__}: a float in gives a float out (float(...))")
            want = _loss_ref(N, D, p)
            if not _near(out, want, 1e-6):
                why = _match((out,), {k: (v,) for k, v in _loss_variants(N, D, p).items()}, 1e-5)
                raise AssertionError(f"{what} returned {out!r}, expected {want!r}"
                                     + (f": {why}" if why else ""))


@graded("chinchilla_loss: broadcasts over numpy arrays of N and D, numpy out")
def check_chinchilla_loss_arrays(chinchilla_loss):
    Ns = np.array([1e4, 1e5, 1e6])
    Ds = np.array([1e6, 3e6, 1e7, 3e7])
    cases = [("N of shape (3, 1) and D of shape (1, 4)", Ns[:, None], Ds[None, :]),
             ("N of shape (3,) and D of shape (3,)", Ns, Ds[:3]),
             ("N of shape (3,) and a float D", Ns, 5e6),
             ("a float N and D of shape (4,)", 2e5, Ds)]
    for desc, N, D in cases:
        what = f"chinchilla_loss with {desc}"
        out = _call(chinchilla_loss, N, D, dict(TOY), what=what)
        want = _loss_ref(np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64), TOY)
        assert isinstance(out, np.ndarray), (
            f"{what} returned a {type(out).__name__}: numpy in, numpy out (compute with numpy operations, "
            f"which broadcast)")
        assert out.shape == want.shape, (
            f"{what} returned shape {out.shape}, expected {want.shape}: let numpy broadcast N against D "
            f"(no loops over pairs, no np.outer)")
        if not np.allclose(out, want, rtol=1e-6, atol=0):
            why = _match(tuple(out.ravel()), {k: tuple(np.broadcast_to(v, want.shape).ravel())
                                             for k, v in _loss_variants(np.asarray(N, float), np.asarray(D, float),
                                                                        TOY).items()}, 1e-5)
            raise AssertionError(f"{what}: wrong values" + (f": {why}" if why else ""))


# ----------------------------------------------------------------------------- fit_chinchilla


def _runs(p, n, seed, outliers=0):
    """Synthetic runs: sizes from 1e4 to 1e7, tokens from 1e6 to 1e9, losses of eq. 2 exactly;
    ``outliers`` of them (spread over the grid) multiplied by 1.3 to 1.6 (diverged runs)."""
    g = np.random.default_rng(seed)
    N = np.exp(g.uniform(math.log(1e4), math.log(1e7), n))
    D = np.exp(g.uniform(math.log(1e6), math.log(1e9), n))
    L = _loss_ref(N, D, p)
    if outliers:
        idx = g.choice(n, outliers, replace=False)
        L[idx] *= g.uniform(1.3, 1.6, outliers)
    return N, D, L


def _fit_result(fit, what) -> dict:
    assert isinstance(fit, dict), f"{what} should return a dict of the five parameters, got {type(fit).__name__}"
    missing = [k for k in KEYS if k not in fit]
    assert not missing, (f"{what} returned a dict without the key(s) {missing}: the keys are "
                         f"\"E\", \"A\", \"B\", \"alpha\", \"beta\"")
    return {k: _num(fit[k], f"{what}[{k!r}]") for k in KEYS}


def _fit_ok(got: dict, p: dict, tol: dict) -> bool:
    return all(_near(got[k], p[k], tol[k]) for k in KEYS)


def _fit_variants(p):
    logs = {**p, "E": math.log(p["E"]), "A": math.log(p["A"]), "B": math.log(p["B"])}
    return {
        "E, A and B are returned as their logs e, a, b: return E = exp(e), A = exp(a), B = exp(b)": logs,
        "A and B are returned as their logs: return A = exp(a), B = exp(b)": {**logs, "E": p["E"]},
        "alpha and beta are swapped: alpha is the exponent of N (with a), beta that of D (with b)":
            {**p, "alpha": p["beta"], "beta": p["alpha"]},
        "the parameter and data terms are swapped: (a, alpha) go with log N, (b, beta) with log D":
            {**p, "A": p["B"], "B": p["A"], "alpha": p["beta"], "beta": p["alpha"]},
        "A and B are swapped: A = exp(a) goes with N, B = exp(b) with D": {**p, "A": p["B"], "B": p["A"]},
    }


def _show(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {d[k]:.4g}" for k in KEYS) + "}"


TOL = {"E": 0.02, "A": 0.1, "B": 0.1, "alpha": 0.02, "beta": 0.02}


@graded("fit_chinchilla: recovers known E, A, B, alpha, beta from noise-free synthetic runs")
def check_fit_clean(fit_chinchilla):
    N, D, L = _runs(TOY, 40, seed=5)
    what = "fit_chinchilla(N, D, L) on 40 noise-free runs of known parameters"
    got = _fit_result(_call(fit_chinchilla, N, D, L, what=what), what)
    if not _fit_ok(got, TOY, TOL):
        why = next((m for m, v in _fit_variants(TOY).items() if _fit_ok(got, v, TOL)), None)
        raise AssertionError(
            f"{what} returned {_show(got)}; the runs were made with {_show(TOY)}. "
            + (why[0].upper() + why[1:] if why else
               "The fit did not find them: minimise the Huber loss of LSE(a - alpha log N, b - beta log D, e) "
               "- log L over (a, b, e, alpha, beta) with L-BFGS from a grid of starting points, keep the best "
               "(the lowest final objective), and return E = exp(e), A = exp(a), B = exp(b). A single starting "
               "point can stop in a poor local minimum; and torch's LBFGS stops after max_iter=20 iterations, or "
               "once the gradient is below tolerance_grad=1e-7, unless told otherwise: this objective is tiny, "
               "so give it a few hundred iterations and tolerance_grad=1e-12, tolerance_change=1e-15."))


@graded("fit_chinchilla: the Huber loss is not pulled by a few outlying runs")
def check_fit_outliers(fit_chinchilla):
    N, D, L = _runs(TOY2, 48, seed=6, outliers=5)
    what = "fit_chinchilla(N, D, L) on 48 runs of known parameters, 5 of them outliers (loss x1.3 to x1.6)"
    got = _fit_result(_call(fit_chinchilla, N, D, L, what=what), what)
    tol = {"E": 0.05, "A": 0.2, "B": 0.2, "alpha": 0.05, "beta": 0.05}
    if not _fit_ok(got, TOY2, tol):
        why = next((m for m, v in _fit_variants(TOY2).items() if _fit_ok(got, v, tol)), None)
        raise AssertionError(
            f"{what} returned {_show(got)}; the other 43 runs were made with {_show(TOY2)}. "
            + (why[0].upper() + why[1:] if why else
               "The fit is pulled by the outliers, as least squares is: minimise the Huber loss with "
               "delta = 1e-3 (quadratic only for residuals below delta, linear beyond), which lets a few "
               "bad runs cost little. (torch's huber_loss has delta=1.0 by default: for residuals of log "
               "losses, all well below 1, that is least squares.)"))


# ----------------------------------------------------------------------------- compute_optimal


def _opt_ref(C, p, six=6.0, swap_exp=False, invert_g=False):
    A, B, al, be = p["A"], p["B"], p["alpha"], p["beta"]
    G = (al * A / (be * B)) ** (1 / (al + be))
    if invert_g:
        G = 1 / G
    ea, eb = be / (al + be), al / (al + be)
    if swap_exp:
        ea, eb = eb, ea
    c = C / six
    return G * c ** ea, c ** eb / G


def _opt_variants(C, p):
    n, d = _opt_ref(C, p)
    return {
        "the factor 6 is forgotten: the constraint is C = 6 N D, so use C / 6": _opt_ref(C, p, six=1.0),
        "the exponents are swapped: N_opt grows as (C/6)^(beta / (alpha + beta)), D_opt as "
        "(C/6)^(alpha / (alpha + beta))": _opt_ref(C, p, swap_exp=True),
        "G is inverted: G = (alpha A / (beta B))^(1 / (alpha + beta)); N_opt = G (C/6)^..., D_opt = (C/6)^... / G":
            _opt_ref(C, p, invert_g=True),
        "the outputs are swapped: return (N_opt, D_opt)": (d, n),
        "the factor 6 multiplies instead of divides: use C / 6": _opt_ref(C, p, six=1 / 6.0),
    }


@graded("compute_optimal: paper eq. 4 for a number C, floats out")
def check_compute_optimal_values(compute_optimal):
    for p in (PAPER, TOY2, {"E": 1.0, "A": 30.0, "B": 5000.0, "alpha": 0.25, "beta": 0.5}):
        for C in (5.76e23, 1e15):
            what = f"compute_optimal({C:g}, {p})"
            out = _pair(_call(compute_optimal, C, dict(p), what=what), what)
            n, d = (_num(v, f"{what}[{i}]") for i, v in enumerate(out))
            n_ref, d_ref = _opt_ref(C, p)
            if not (_near(n, n_ref, 1e-4) and _near(d, d_ref, 1e-4)):
                why = _match((n, d), _opt_variants(C, p), 1e-3)
                raise AssertionError(
                    f"{what} returned (N_opt, D_opt) = ({n:.5g}, {d:.5g}), expected ({n_ref:.5g}, {d_ref:.5g})"
                    + (f": {why}" if why else ": see the paper's eq. 4"))


@graded("compute_optimal: an array of budgets C gives arrays, with 6 N_opt D_opt = C")
def check_compute_optimal_arrays(compute_optimal):
    C = np.array([1e12, 3e13, 1e15, 5.76e23])
    what = "compute_optimal(C, params) with C a numpy array of 4 budgets"
    out = _pair(_call(compute_optimal, C, dict(TOY), what=what), what)
    n_ref, d_ref = _opt_ref(C, TOY)
    for name, v, ref in (("N_opt", out[0], n_ref), ("D_opt", out[1], d_ref)):
        v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.float64)
        assert v.shape == (4,), f"{what}: {name} has shape {v.shape}, expected (4,), one per budget"
        assert np.allclose(v, ref, rtol=1e-4, atol=0), f"{what}: {name} is wrong for some budgets"


# ----------------------------------------------------------------------------- isoflop_minimum


def _parabola_vertex(u, L):
    c2, c1, _ = np.polyfit(u, L, 2)
    return -c1 / (2 * c2), c2


def _iso_variants(N, L):
    out = {}
    v, c2 = _parabola_vertex(N, L)
    if c2 > 0:
        out["the parabola is fitted against N: fit L against log N and return exp of the vertex"] = v
    v10, _ = _parabola_vertex(np.log10(N), L)
    out["log10 and the natural log are mixed: a vertex found in log10 N is 10**vertex, not exp(vertex)"] = \
        math.exp(v10)
    vx, _ = _parabola_vertex(np.log(N), L)
    out["the vertex is returned in log N: return N_opt = exp(vertex)"] = vx
    out["the best of the given sizes is returned: fit a parabola and return its vertex, which can lie "
        "between (or beyond) the sizes that were run"] = float(N[np.argmin(L)])
    return out


def _iso_cases():
    g = np.random.default_rng(21)
    n1 = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    n2 = np.geomspace(2e5, 2e7, 7)
    n3 = np.geomspace(1e3, 3e4, 6)
    C = 1e15                            # an isoFLOP profile of eq. 2 with noise: nearly a parabola
    prof = _loss_ref(n2, C / (6 * n2), TOY) + g.normal(0, 0.003, 7)
    return [("an exact parabola in log N with its vertex at 7e4", n1, 0.2 * (np.log(n1) - math.log(7e4)) ** 2 + 2.0),
            ("an isoFLOP profile at C = 1e15 with noise", n2, prof),
            ("a parabola with its vertex beyond the largest size", n3, 0.05 * (np.log(n3) - math.log(5e4)) ** 2 + 3.1)]


@graded("isoflop_minimum: the vertex of the least-squares parabola of L against log N")
def check_isoflop_values(isoflop_minimum):
    for desc, N, L in _iso_cases():
        for kind, (nn, ll) in (("numpy arrays", (N, L)), ("torch tensors", (torch.tensor(N), torch.tensor(L)))):
            what = f"isoflop_minimum on {desc} ({kind})"
            got = _num(_call(isoflop_minimum, nn, ll, what=what), what)
            vx, _ = _parabola_vertex(np.log(N), L)
            want = math.exp(vx)
            if not _near(got, want, 1e-2):          # float32 normal equations are this far off
                why = _match((got,), {k: (v,) for k, v in _iso_variants(N, L).items()}, 1e-2)
                raise AssertionError(f"{what} returned {got:.6g}, expected {want:.6g}"
                                     + (f": {why}" if why else ": fit L = c2 x² + c1 x + c0 with x = log N "
                                                               "by least squares; N_opt = exp(-c1 / (2 c2))"))


@graded("isoflop_minimum: ValueError for fewer than 3 points or a parabola with no minimum")
def check_isoflop_errors(isoflop_minimum):
    N3 = np.array([1e4, 1e5, 1e6])
    _call(isoflop_minimum, N3, np.array([2.0, 1.5, 2.1]), what="isoflop_minimum on three good points")
    cases = [
        ("2 points", (np.array([1e4, 1e5]), np.array([1.5, 2.0])), "a parabola needs at least 3 points"),
        ("a profile that is highest in the middle", (N3, np.array([2.0, 2.5, 2.1])),
         "that parabola opens downwards: its vertex is a maximum"),
        ("4 points of a downward parabola", (np.array([1e3, 1e4, 1e5, 1e6]), np.array([2.0, 2.3, 2.35, 2.1])),
         "that parabola opens downwards: its vertex is a maximum"),
    ]
    for desc, args, why in cases:
        _expect_value_error(isoflop_minimum, args, f"isoflop_minimum with {desc}", why)
