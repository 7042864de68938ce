"""Hidden tests of the `ppo` assignment (solutions/ppo/ppo.ipynb).

Papers: Schulman et al. (2017), "Proximal Policy Optimization Algorithms",
arXiv:1707.06347, eq. 7 and 9; Schulman et al. (2015), "High-Dimensional Continuous
Control Using Generalized Advantage Estimation", arXiv:1506.02438, eq. 16.
The learner writes ``compute_gae``, ``normalize_advantages``, ``ppo_clip_loss``,
``value_loss`` and ``categorical_entropy`` (contract in ``COURSE.md`` and issue 4).

References here are independent of ``llmcourse.rl``: GAE as an explicit double sum,
the losses written out case by case, PyTorch's ``Categorical`` for the entropy. When a
value check fails, the learner's result is compared with a catalogue of known-wrong
variants and the message names the one it matches.
"""
from __future__ import annotations

import math

import torch

from ..common import Forbidden, _module_file, call_learner, close, diagnose, graded, require_tensor

NO_LIBRARY = Forbidden(
    files={p: "the course's own llmcourse.rl" for m in ("llmcourse.rl.core",)
           if (p := _module_file(m))},
    codes={torch.distributions.Categorical.entropy.__code__: "torch.distributions.Categorical.entropy"})

# ----------------------------------------------------------------------------- GAE reference


def _gae_ref(rewards, values, next_values, terminated, truncated, gamma, lam, *,
             bootstrap_terminal=False, cut_at_truncation=True, cut_at_termination=True,
             truncation_is_termination=False, shifted_values=False):
    """GAE as the explicit sum A_t = sum_k (gamma lam)^(k-t) delta_k within the episode,
    with one knob turned for each known mistake (all defaults: the correct result)."""
    r, v, nv = rewards.double(), values.double(), next_values.double()
    term, trunc = terminated.bool(), truncated.bool()
    if truncation_is_termination:
        term, trunc = term | trunc, torch.zeros_like(trunc)
    if shifted_values:                       # V(s_{t+1}) taken from the next row, 0 at the end
        nv = torch.cat([v[1:], torch.zeros_like(v[:1])])
    T = r.shape[0]
    delta = r + gamma * nv * (1.0 if bootstrap_terminal else (~term).double()) - v
    stop = torch.zeros_like(term)
    if cut_at_termination:
        stop = stop | term
    if cut_at_truncation:
        stop = stop | trunc
    adv = torch.zeros_like(r)
    for t in range(T):
        total, w = torch.zeros_like(r[0]), torch.ones_like(r[0])
        alive = torch.ones_like(r[0], dtype=torch.bool)
        for k in range(t, T):
            total = total + torch.where(alive, w * delta[k], torch.zeros_like(total))
            alive = alive & ~stop[k]
            w = w * gamma * lam
        adv[t] = total
    return adv, adv + v


