"""The `scaling_laws` assignment's autograder: its catalogue, proven in-process and by nbgrader.

The catalogue: the solution, the untouched release, plausible wrong implementations (each
must lose points in the part it touches, with a message naming the mistake, and nothing
elsewhere), several correct ones written from the contract alone, differently (full marks;
one prints and warns), calls to the course's own ``llmcourse.scaling`` (no credit) and
broken submissions. Every entry is proven in-process in the fast tier
(``test_catalogue_in_process``, see :class:`nbgrader_harness.Catalogue`); one real
``nbgrader autograde`` batch (slow) grades the solution, the release, one wrong entry per
part, the library call and the broken submissions, and checks that nbgrader's verdicts
equal the in-process ones; the solution is graded once more through ``llmcourse grade``.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import nbformat
import pytest

from nbgrader_harness import REPO, Catalogue, grade_id, solution_sources

ASSIGNMENT = "scaling_laws"
SOL = solution_sources(ASSIGNMENT)
PART_TESTS = {
    "power_law": ["test_power_law_values", "test_power_law_errors"],
    "chinchilla_loss": ["test_chinchilla_loss_values", "test_chinchilla_loss_arrays"],
    "fit_chinchilla": ["test_fit_clean", "test_fit_outliers"],
    "compute_optimal": ["test_compute_optimal_values", "test_compute_optimal_arrays"],
    "isoflop": ["test_isoflop_values", "test_isoflop_errors"],
}
PL_V, PL_E = PART_TESTS["power_law"]
CL_V, CL_A = PART_TESTS["chinchilla_loss"]
FIT_C, FIT_O = PART_TESTS["fit_chinchilla"]
CO_V, CO_A = PART_TESTS["compute_optimal"]
ISO_V, ISO_E = PART_TESTS["isoflop"]


def code(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


def sub(part: str, old: str, new: str, count: int = 1) -> dict:
    """The solution's cell ``part`` with ``old`` replaced by ``new`` (which must be there)."""
    src = SOL[part]
    assert src.count(old) >= 1, (part, old)
    return {part: src.replace(old, new, count)}


def drop(part: str, *lines: str) -> dict:
    """The solution's cell ``part`` without the lines that contain any of ``lines``
    (and the line after each, the ``raise``)."""
    out, skip = [], False
    for ln in SOL[part].splitlines():
        if skip:
            skip = False
            continue
        if any(s in ln for s in lines):
            skip = True
            continue
        out.append(ln)
    assert len(out) < len(SOL[part].splitlines()), (part, lines)
    return {part: "\n".join(out)}


POLYFIT = "b, log_a = np.polyfit(np.log(x), np.log(y), 1)"
VERTEX = "c2, c1, _ = np.polyfit(np.log(N), L, 2)"
HUBER = "torch.nn.functional.huber_loss(r, torch.zeros_like(r), delta=delta, reduction=\"none\").sum(-1)"