def _gae_case(g, T=14, N=3, term_p=0.0, trunc_p=0.0, vector=True):
    shape = (T, N) if vector else (T,)
    rewards = torch.rand(shape, generator=g, dtype=torch.float64) * 2
    values = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    next_values = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    u = torch.rand(shape, generator=g)
    terminated = u < term_p
    truncated = (u >= term_p) & (u < term_p + trunc_p)
    # inside an episode V(s_{t+1}) is the next row's value, as in a real rollout
    inside = ~(terminated | truncated)[:-1]
    next_values[:-1] = torch.where(inside, values[1:], next_values[:-1])
    if term_p:
        terminated[2] = True
    if trunc_p:
        truncated[T // 2] = True
        terminated[T // 2] = False
    return rewards, values, next_values, terminated, truncated


GAMMA, LAM = 0.9, 0.7


def _gae_variants(case, gamma=GAMMA, lam=LAM):
    k = {
        "γ and λ are swapped: delta_t uses gamma, the recursion uses gamma * lam":
            dict(gamma=lam, lam=gamma),
        "λ is missing: the recursion is A_t = delta_t + gamma * lam * A_{t+1}":
            dict(lam=1.0),
        "terminal states are bootstrapped: where terminated[t], delta_t = r_t - V(s_t), "
        "nothing from next_values": dict(bootstrap_terminal=True),
        "a truncation is treated as a termination: on a truncated step bootstrap from "
        "next_values[t] (the final observation's value), only stop the recursion":
            dict(truncation_is_termination=True),
        "advantages are carried across a truncation: a truncated episode ends too, so the "
        "recursion must stop there": dict(cut_at_truncation=False),
        "advantages are carried across a termination: the next row belongs to a new episode":
            dict(cut_at_termination=False),
        "advantages are carried across episodes: stop the recursion where terminated or "
        "truncated": dict(cut_at_truncation=False, cut_at_termination=False),
        "V(s_{t+1}) was taken from values[t+1] (and 0 at the end): use next_values[t], "
        "which holds the right value at episode ends and at the end of the rollout":
            dict(shifted_values=True),
    }
    base = dict(gamma=gamma, lam=lam)
    return {m: (lambda kw=kw: _gae_ref(*case, **{**base, **kw})[0]) for m, kw in k.items()}


def _call_gae(fn, case, **kw):
    out = call_learner(fn, *case, what="compute_gae", forbid=NO_LIBRARY, **kw)
    assert isinstance(out, (tuple, list)) and len(out) == 2, (
        f"compute_gae should return a pair (advantages, returns), got {type(out).__name__}")
    return out


def _check_gae(fn, case, desc, gamma=GAMMA, lam=LAM):
    adv, ret = _call_gae(fn, case, gamma=gamma, lam=lam)
    want_adv, want_ret = _gae_ref(*case, gamma=gamma, lam=lam)
    require_tensor(adv, f"advantages ({desc})", want_adv.shape)
    if not close(adv, want_adv):
        why = diagnose(adv, _gae_variants(case, gamma, lam),
                       "they match none of the usual mistakes: compute delta_t first, then "
                       "run the recursion backwards in time")
        raise AssertionError(f"the advantages are wrong ({desc}): {why}")
    return adv, ret, want_ret


@graded("compute_gae matches GAE within one long episode (no boundaries)")
def check_gae_no_boundaries(fn):
    g = torch.Generator().manual_seed(11)
    _check_gae(fn, _gae_case(g), "T=14 steps of N=3 environments, no episode ends")


@graded("compute_gae stops at terminations and bootstraps nothing there")
def check_gae_termination(fn):
    g = torch.Generator().manual_seed(12)
    _check_gae(fn, _gae_case(g, term_p=0.2), "episodes that terminate")


@graded("compute_gae bootstraps from the final observation on truncation, carries nothing across")
def check_gae_truncation(fn):
    g = torch.Generator().manual_seed(13)
    _check_gae(fn, _gae_case(g, trunc_p=0.25), "episodes cut by a time limit")
    _check_gae(fn, _gae_case(g, term_p=0.15, trunc_p=0.15), "terminations and truncations")


@graded("compute_gae returns = advantages + values")
def check_gae_returns(fn):
    g = torch.Generator().manual_seed(14)
    case = _gae_case(g, term_p=0.15, trunc_p=0.15)
    adv, ret = _call_gae(fn, case, gamma=GAMMA, lam=LAM)
    require_tensor(ret, "returns", case[0].shape)
    want = _gae_ref(*case, gamma=GAMMA, lam=LAM)[1]
    if not close(ret, want):
        if isinstance(adv, torch.Tensor) and close(ret, adv):
            raise AssertionError("the returns equal the advantages: returns = advantages + values")
        if isinstance(adv, torch.Tensor) and close(ret, adv + case[1]):
            raise AssertionError("returns = advantages + values, but the advantages themselves "
                                 "are wrong: see the other compute_gae tests")
        raise AssertionError("the returns are wrong: they should be advantages + values "
                             "(the lambda-return, the value network's target)")


@graded("compute_gae works on (T,) tensors and uses the defaults gamma=0.99, lam=0.95")
def check_gae_shapes_defaults(fn):
    g = torch.Generator().manual_seed(15)
    case = _gae_case(g, T=9, term_p=0.2, trunc_p=0.2, vector=False)
    out = call_learner(fn, *case, what="compute_gae", forbid=NO_LIBRARY)
    assert isinstance(out, (tuple, list)) and len(out) == 2, "compute_gae should return a pair"
    adv, ret = out
    want_adv, want_ret = _gae_ref(*case, gamma=0.99, lam=0.95)
    require_tensor(adv, "advantages of a (T,) rollout", want_adv.shape)
    require_tensor(ret, "returns of a (T,) rollout", want_ret.shape)
    assert close(adv, want_adv) and close(ret, want_ret), (
        "wrong values for a 1-D rollout with the default gamma=0.99, lam=0.95: "
        + diagnose(adv, _gae_variants(case, 0.99, 0.95), "check the defaults and the 1-D case"))


# ----------------------------------------------------------------------------- normalisation


@graded("normalize_advantages: (adv - mean) / (std + eps), std as torch.std computes it")
def check_normalize(fn):
    g = torch.Generator().manual_seed(21)
    for shape in [(8,), (16, 4)]:
        a = torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1
        got = call_learner(fn, a, what="normalize_advantages", forbid=NO_LIBRARY)
        want = (a - a.mean()) / (a.std() + 1e-8)
        require_tensor(got, f"normalize_advantages of shape {shape}", shape)
        if not close(got, want):
            why = diagnose(got, {
                "the standard deviation is the population one (divide by n): torch.std's "
                "default divides by n - 1": lambda: (a - a.mean()) / (a.std(unbiased=False) + 1e-8),
                "only the mean was subtracted, nothing divided": lambda: a - a.mean(),
                "only divided by the std, the mean was not subtracted": lambda: a / (a.std() + 1e-8),
                "normalised per row or column, not over the whole batch":
                    lambda: (a - a.mean(0)) / (a.std(0) + 1e-8),
                "normalised along the last axis, not over the whole batch":
                    lambda: (a - a.mean(-1, keepdim=True)) / (a.std(-1, keepdim=True) + 1e-8),
            }, "compare with (adv - adv.mean()) / (adv.std() + eps)")
            raise AssertionError(f"normalize_advantages is wrong for shape {shape}: {why}")
    const = torch.full((6,), 2.5)
    got = call_learner(fn, const, what="normalize_advantages", forbid=NO_LIBRARY)
    assert isinstance(got, torch.Tensor) and torch.isfinite(got).all() and close(got, torch.zeros(6)), (
        "a constant batch has std 0: with eps added to the std the result is all zeros, "
        "not nan or inf (did you forget + eps?)")


# ----------------------------------------------------------------------------- clipped loss


def _clip_ref(logp_new, logp_old, adv, eps):
    r = torch.exp(logp_new - logp_old)
    per = torch.where(adv >= 0, torch.minimum(r, torch.full_like(r, 1 + eps)) * adv,
                      torch.maximum(r, torch.full_like(r, 1 - eps)) * adv)   # = min(rA, clip(r)A)
    return -per.mean()


def _clip_variants(lp_new, lp_old, adv, eps):
    def v(f):
        return lambda: f().reshape(())
    r = torch.exp(lp_new - lp_old)
    clip = torch.clamp(r, 1 - eps, 1 + eps)
    return {
        "max instead of min: PPO takes the pessimistic min(r A, clip(r, 1-ε, 1+ε) A)":
            v(lambda: -torch.max(r * adv, clip * adv).mean()),
        "the advantages were clipped instead of the ratio: clip r to [1-ε, 1+ε], not A":
            v(lambda: -torch.min(r * adv, r * torch.clamp(adv, 1 - eps, 1 + eps)).mean()),
        "the sign is lost: the loss is minus the clipped surrogate (we minimise it)":
            v(lambda: torch.min(r * adv, clip * adv).mean()),
        "the ratio was taken as logp_new / logp_old: the probability ratio is "
        "exp(logp_new - logp_old)": v(lambda: -torch.min(
            (lp_new / lp_old) * adv, torch.clamp(lp_new / lp_old, 1 - eps, 1 + eps) * adv).mean()),
        "the ratio is inverted: r = exp(logp_new - logp_old), new over old": v(lambda: -torch.min(
            (1 / r) * adv, torch.clamp(1 / r, 1 - eps, 1 + eps) * adv).mean()),
        "no clipping at all: the loss is -mean(min(r A, clip(r, 1-ε, 1+ε) A))":
            v(lambda: -(r * adv).mean()),
        "the ratio is clipped but the unclipped term is missing (min is needed)":
            v(lambda: -(clip * adv).mean()),
        "the loss is summed instead of averaged": v(lambda: -torch.min(r * adv, clip * adv).sum()),
    }


def _clip_case(g, n=64, spread=0.5):
    lp_old = -torch.rand(n, generator=g, dtype=torch.float64) * 2 - 0.05
    lp_new = lp_old + torch.randn(n, generator=g, dtype=torch.float64) * spread
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    return lp_new, lp_old, adv


def _call_clip(fn, *args, **kw):
    out = call_learner(fn, *args, what="ppo_clip_loss", forbid=NO_LIBRARY, **kw)
    assert isinstance(out, (tuple, list)) and len(out) == 2, (
        f"ppo_clip_loss should return a pair (loss, stats), got {type(out).__name__}")
    loss, stats = out
    require_tensor(loss, "the loss")
    assert loss.numel() == 1, f"the loss should be a scalar, got shape {tuple(loss.shape)}"
    assert isinstance(stats, dict), f"stats should be a dict, got {type(stats).__name__}"
    return loss, stats


@graded("ppo_clip_loss computes -mean(min(r A, clip(r, 1-ε, 1+ε) A))")
def check_clip_loss_values(fn):
    g = torch.Generator().manual_seed(31)
    for eps, spread in [(0.2, 0.5), (0.1, 0.3), (0.3, 0.8)]:
        case = _clip_case(g, spread=spread)
        loss, _ = _call_clip(fn, *case, clip_eps=eps)
        want = _clip_ref(*case, eps)
        if not close(loss.reshape(()), want):
            why = diagnose(loss.reshape(()), _clip_variants(*case, eps),
                           "compare with r = exp(logp_new - logp_old), then "
                           "-mean(min(r * A, clamp(r, 1 - eps, 1 + eps) * A))")
            raise AssertionError(f"the clipped loss is wrong (clip_eps={eps}): {why}")
    case = _clip_case(g)
    loss, _ = _call_clip(fn, *case)
    assert close(loss.reshape(()), _clip_ref(*case, 0.2)), "the default clip_eps should be 0.2"


@graded("ppo_clip_loss: gradient of the policy gradient at r = 1, none through clipped samples")
def check_clip_loss_grad(fn):
    g = torch.Generator().manual_seed(32)
    lp_old = -torch.rand(32, generator=g, dtype=torch.float64) - 0.1
    adv = torch.randn(32, generator=g, dtype=torch.float64)
    lp_new = lp_old.clone().requires_grad_()
    loss, _ = _call_clip(fn, lp_new, lp_old, adv, clip_eps=0.2)
    assert loss.requires_grad, "the loss has no gradient with respect to logp_new (detached?)"
    (grad,) = torch.autograd.grad(loss, lp_new)
    want = -adv / adv.numel()                      # d/dlogp of -mean(exp(logp - old) A) at r = 1
    if not close(grad, want):
        why = diagnose(grad, {"the sign is lost: minimise minus the surrogate": lambda: adv / adv.numel(),
                              "the loss is summed, not averaged": lambda: -adv},
                       "at r = 1 it should equal the policy gradient -A / n")
        raise AssertionError(f"wrong gradient at ratio 1: {why}")
    # past the clip on the side that helps, a sample has no gradient
    r = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.05], dtype=torch.float64)
    a = torch.tensor([1.0, -1.0, -1.0, 1.0, 2.0], dtype=torch.float64)
    lp = r.log().requires_grad_()
    loss, _ = _call_clip(fn, lp, torch.zeros(5, dtype=torch.float64), a, clip_eps=0.2)
    (grad,) = torch.autograd.grad(loss, lp)
    want = torch.tensor([0.0, 1.5, 0.0, -0.5, -2.1], dtype=torch.float64) / 5
    assert close(grad, want), (
        f"wrong gradient for ratios {r.tolist()} with advantages {a.tolist()}: expected "
        f"{[round(x, 3) for x in want.tolist()]} (zero where the clip is active and helps), got "
        f"{[round(x, 3) for x in grad.tolist()]}")