WRONG = {
    # fit_power_law
    "power_law_outputs_swapped": (sub("power_law", "return float(np.exp(log_a)), float(b)",
                                      "return float(b), float(np.exp(log_a))"), [PL_V], "outputs are swapped"),
    "power_law_returns_log_a": (sub("power_law", "return float(np.exp(log_a)), float(b)",
                                    "return float(log_a), float(b)"), [PL_V], "log(a)"),
    "power_law_log10_then_exp": (sub("power_law", POLYFIT, "b, log_a = np.polyfit(np.log10(x), np.log10(y), 1)"),
                                 [PL_V], "log10 and the natural log are mixed"),
    # log10 on one side only (the blind test's mistakes; they got the generic message before)
    "power_law_log10_of_x_only": (sub("power_law", POLYFIT, "b, log_a = np.polyfit(np.log10(x), np.log(y), 1)"),
                                  [PL_V], "log10 on one side and the natural log on the other"),
    "power_law_log10_of_y_only": (sub("power_law", POLYFIT, "b, log_a = np.polyfit(np.log(x), np.log10(y), 1)"),
                                  [PL_V], "log10 on one side and the natural log on the other"),
    "power_law_linear_space": (sub("power_law", POLYFIT, "b, a = np.polyfit(x, y, 1)\n    log_a = np.log(a)"),
                               [PL_V], "linear space"),
    "power_law_y_not_logged": (sub("power_law", POLYFIT, "b, log_a = np.polyfit(np.log(x), y, 1)"),
                               [PL_V], "y was not logged"),
    # without the check a zero in x still raises (numpy's LinAlgError, a ValueError); a negative y does not
    "power_law_no_positivity_check": (drop("power_law", "np.any(x <= 0)"), [PL_E], "a negative y"),
    "power_law_no_length_checks": (sub("power_law", "if x.ndim != 1 or y.ndim != 1 or len(x) != len(y):",
                                       "if x.ndim != 1 or y.ndim != 1:"), [PL_E], "x of length 3 and y of length 2"),
    "power_law_numpy_floats_of_tensor": (sub("power_law", "return float(np.exp(log_a)), float(b)",
                                             "return torch.tensor(np.exp(log_a)), torch.tensor(b)"),
                                         [PL_V], "return Python floats"),
    # chinchilla_loss
    "loss_exponents_swapped": (sub("chinchilla_loss", 'N ** params["alpha"]', 'N ** params["beta"]')
                               | {"chinchilla_loss": SOL["chinchilla_loss"]
                                  .replace('N ** params["alpha"]', 'N ** params["BETA"]')
                                  .replace('D ** params["beta"]', 'D ** params["alpha"]')
                                  .replace('params["BETA"]', 'params["beta"]')},
                               [CL_V, CL_A], "exponents are swapped"),
    "loss_without_E": (sub("chinchilla_loss", 'out = params["E"] + ', "out = "), [CL_V, CL_A], "E is missing"),
    "loss_torch_tensor_out": ({"chinchilla_loss": code('''
        def chinchilla_loss(N, D, params):
            N = torch.as_tensor(N, dtype=torch.float64)
            D = torch.as_tensor(D, dtype=torch.float64)
            return params["E"] + params["A"] / N ** params["alpha"] + params["B"] / D ** params["beta"]''')},
                              [CL_V, CL_A], "a float in gives a float out"),
    "loss_no_broadcasting": ({"chinchilla_loss": code('''
        def chinchilla_loss(N, D, params):
            if np.ndim(N) == 0 and np.ndim(D) == 0:
                return params["E"] + params["A"] / N ** params["alpha"] + params["B"] / D ** params["beta"]
            N, D = np.ravel(N), np.ravel(D)
            return np.array([params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]
                             for n, d in zip(N, D)])''')}, [CL_A], "broadcast"),
    # fit_chinchilla
    "fit_least_squares": (sub("fit_chinchilla", HUBER, "(0.5 * r ** 2).sum(-1)"), [FIT_O], "least squares"),
    "fit_returns_logs": (sub("fit_chinchilla",
                             'return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}',
                             'return {"E": e, "A": a, "B": b, "alpha": alpha, "beta": beta}'),
                         [FIT_C, FIT_O], "returned as their logs"),
    "fit_alpha_beta_swapped": (sub("fit_chinchilla", '"alpha": alpha, "beta": beta}', '"alpha": beta, "beta": alpha}'),
                               [FIT_C, FIT_O], "lpha and beta are swapped"),
    "fit_one_start_default_iters": ({"fit_chinchilla": SOL["fit_chinchilla"]
                                     .replace("order = torch.argsort(objective(grid))[:n_best]", "order = [0]")
                                     .replace("max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,", "")},
                                    [FIT_C], "max_iter=20"),
    "fit_default_lbfgs_stopping": ({"fit_chinchilla": SOL["fit_chinchilla"]
                                    .replace("max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,", "")},
                                   [FIT_C], "tolerance_grad=1e-7"),
    "fit_huber_default_delta": (sub("fit_chinchilla", "delta=delta, ", ""), [FIT_O], "delta=1.0 by default"),
    # compute_optimal
    "optimal_no_factor_6": (sub("compute_optimal", "c = np.asarray(C, dtype=np.float64) / 6",
                                "c = np.asarray(C, dtype=np.float64)"), [CO_V, CO_A], "factor 6 is forgotten"),
    "optimal_exponents_swapped": ({"compute_optimal": SOL["compute_optimal"]
                                   .replace("c ** (beta / (alpha + beta))", "c ** (XX)")
                                   .replace("c ** (alpha / (alpha + beta))", "c ** (beta / (alpha + beta))")
                                   .replace("c ** (XX)", "c ** (alpha / (alpha + beta))")},
                                  [CO_V, CO_A], "exponents are swapped"),
    "optimal_G_inverted": (sub("compute_optimal", "G = (alpha * A / (beta * B))", "G = (beta * B / (alpha * A))"),
                           [CO_V, CO_A], "G is inverted"),
    "optimal_outputs_swapped": (sub("compute_optimal", "return float(N_opt), float(D_opt)",
                                    "return float(D_opt), float(N_opt)"), [CO_V], "outputs are swapped"),
    "optimal_math_not_arrays": ({"compute_optimal": code('''
        def compute_optimal(C, params):
            A, B, alpha, beta = params["A"], params["B"], params["alpha"], params["beta"]
            G = math.pow(alpha * A / (beta * B), 1 / (alpha + beta))
            return G * math.pow(C / 6, beta / (alpha + beta)), math.pow(C / 6, alpha / (alpha + beta)) / G''')},
                                [CO_A], "raised TypeError"),
    # isoflop_minimum
    "isoflop_vertex_in_N": (sub("isoflop", VERTEX, "c2, c1, _ = np.polyfit(N, L, 2)")
                            | {"isoflop": SOL["isoflop"].replace(VERTEX, "c2, c1, _ = np.polyfit(N, L, 2)")
                               .replace("return float(np.exp(-c1 / (2 * c2)))", "return float(-c1 / (2 * c2))")},
                            [ISO_V], "fitted against N"),
    "isoflop_log10_then_exp": (sub("isoflop", VERTEX, "c2, c1, _ = np.polyfit(np.log10(N), L, 2)"),
                               [ISO_V], "log10 and the natural log are mixed"),
    "isoflop_returns_log": (sub("isoflop", "return float(np.exp(-c1 / (2 * c2)))", "return float(-c1 / (2 * c2))"),
                            [ISO_V], "returned in log N"),
    "isoflop_best_sampled_size": ({"isoflop": code('''
        def isoflop_minimum(N, L):
            N, L = np.asarray(N, dtype=np.float64), np.asarray(L, dtype=np.float64)
            if len(N) < 3:
                raise ValueError("a parabola needs at least 3 points")
            return float(N[np.argmin(L)])''')}, [ISO_V], "best of the given sizes"),
    "isoflop_no_maximum_check": (drop("isoflop", "if c2 <= 0:"), [ISO_E], "opens downwards"),
    "isoflop_no_count_check": (drop("isoflop", "if len(N) < 3:"), [ISO_E], "2 points"),
}