@graded("ppo_clip_loss stats: clip_fraction (|r - 1| > ε) and approx_kl (mean((r - 1) - log r)) as floats")
def check_clip_stats(fn):
    g = torch.Generator().manual_seed(33)
    for eps in (0.2, 0.1):
        lp_new, lp_old, adv = _clip_case(g, spread=0.4)
        _, stats = _call_clip(fn, lp_new, lp_old, adv, clip_eps=eps)
        for key in ("clip_fraction", "approx_kl"):
            assert key in stats, f"stats has no key {key!r} (keys: {sorted(stats)})"
            assert isinstance(stats[key], float), (
                f"stats[{key!r}] should be a Python float (use .item()), got {type(stats[key]).__name__}")
        log_r = lp_new - lp_old
        r = log_r.exp()
        cf = ((r - 1).abs() > eps).double().mean().item()
        kl = ((r - 1) - log_r).mean().item()
        if not math.isclose(stats["clip_fraction"], cf, abs_tol=1e-6):
            above = (r > 1 + eps).double().mean().item()
            below = (r < 1 - eps).double().mean().item()
            hint = ("it counts only ratios above 1 + ε: count both sides, |r - 1| > ε"
                    if math.isclose(stats["clip_fraction"], above, abs_tol=1e-6) else
                    "it counts only ratios below 1 - ε: count both sides, |r - 1| > ε"
                    if math.isclose(stats["clip_fraction"], below, abs_tol=1e-6) else
                    "it should be the share of samples with |r - 1| > ε")
            raise AssertionError(f"clip_fraction is {stats['clip_fraction']:.4f}, expected {cf:.4f}: {hint}")
        if not math.isclose(stats["approx_kl"], kl, rel_tol=1e-4, abs_tol=1e-7):
            k1 = (-log_r).mean().item()
            hint = ("that is mean(logp_old - logp_new), the high-variance estimator: use "
                    "mean((r - 1) - log r)" if math.isclose(stats["approx_kl"], k1, rel_tol=1e-4)
                    else "use mean((r - 1) - log r) with r = exp(logp_new - logp_old)")
            raise AssertionError(f"approx_kl is {stats['approx_kl']:.5f}, expected {kl:.5f}: {hint}")