CORRECT = {
    "normal_equations_torch": {
        "power_law": code('''
            def fit_power_law(x, y):
                x = torch.as_tensor(x, dtype=torch.float64)
                y = torch.as_tensor(y, dtype=torch.float64)
                if x.dim() != 1 or x.shape != y.shape:
                    raise ValueError("x and y: 1-D, same length")
                if x.numel() < 2 or bool((x <= 0).any()) or bool((y <= 0).any()):
                    raise ValueError("at least 2 positive points")
                X = torch.stack([torch.ones_like(x), x.log()], dim=1)
                sol = torch.linalg.solve(X.T @ X, X.T @ y.log())
                return math.exp(sol[0].item()), sol[1].item()'''),
        "chinchilla_loss": code('''
            def chinchilla_loss(N, D, params):
                E, A, B, al, be = (params[k] for k in ("E", "A", "B", "alpha", "beta"))
                if np.isscalar(N) and np.isscalar(D):
                    return float(E + A * N ** -al + B * D ** -be)
                return E + A * np.power(np.asarray(N, float), -al) + B * np.power(np.asarray(D, float), -be)'''),
        "fit_chinchilla": code('''
            def fit_chinchilla(N, D, L):
                lN, lD, lL = (torch.tensor(np.log(np.asarray(v, dtype=float))) for v in (N, D, L))
                def huber(r, d=1e-3):
                    return torch.where(r.abs() <= d, 0.5 * r ** 2, d * (r.abs() - 0.5 * d)).sum()
                def obj(p):
                    stacked = torch.stack([p[0] - p[3] * lN, p[1] - p[4] * lD, p[2].expand_as(lN)])
                    return huber(torch.logsumexp(stacked, 0) - lL)
                results = []
                for a0, b0, e0, al0, be0 in itertools.product([2.0, 6.0], [2.0, 7.0], [0.0], [0.2, 0.6], [0.2, 0.6]):
                    p = torch.tensor([a0, b0, e0, al0, be0], dtype=torch.float64, requires_grad=True)
                    opt = torch.optim.LBFGS([p], max_iter=300, line_search_fn="strong_wolfe",
                                            tolerance_grad=1e-14, tolerance_change=1e-16)
                    def closure():
                        opt.zero_grad()
                        v = obj(p)
                        v.backward()
                        return v
                    opt.step(closure)
                    results.append((obj(p).item(), p.detach().clone()))
                a, b, e, al, be = min(results, key=lambda t: t[0])[1].tolist()
                return dict(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=al, beta=be)'''),
        "compute_optimal": code('''
            def compute_optimal(C, params):
                al, be = params["alpha"], params["beta"]
                a, b = be / (al + be), al / (al + be)
                G = (al * params["A"] / (be * params["B"])) ** (1 / (al + be))
                if isinstance(C, (int, float)):
                    return G * (C / 6) ** a, (C / 6) ** b / G
                C = np.asarray(C, dtype=float)
                return G * (C / 6) ** a, (C / 6) ** b / G'''),
        "isoflop": code('''
            def isoflop_minimum(N, L):
                x = torch.as_tensor(N, dtype=torch.float64).log()
                y = torch.as_tensor(L, dtype=torch.float64)
                if x.numel() < 3:
                    raise ValueError("need 3 points")
                X = torch.stack([x ** 2, x, torch.ones_like(x)], 1)
                c2, c1, c0 = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
                if c2 <= 0:
                    raise ValueError("no minimum")
                return math.exp(-c1 / (2 * c2))'''),
    },
    "centred_sums_log2": {
        "power_law": code('''
            def fit_power_law(x, y):
                xs = [float(v) for v in x]
                ys = [float(v) for v in y]
                if len(xs) != len(ys) or len(xs) < 2:
                    raise ValueError("need two or more (x, y) pairs")
                if min(xs) <= 0 or min(ys) <= 0:
                    raise ValueError("values must be positive")
                u = np.log2(xs)
                v = np.log2(ys)
                b = float(((u - u.mean()) * (v - v.mean())).sum() / ((u - u.mean()) ** 2).sum())
                return float(2.0 ** (v.mean() - b * u.mean())), b'''),
        "compute_optimal": code('''
            def compute_optimal(C, params):
                A, B, al, be = params["A"], params["B"], params["alpha"], params["beta"]
                logc = np.log(np.asarray(C, dtype=np.float64) / 6.0)
                logG = (np.log(al * A) - np.log(be * B)) / (al + be)
                n = np.exp(logG + be / (al + be) * logc)
                d = np.exp(-logG + al / (al + be) * logc)
                return (n.item(), d.item()) if np.ndim(n) == 0 else (n, d)'''),
        "isoflop": code('''
            def isoflop_minimum(N, L):
                N = np.array(N, dtype=float)
                L = np.array(L, dtype=float)
                if N.size < 3:
                    raise ValueError("fewer than 3 runs")
                x = np.log10(N)                      # log10 throughout, and 10 ** back: the same vertex
                c2, c1, c0 = np.polyfit(x, L, deg=2)
                if not c2 > 0:
                    raise ValueError("the fitted parabola has no minimum")
                return float(10 ** (-c1 / (2 * c2)))'''),
    },
    "prints_and_warns_float32_screen": {
        "power_law": code('''
            import warnings
            def fit_power_law(x, y):
                print("fitting", len(x), "points")
                warnings.warn("a harmless learner warning")
                x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
                if x.shape != y.shape or x.size < 2 or (x <= 0).any() or (y <= 0).any():
                    raise ValueError("bad input")
                A = np.vstack([np.log(x), np.ones_like(x)]).T
                (b, la), *_ = np.linalg.lstsq(A, np.log(y), rcond=None)
                return float(np.exp(la)), float(b)'''),
        "fit_chinchilla": code('''
            import warnings
            def fit_chinchilla(N, D, L, delta=1e-3):
                print("fitting", len(N), "runs")
                warnings.warn("L-BFGS may take a moment")
                lN, lD, lL = (torch.as_tensor(np.log(np.asarray(v, dtype=np.float64))) for v in (N, D, L))
                def loss_of(theta):
                    a, b, e, al, be = theta
                    pred = torch.logsumexp(torch.stack([a - al * lN, b - be * lD, e + 0 * lN]), 0)
                    return torch.nn.functional.huber_loss(pred, lL, delta=delta, reduction="sum")
                starts = [(a, b, e, al, be) for a in (0.0, 5.0, 10.0) for b in (0.0, 5.0, 10.0)
                          for e in (-1.0, 0.0, 1.0) for al in (0.5, 1.0) for be in (0.5, 1.0)]
                with torch.no_grad():
                    scored = sorted(starts, key=lambda s: loss_of(torch.tensor(s, dtype=torch.float64)).item())
                best = None
                for s in scored[:5]:
                    th = torch.tensor(s, dtype=torch.float64, requires_grad=True)
                    opt = torch.optim.LBFGS([th], lr=1, max_iter=500, line_search_fn="strong_wolfe")
                    def closure():
                        opt.zero_grad()
                        l = loss_of(th)
                        l.backward()
                        return l
                    opt.step(closure)
                    f = loss_of(th).item()
                    if best is None or f < best[0]:
                        best = (f, th.detach())
                a, b, e, al, be = best[1]
                print("done")
                return {"E": e.exp().item(), "A": a.exp().item(), "B": b.exp().item(),
                        "alpha": al.item(), "beta": be.item()}'''),
        "isoflop": code('''
            import warnings
            def isoflop_minimum(N, L):
                warnings.warn("fitting a parabola")
                print("sizes:", N)
                logn = np.log(np.asarray(N, dtype=np.float64))
                L = np.asarray(L, dtype=np.float64)
                if logn.size < 3:
                    raise ValueError("at least three points, please")
                coef = np.polynomial.polynomial.Polynomial.fit(logn, L, 2).convert().coef   # c0, c1, c2
                if coef.size < 3 or coef[2] <= 0:
                    raise ValueError("no minimum")
                return float(np.exp(-coef[1] / (2 * coef[2])))'''),
    },
    "tensor_math_paper_grid_all_starts": {
        "chinchilla_loss": code('''
            def chinchilla_loss(N, D, params):
                scalar = np.ndim(N) == 0 and np.ndim(D) == 0
                n = torch.as_tensor(np.asarray(N, dtype=np.float64))
                d = torch.as_tensor(np.asarray(D, dtype=np.float64))
                out = params["E"] + params["A"] * torch.exp(-params["alpha"] * n.log()) \\
                    + params["B"] * torch.exp(-params["beta"] * d.log())
                return out.item() if scalar else out.numpy()'''),
        "fit_chinchilla": code('''
            def fit_chinchilla(N, D, L):
                logN = torch.log(torch.tensor(N, dtype=torch.float64))
                logD = torch.log(torch.tensor(D, dtype=torch.float64))
                logL = torch.log(torch.tensor(L, dtype=torch.float64))
                hub = torch.nn.HuberLoss(reduction="sum", delta=1e-3)
                best_loss, best_params = float("inf"), None
                for alpha0 in (0.5, 1.0):
                    for beta0 in (0.5, 1.0):
                        for a0 in (0.0, 5.0, 10.0):
                            params = torch.tensor([a0, a0 + 1.0, 0.0, alpha0, beta0], dtype=torch.float64,
                                                  requires_grad=True)
                            lbfgs = torch.optim.LBFGS([params], max_iter=400, line_search_fn="strong_wolfe",
                                                      tolerance_grad=1e-13, tolerance_change=1e-16)
                            def f():
                                lbfgs.zero_grad()
                                a, b, e, al, be = params
                                pred = torch.logsumexp(torch.stack(torch.broadcast_tensors(
                                    a - al * logN, b - be * logD, e)), dim=0)
                                out = hub(pred, logL)
                                out.backward()
                                return out
                            lbfgs.step(f)
                            final = f().item()
                            if final < best_loss:
                                best_loss, best_params = final, params.detach().clone()
                a, b, e, al, be = best_params
                return {"A": float(torch.exp(a)), "B": float(torch.exp(b)), "E": float(torch.exp(e)),
                        "alpha": float(al), "beta": float(be), "objective": best_loss}'''),
        "compute_optimal": code('''
            def compute_optimal(C, params):
                p = params
                G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / (p["alpha"] + p["beta"]))
                ratio = p["beta"] / (p["alpha"] + p["beta"])
                Copt = np.divide(C, 6.0)
                n_opt = G * np.power(Copt, ratio)
                d_opt = Copt / n_opt                  # from C = 6 N D: the same as eq. 4's D_opt
                if np.ndim(C) == 0:
                    return float(n_opt), float(d_opt)
                return n_opt, d_opt'''),
    },
    "float32_torch": {
        "power_law": code('''
            def fit_power_law(x, y):
                x = torch.as_tensor(x).float()
                y = torch.as_tensor(y).float()
                if x.ndim != 1 or y.ndim != 1 or len(x) != len(y) or len(x) < 2:
                    raise ValueError("two 1-D arrays of the same length, at least 2 points")
                if (x <= 0).any() or (y <= 0).any():
                    raise ValueError("positive values only")
                X = torch.stack([torch.ones_like(x), x.log()], 1)
                sol = torch.linalg.lstsq(X, y.log()[:, None]).solution[:, 0]
                return float(sol[0].exp()), float(sol[1])'''),
        "chinchilla_loss": code('''
            def chinchilla_loss(N, D, params):
                n = torch.as_tensor(N, dtype=torch.float32)
                d = torch.as_tensor(D, dtype=torch.float32)
                out = params["E"] + params["A"] * n.pow(-params["alpha"]) + params["B"] * d.pow(-params["beta"])
                return out.item() if out.ndim == 0 else out.numpy()'''),
        "compute_optimal": code('''
            def compute_optimal(C, params):
                al, be = params["alpha"], params["beta"]
                G = (al * params["A"] / (be * params["B"])) ** (1 / (al + be))
                c = torch.as_tensor(C, dtype=torch.float32) / 6
                n, d = G * c ** (be / (al + be)), c ** (al / (al + be)) / G
                return (n.item(), d.item()) if n.ndim == 0 else (n.numpy(), d.numpy())'''),
        "isoflop": code('''
            def isoflop_minimum(N, L):
                x = torch.as_tensor(N).float().log()
                y = torch.as_tensor(L).float()
                if len(x) < 3:
                    raise ValueError("three points at least")
                X = torch.stack([x ** 2, x, torch.ones_like(x)], 1)
                c2, c1, _ = torch.linalg.solve(X.T @ X, X.T @ y).tolist()
                if c2 <= 0:
                    raise ValueError("no minimum")
                return math.exp(-c1 / (2 * c2))'''),
    },
    # blind test (a helper writing from the contract alone): numpy's LinAlgError and a learner's own
    # class are ValueErrors; the check compared the class's name and failed them
    "value_error_subclasses": {
        "power_law": code('''
            def fit_power_law(x, y):
                x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
                if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
                    raise ValueError("two 1-D arrays of the same length, at least 2 points")
                if np.any(x <= 0) or np.any(y <= 0):
                    raise np.linalg.LinAlgError("values must be positive")
                b, log_a = np.polyfit(np.log(x), np.log(y), 1)
                return float(np.exp(log_a)), float(b)'''),
        "isoflop": code('''
            class NoMinimum(ValueError):
                pass

            def isoflop_minimum(N, L):
                x, y = np.log(np.asarray(N, dtype=float)), np.asarray(L, dtype=float)
                if len(x) < 3:
                    raise NoMinimum("three points at least")
                c2, c1, _ = np.polyfit(x, y, 2)
                if c2 <= 0:
                    raise NoMinimum("the parabola opens downwards: no minimum")
                return float(np.exp(-c1 / (2 * c2)))'''),
    },
}