# ----------------------------------------------------------------------------- value loss


def _value_case(g, n=40):
    v_old = torch.randn(n, generator=g, dtype=torch.float64)
    v = v_old + torch.randn(n, generator=g, dtype=torch.float64) * 0.5
    R = torch.randn(n, generator=g, dtype=torch.float64)
    return v, R, v_old


@graded("value_loss without clipping: 0.5 * mean((v - R)^2)")
def check_value_loss_plain(fn):
    g = torch.Generator().manual_seed(41)
    v, R, _ = _value_case(g)
    got = call_learner(fn, v, R, what="value_loss", forbid=NO_LIBRARY)
    require_tensor(got, "value_loss")
    want = 0.5 * ((v - R) ** 2).mean()
    if not close(got.reshape(()), want):
        why = diagnose(got.reshape(()), {
            "the factor 0.5 is missing": lambda: ((v - R) ** 2).mean(),
            "summed instead of averaged": lambda: 0.5 * ((v - R) ** 2).sum(),
            "absolute instead of squared error": lambda: 0.5 * (v - R).abs().mean()},
            "compute 0.5 * mean((values - returns) ** 2)")
        raise AssertionError(f"value_loss is wrong: {why}")


@graded("value_loss with clipping: 0.5 * mean(max((v - R)^2, (v_old + clip(v - v_old, -ε, ε) - R)^2))")
def check_value_loss_clipped(fn):
    g = torch.Generator().manual_seed(42)
    for eps in (0.2, 0.5):
        v, R, v_old = _value_case(g)
        got = call_learner(fn, v, R, v_old, eps, what="value_loss", forbid=NO_LIBRARY)
        require_tensor(got, "value_loss")
        vc = v_old + torch.clamp(v - v_old, -eps, eps)
        want = 0.5 * torch.max((v - R) ** 2, (vc - R) ** 2).mean()
        if not close(got.reshape(()), want):
            why = diagnose(got.reshape(()), {
                "the clipped and unclipped errors are combined with min: PPO takes the "
                "pessimistic max": lambda: 0.5 * torch.min((v - R) ** 2, (vc - R) ** 2).mean(),
                "only the clipped error is used: take the max of clipped and unclipped":
                    lambda: 0.5 * ((vc - R) ** 2).mean(),
                "old_values and clip_eps are ignored": lambda: 0.5 * ((v - R) ** 2).mean(),
                "the value is clipped around the returns, not around old_values": lambda: 0.5 * torch.max(
                    (v - R) ** 2, (torch.clamp(v - R, -eps, eps)) ** 2).mean(),
                "the factor 0.5 is missing": lambda: torch.max((v - R) ** 2, (vc - R) ** 2).mean()},
                "clip the new value to old_values ± clip_eps, then take the max of both squared errors")
            raise AssertionError(f"value_loss with clipping (clip_eps={eps}) is wrong: {why}")