FORBIDDEN = {
    "imports_course_compute_optimal": ({"compute_optimal": "from llmcourse.scaling import compute_optimal"},
                                       [CO_V, CO_A], "llmcourse.scaling"),
    "imports_course_power_law": ({"power_law": "from llmcourse import scaling\n"
                                               "def fit_power_law(x, y):\n    return scaling.fit_power_law(x, y)"},
                                 [PL_V, PL_E], "llmcourse.scaling"),
}

EDITED_TEST = "# I edited this test\nprint('all tests passed')"
# name -> (cell sources, cells to delete); graded by nbgrader only
BAD = {
    "syntax_error": ({**SOL, "isoflop": "def isoflop_minimum(N, L)\n    return 1.0"}, ()),
    "edited_test_cells": ({**SOL, **WRONG["optimal_no_factor_6"][0], "test_compute_optimal_values": EDITED_TEST}, ()),
    "deleted_test_cells": ({**SOL, **WRONG["optimal_no_factor_6"][0]}, ("test_compute_optimal_values",)),
}
TIMEOUT = 60


CAT = Catalogue(ASSIGNMENT, PART_TESTS, wrong=WRONG, correct=CORRECT, forbidden=FORBIDDEN, bad=BAD,
                uses={"chinchilla_loss": []}, timeout=TIMEOUT, total=17)


def test_catalogue_sizes():
    assert len(WRONG) >= 15 and len(CORRECT) >= 4


# ----------------------------------------------------------------------------- fast: the catalogue in-process


@pytest.mark.parametrize("kind,name", CAT.entries())
def test_catalogue_in_process(kind, name):
    CAT.prove(kind, name)


# ----------------------------------------------------------------------------- slow: one nbgrader batch


@pytest.fixture(scope="module")
def graded():
    """The solution, the release, one wrong entry per part, a library call and the broken submissions,
    graded by ONE nbgrader autograde run."""
    return CAT.grade()


@pytest.mark.slow
def test_nbgrader_grades_as_in_process(graded):
    CAT.assert_graded(graded)
    assert "NotImplementedError" in graded["release"].errors["test_power_law_values"]
    assert "visible checks passed" in graded["solution"].text


@pytest.mark.slow
def test_bad_submissions_are_graded_without_extra_credit(graded):
    pts = {k: m for k, (_, m) in graded["solution"].scores.items()}
    r = graded["bad_syntax_error"]                    # isoflop_minimum undefined: its part lost
    assert r.total == r.max_total - pts[ISO_V] - pts[ISO_E], r.scores
    assert "NameError" in r.errors[ISO_V]
    for student in ("bad_edited_test_cells", "bad_deleted_test_cells"):   # restored / re-added, graded
        r = graded[student]
        assert r.scores[CO_V][0] == 0 and "factor 6" in r.errors[CO_V]
        assert r.total == graded["wrong_optimal_no_factor_6"].total