# ----------------------------------------------------------------------------- entropy


@graded("categorical_entropy matches the entropy of softmax(logits) over the last axis")
def check_entropy_values(fn):
    g = torch.Generator().manual_seed(51)
    for shape in [(7,), (5, 3), (2, 4, 6)]:
        logits = torch.randn(shape, generator=g, dtype=torch.float64) * 2
        got = call_learner(fn, logits, what="categorical_entropy", forbid=NO_LIBRARY)
        want = torch.distributions.Categorical(logits=logits).entropy()
        require_tensor(got, f"the entropy of logits {shape}")
        assert tuple(got.shape) == tuple(want.shape), (
            f"the entropy of logits of shape {shape} has shape {tuple(got.shape)}, expected "
            f"{tuple(want.shape)}: one entropy per row, summed over the last axis")
        if not close(got, want):
            p = torch.softmax(logits, -1)
            why = diagnose(got, {
                "the sign is wrong: H = -sum p log p is non-negative": lambda: (p * p.log()).sum(-1),
                "log p is taken of the logits, not of the softmax": lambda: -(p * logits).sum(-1),
                "the sum runs over the wrong axis": lambda: -(torch.softmax(logits, 0)
                                                              * torch.log_softmax(logits, 0)).sum(0),
                "it is averaged over the classes instead of summed": lambda: -(p * p.log()).mean(-1)},
                "compute -sum(softmax(logits) * log_softmax(logits), dim=-1)")
            raise AssertionError(f"categorical_entropy is wrong for logits of shape {shape}: {why}")


@graded("categorical_entropy is finite and right for logits of ±1e4")
def check_entropy_stable(fn):
    logits = torch.tensor([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4], [3.0, 1.0, -2.0]])
    got = call_learner(fn, logits, what="categorical_entropy", forbid=NO_LIBRARY)
    require_tensor(got, "the entropy of 4 rows of 3 logits", (4,))
    want = torch.distributions.Categorical(logits=logits.double()).entropy()
    assert torch.isfinite(got).all(), (
        f"the entropy is not finite for large logits (got {got.tolist()}): softmax gives "
        "p = 0 and log(0) = -inf, and 0 * -inf = nan; use log_softmax (or logsumexp) "
        "for log p")
    assert close(got, want, atol=1e-4), (
        f"wrong entropy for large logits: got {[round(x, 4) for x in got.tolist()]}, expected "
        f"{[round(x, 4) for x in want.tolist()]} (a one-hot distribution has entropy 0, two "
        "equal logits log 2, three log 3)")