@pytest.mark.slow
def test_llmcourse_grade_gives_the_solution_full_marks(tmp_path):
    """The same notebook through the course's own grader (workers, sandbox, guard)."""
    from llmcourse.grading import batch, sandbox

    shutil.copy(REPO / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    shutil.copytree(REPO / "solutions" / ASSIGNMENT, tmp_path / "solutions" / ASSIGNMENT)
    nb = nbformat.read(REPO / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    for cell in nb.cells:
        if grade_id(cell) in SOL:
            cell.source = SOL[grade_id(cell)]
    folder = tmp_path / "submitted" / "solution" / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{ASSIGNMENT}.ipynb")
    limits = sandbox.Limits(cpu_seconds=300, address_space_mb=4096, file_size_mb=64, processes=96, wall_seconds=600)
    (result,) = batch.grade(tmp_path, ASSIGNMENT, workers=1, limits=limits, progress=False)
    assert result.status == "graded", result
    assert result.score == result.max_score == CAT.max_total, [(p.grade_id, p.score, p.message) for p in result.parts]


def test_package_passes_the_hidden_tests():
    """llmcourse.scaling, pasted as a learner who copied it would submit it, passes every hidden test
    (the same route as tests/test_package_meets_graders.py for the other assignments)."""
    import importlib

    src = Path(importlib.import_module("llmcourse.scaling").__file__).read_text()
    first, *rest = CAT.parts
    res = CAT.run({first: src, **{part: "" for part in rest}})
    assert all(r.passed for r in res.values()), {k: r.text for k, r in res.items() if not r.passed}
    assert all(r.stdout.startswith("ok: ") for r in res.values())
