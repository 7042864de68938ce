"""Hidden tests of the `rlhf` assignment (solutions/rlhf/rlhf.ipynb).

Papers: Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
arXiv:1909.08593, Sec. 2.2 (the KL-penalised reward, the adaptive controller); Ouyang et
al. (2022), "Training language models to follow instructions with human feedback",
arXiv:2203.02155, eq. 1 (the K-wise ranking loss). The learner writes
``response_logprobs(logits, input_ids)``, ``bradley_terry_loss(r_chosen, r_rejected)``,
``kwise_ranking_loss(rewards, ranks)``, ``kl_penalized_rewards(score, logprobs,
ref_logprobs, mask, beta)`` and ``AdaptiveKLController(init_beta, target_kl, horizon)``
(contract in ``COURSE.md`` and issue 15; float32 and float64 accepted and kept).

References here are independent of ``llmcourse.rlhf``: explicit loops over positions and
pairs in float64, ``math`` for the controller. When a value check fails, the learner's
result is compared with a catalogue of known-wrong variants and the message names the one
it matches. Calling the course's own ``llmcourse.rlhf`` gets no credit for that part.
Inputs are passed as copies except where a check tests that they are left unchanged.
"""
from __future__ import annotations

import math
import pkgutil

import torch
import torch.nn.functional as F

from ..common import Forbidden, _module_file, call_learner, close, diagnose, graded, require_tensor


def _rlhf_files() -> dict:
    import llmcourse.rlhf as pkg

    names = ["llmcourse.rlhf"] + [f"llmcourse.rlhf.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
    return {p: "the course's own llmcourse.rlhf" for name in names if (p := _module_file(name))}


NO_LIBRARY = Forbidden(files=_rlhf_files())


def _clone(*xs):
    return tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in xs)


# ----------------------------------------------------------------------------- response_logprobs


def _logprobs_ref(logits, ids):
    """out[b, t] = log_softmax(logits[b, t])[ids[b, t + 1]], by a loop in float64."""
    B, T, _ = logits.shape
    out = torch.zeros(B, T - 1, dtype=torch.float64)
    for b in range(B):
        for t in range(T - 1):
            row = logits[b, t].double()
            out[b, t] = row[ids[b, t + 1]] - torch.logsumexp(row, 0)
    return out.to(logits.dtype)


def _logprobs_variants(logits, ids):
    lsm = torch.log_softmax(logits, -1)
    return {
        "the targets are not shifted: logits[:, t] predicts input_ids[:, t + 1], not input_ids[:, t]":
            lambda: lsm[:, :-1].gather(-1, ids[:, :-1, None]).squeeze(-1),
        "the shift goes the wrong way: use logits[:, :-1] with input_ids[:, 1:]":
            lambda: lsm[:, 1:].gather(-1, ids[:, :-1, None]).squeeze(-1),
        "both logits and ids are shifted to start at 1: the last position's logits predict nothing":
            lambda: lsm[:, 1:].gather(-1, ids[:, 1:, None]).squeeze(-1),
        "the softmax is taken over the wrong axis (it must be over the vocabulary, the last one)":
            lambda: torch.log_softmax(logits, 1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1),
        "these are probabilities, not log-probabilities":
            lambda: torch.softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1),
        "the raw logits are returned, not log-probabilities (no log_softmax)":
            lambda: logits[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1),
    }


def _call_logprobs(fn, logits, ids):
    out = call_learner(fn, *_clone(logits, ids), what="response_logprobs", forbid=NO_LIBRARY)
    B, T = ids.shape
    require_tensor(out, "response_logprobs(logits, input_ids)")
    if tuple(out.shape) == (B, T):
        raise AssertionError(f"response_logprobs returned shape {(B, T)} for input_ids of shape {(B, T)}: it "
                             f"should be (B, T - 1) = {(B, T - 1)}; the last position predicts a token that is "
                             "not there, and position t predicts token t + 1")
    require_tensor(out, "response_logprobs(logits, input_ids)", (B, T - 1))
    return out


@graded("response_logprobs: out[b, t] = log_softmax(logits[b, t])[input_ids[b, t + 1]]")
def check_logprobs_values(fn):
    g = torch.Generator().manual_seed(101)
    for B, T, V in [(3, 7, 11), (1, 5, 4), (4, 2, 9)]:
        logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
        ids = torch.randint(V, (B, T), generator=g)
        out = _call_logprobs(fn, logits, ids)
        want = _logprobs_ref(logits, ids)
        if not close(out, want, atol=1e-7, rtol=1e-6):
            why = diagnose(out, _logprobs_variants(logits, ids),
                           "compare with log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None])")
            raise AssertionError(f"response_logprobs is wrong for logits of shape {(B, T, V)}: {why}")


@graded("response_logprobs keeps float32 and float64")
def check_logprobs_dtypes(fn):
    g = torch.Generator().manual_seed(102)
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(2, 6, 5, generator=g, dtype=dtype)
        ids = torch.randint(5, (2, 6), generator=g)
        out = _call_logprobs(fn, logits, ids)
        assert out.dtype == dtype, f"for {dtype} logits the result is {out.dtype}: keep the logits' dtype"
        assert close(out, _logprobs_ref(logits, ids), atol=1e-5), f"wrong values for {dtype} logits"


@graded("response_logprobs is finite and right for logits of magnitude 1e4")
def check_logprobs_stable(fn):
    logits = torch.tensor([[[1e4, -1e4, 0.0, 5.0], [0.0, 1e4, 1e4, -1e4], [-1e4, -1e4, -1e4, -1e4],
                            [1.0, 2.0, 3.0, 4.0]]])
    ids = torch.tensor([[0, 1, 2, 3]])
    out = _call_logprobs(fn, logits, ids)
    want = _logprobs_ref(logits, ids)
    assert torch.isfinite(out).all(), (
        f"response_logprobs is not finite for logits of magnitude 1e4 (got {out.tolist()}): "
        "log(softmax(x)) underflows to log(0) = -inf; use log_softmax (or x - logsumexp(x))")
    assert close(out, want, atol=1e-3, rtol=1e-6), (
        f"wrong log-probabilities for logits of magnitude 1e4: got {out.tolist()}, expected {want.tolist()}")


# ----------------------------------------------------------------------------- Bradley-Terry


def _bt_ref(rc, rr):
    m = (rc - rr).double()
    return (torch.clamp(-m, min=0) + torch.log1p(torch.exp(-m.abs()))).mean()      # softplus(-m), stable


def _bt_variants(rc, rr):
    m = (rc - rr).double()
    return {
        "the sign is flipped: the loss is -log sigmoid(r_chosen - r_rejected), small when the chosen "
        "response scores higher": lambda: F.softplus(m).mean(),
        "the minus sign is missing: the loss is the NEGATIVE log-likelihood": lambda: -F.softplus(-m).mean(),
        "the loss is summed, not averaged over the pairs": lambda: F.softplus(-m).sum(),
        "sigmoid without the log: the loss is -log sigmoid(margin)": lambda: -torch.sigmoid(m).mean(),
        "the margin is not taken: -log sigmoid(r_chosen) ignores the rejected response":
            lambda: F.softplus(-rc.double()).mean(),
    }


def _call_bt(fn, rc, rr):
    out = call_learner(fn, *_clone(rc, rr), what="bradley_terry_loss", forbid=NO_LIBRARY)
    require_tensor(out, "bradley_terry_loss")
    assert out.numel() == 1, f"bradley_terry_loss should return a scalar, got shape {tuple(out.shape)}"
    return out.reshape(())


@graded("bradley_terry_loss: mean of -log sigmoid(r_chosen - r_rejected)")
def check_bt_values(fn):
    g = torch.Generator().manual_seed(111)
    for n, scale in [(16, 1.0), (5, 3.0), (1, 0.5)]:
        rc = torch.randn(n, generator=g, dtype=torch.float64) * scale
        rr = torch.randn(n, generator=g, dtype=torch.float64) * scale
        out = _call_bt(fn, rc, rr)
        want = _bt_ref(rc, rr)
        if not close(out, want, atol=1e-7, rtol=1e-6):
            why = diagnose(out, _bt_variants(rc, rr), "compute (-logsigmoid(r_chosen - r_rejected)).mean()")
            raise AssertionError(f"bradley_terry_loss is wrong for {n} pairs: {why}")
    out = _call_bt(fn, torch.tensor([0.5, -1.0]), torch.tensor([0.0, 1.0]))
    assert out.dtype == torch.float32, f"float32 rewards give a {out.dtype} loss: keep the rewards' dtype"


@graded("bradley_terry_loss: finite, with the right gradients, for margins of ±100")
def check_bt_stable(fn):
    rc = torch.tensor([100.0, -100.0, 2.0, 0.0], requires_grad=True)
    rr = torch.tensor([0.0, 0.0, 1.0, -100.0], requires_grad=True)
    out = _call_bt(fn, rc, rr)
    want = _bt_ref(rc.detach(), rr.detach())
    assert torch.isfinite(out), (
        f"bradley_terry_loss is {out.item()} for margins of ±100 in float32: log(sigmoid(m)) is log(0) once "
        "sigmoid(-100) underflows to 0, and log(1 + exp(-m)) overflows for m = -100; use F.logsigmoid "
        "(or F.softplus), which stay finite")
    assert close(out, want, atol=1e-3), f"the loss for margins of ±100 is {out.item():.4f}, expected {want.item():.4f}"
    assert out.requires_grad, "the loss has no gradient with respect to the rewards (detached?)"
    grads = torch.autograd.grad(out, (rc, rr), allow_unused=True)
    assert all(gr is not None for gr in grads), "the loss does not depend on both r_chosen and r_rejected"
    m = (rc - rr).detach().double()
    want_gc = -torch.sigmoid(-m) / 4                                   # d/dr_c of mean softplus(-m)
    assert torch.isfinite(grads[0]).all() and torch.isfinite(grads[1]).all(), (
        f"the gradients are not finite for margins of ±100 (got {grads[0].tolist()}): "
        "use F.logsigmoid, whose gradient is sigmoid(-margin)")
    assert close(grads[0], want_gc, atol=1e-6) and close(grads[1], -want_gc, atol=1e-6), (
        f"wrong gradients for margins {m.tolist()}: d loss / d r_chosen should be -sigmoid(-margin) / n = "
        f"{[round(x, 4) for x in want_gc.tolist()]}, got {[round(x, 4) for x in grads[0].tolist()]}")


# ----------------------------------------------------------------------------- K-wise rankings


def _kwise_ref(rewards, ranks, *, backwards=False, both_orders=False, as_order=False, denom=None,
               adjacent=False):
    """InstructGPT eq. 1 by a loop over pairs in float64, one knob per known mistake."""
    B, K = rewards.shape
    total = torch.zeros((), dtype=torch.float64)
    for b in range(B):
        r = rewards[b].double()
        rank = ranks[b].tolist()
        if as_order:                                     # ranks read as "the index of the i-th best"
            rank = [rank.index(k) for k in range(K)]
        pairs = [(i, j) for i in range(K) for j in range(K) if i != j
                 and ((rank[i] > rank[j]) if backwards else (rank[i] < rank[j]))]
        if adjacent:
            pairs = [(i, j) for i, j in pairs if abs(rank[i] - rank[j]) == 1]
        s = sum((F.softplus(-(r[i] - r[j])) for i, j in pairs), torch.zeros((), dtype=torch.float64))
        if both_orders:
            s = s + sum((F.softplus(-(r[j] - r[i])) for i, j in pairs), torch.zeros((), dtype=torch.float64))
        total = total + s / (K * (K - 1) / 2 if denom is None else denom(K))
    return total / B


def _kwise_variants(rewards, ranks):
    B, K = rewards.shape
    return {
        "the ranks are read backwards: rank 0 is the BEST response": lambda: _kwise_ref(rewards, ranks, backwards=True),
        "each pair is counted in both orders: only -log sigmoid(r_better - r_worse) belongs in the loss":
            lambda: _kwise_ref(rewards, ranks, both_orders=True),
        "ranks[b, k] is the rank of response k, not the index of the k-th best response":
            lambda: _kwise_ref(rewards, ranks, as_order=True),
        "the pairs are summed, not averaged: divide by K(K-1)/2 per prompt":
            lambda: _kwise_ref(rewards, ranks, denom=lambda k: 1),
        "divided by K(K-1), the ordered pairs; there are K(K-1)/2 pairs":
            lambda: _kwise_ref(rewards, ranks, denom=lambda k: k * (k - 1)),
        "only neighbouring ranks are compared: the loss has all K(K-1)/2 pairs":
            lambda: _kwise_ref(rewards, ranks, adjacent=True),
        "only neighbouring ranks are compared (and averaged over them): the loss has all K(K-1)/2 pairs":
            lambda: _kwise_ref(rewards, ranks, adjacent=True, denom=lambda k: k - 1),
        "summed over the prompts instead of averaged": lambda: _kwise_ref(rewards, ranks) * B,
    }


def _call_kwise(fn, rewards, ranks):
    out = call_learner(fn, *_clone(rewards, ranks), what="kwise_ranking_loss", forbid=NO_LIBRARY)
    require_tensor(out, "kwise_ranking_loss")
    assert out.numel() == 1, f"kwise_ranking_loss should return a scalar, got shape {tuple(out.shape)}"
    return out.reshape(())


def _perms(g, B, K):
    return torch.stack([torch.randperm(K, generator=g) for _ in range(B)])


@graded("kwise_ranking_loss: mean over prompts of the mean over K(K-1)/2 pairs of -log sigmoid(r_better - r_worse)")
def check_kwise_values(fn):
    g = torch.Generator().manual_seed(121)
    for B, K in [(5, 4), (3, 6), (2, 3)]:
        rewards = torch.randn(B, K, generator=g, dtype=torch.float64) * 1.5
        ranks = _perms(g, B, K)
        out = _call_kwise(fn, rewards, ranks)
        want = _kwise_ref(rewards, ranks)
        if not close(out, want, atol=1e-7, rtol=1e-6):
            why = diagnose(out, _kwise_variants(rewards, ranks),
                           "for every pair (i, j) with ranks[b, i] < ranks[b, j] add -logsigmoid(r_i - r_j); "
                           "divide by K(K-1)/2, then average over the prompts")
            raise AssertionError(f"kwise_ranking_loss is wrong for {B} prompts with K = {K}: {why}")


@graded("kwise_ranking_loss: K = 2 is the Bradley-Terry loss; float32 and float64 kept")
def check_kwise_small(fn):
    g = torch.Generator().manual_seed(122)
    rewards = torch.randn(6, 2, generator=g, dtype=torch.float64)
    ranks = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0], [1, 0], [0, 1]])
    out = _call_kwise(fn, rewards, ranks)
    want = _kwise_ref(rewards, ranks)
    if not close(out, want, atol=1e-7):
        why = diagnose(out, _kwise_variants(rewards, ranks), "each prompt has one pair, ranked 0 over 1")
        raise AssertionError(f"for K = 2 the loss is Bradley-Terry's, mean of -log sigmoid(r_chosen - r_rejected) = "
                             f"{want.item():.5f}, got {out.item():.5f}: {why}")
    for dtype in (torch.float32, torch.float64):
        r = torch.randn(2, 4, generator=g, dtype=dtype)
        out = _call_kwise(fn, r, _perms(g, 2, 4))
        assert out.dtype == dtype, f"for {dtype} rewards the loss is {out.dtype}: keep the rewards' dtype"


@graded("kwise_ranking_loss: finite, with the right gradients, for rewards of ±100")
def check_kwise_stable(fn):
    rewards = torch.tensor([[100.0, -100.0, 0.0], [50.0, 50.0, -50.0]], requires_grad=True)
    ranks = torch.tensor([[2, 0, 1], [0, 1, 2]])           # row 0: the worst response has the highest reward
    out = _call_kwise(fn, rewards, ranks)
    want = _kwise_ref(rewards.detach(), ranks)
    assert torch.isfinite(out), (
        f"kwise_ranking_loss is {out.item()} for rewards of ±100 in float32: log(sigmoid(-200)) is log(0) and "
        "log(1 + exp(200)) overflows; use F.logsigmoid (or F.softplus), which stay finite")
    assert close(out, want, atol=1e-3), f"the loss for rewards of ±100 is {out.item():.4f}, expected {want.item():.4f}"
    assert out.requires_grad, "the loss has no gradient with respect to the rewards (detached?)"
    (grad,) = torch.autograd.grad(out, rewards)
    r = rewards.detach().double().requires_grad_()
    (want_g,) = torch.autograd.grad(_kwise_ref(r, ranks), r)
    assert torch.isfinite(grad).all() and close(grad, want_g, atol=1e-5), (
        f"wrong gradients for rewards of ±100: expected {[[round(x, 4) for x in row] for row in want_g.tolist()]}, "
        f"got {[[round(x, 4) for x in row] for row in grad.tolist()]}")


# ----------------------------------------------------------------------------- KL-penalised rewards


def _rewards_ref(score, lp, ref, mask, beta, *, where="last", penalty_everywhere=False, sign=1.0,
                 score_everywhere=False, no_score=False):
    """The per-token rewards by a loop in float64, one knob per known mistake."""
    B, T = lp.shape
    out = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        cols = [t for t in range(T) if mask[b, t]]
        for t in range(T):
            if penalty_everywhere or mask[b, t]:
                out[b, t] = -sign * beta * (lp[b, t].double() - ref[b, t].double())
        if not cols or no_score:
            continue
        if score_everywhere:
            for t in cols:
                out[b, t] += score[b].double()
            continue
        at = {"last": cols[-1], "first": cols[0], "end": T - 1, "count": len(cols) - 1,
              "after": min(cols[-1] + 1, T - 1)}[where]
        out[b, at] += score[b].double()
    return out.to(lp.dtype)


def _rewards_case(g, dtype=torch.float64):
    B, T = 5, 9
    lp = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    ref = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, (s, e) in enumerate([(3, 7), (0, 9), (5, 6), (2, 8), (6, 9)]):   # left-padded, different lengths
        mask[b, s:e] = True
    score = torch.randn(B, generator=g, dtype=dtype) * 2
    return score, lp, ref, mask


def _rewards_variants(score, lp, ref, mask, beta):
    return {
        "the score is added at the first response token: it belongs at each row's LAST True position":
            lambda: _rewards_ref(score, lp, ref, mask, beta, where="first"),
        "the score is added in the last column whatever the mask: it belongs at each row's last True position":
            lambda: _rewards_ref(score, lp, ref, mask, beta, where="end"),
        "the score's index is mask.sum() - 1, which assumes the response starts at column 0 (the prompt "
        "is left-padded before it): use each row's last True position":
            lambda: _rewards_ref(score, lp, ref, mask, beta, where="count"),
        "the score is added one position after the last response token":
            lambda: _rewards_ref(score, lp, ref, mask, beta, where="after"),
        "the KL penalty is paid on masked (non-response) tokens too: multiply by the mask":
            lambda: _rewards_ref(score, lp, ref, mask, beta, penalty_everywhere=True),
        "the KL penalty has the wrong sign: it is -beta * (logprobs - ref_logprobs)":
            lambda: _rewards_ref(score, lp, ref, mask, beta, sign=-1.0),
        "the score is added to every response token, not only the last":
            lambda: _rewards_ref(score, lp, ref, mask, beta, score_everywhere=True),
        "the score is missing: add it at each row's last response token":
            lambda: _rewards_ref(score, lp, ref, mask, beta, no_score=True),
        "beta is ignored: the penalty is -beta * (logprobs - ref_logprobs)":
            lambda: _rewards_ref(score, lp, ref, mask, 1.0),
    }


def _call_rewards(fn, score, lp, ref, mask, beta, copy=True):
    args = _clone(score, lp, ref, mask) if copy else (score, lp, ref, mask)
    out = call_learner(fn, *args, beta, what="kl_penalized_rewards", forbid=NO_LIBRARY)
    require_tensor(out, "kl_penalized_rewards", tuple(lp.shape))
    return out


@graded("kl_penalized_rewards: -beta (logprobs - ref_logprobs) on the mask, the score at each row's last True")
def check_rewards_values(fn):
    g = torch.Generator().manual_seed(131)
    for beta in (0.1, 0.02):
        case = _rewards_case(g)
        out = _call_rewards(fn, *case, beta)
        want = _rewards_ref(*case, beta)
        if not close(out, want, atol=1e-7, rtol=1e-6):
            why = diagnose(out, _rewards_variants(*case, beta),
                           "compare with -beta * (logprobs - ref_logprobs) * mask, plus score at each row's last "
                           "True position")
            raise AssertionError(f"kl_penalized_rewards is wrong (beta={beta}): {why}")
    case = _rewards_case(g, torch.float32)
    out = _call_rewards(fn, *case, 0.05)
    assert out.dtype == torch.float32, f"float32 log-probabilities give {out.dtype} rewards: keep their dtype"
    assert close(out, _rewards_ref(*case, 0.05), atol=1e-5), "wrong rewards for float32 inputs"


@graded("kl_penalized_rewards leaves its inputs unchanged and returns a tensor without gradient")
def check_rewards_side_effects(fn):
    g = torch.Generator().manual_seed(132)
    score, lp, ref, mask = _rewards_case(g)
    lp = lp.requires_grad_()
    score = score.requires_grad_()
    before = [t.detach().clone() for t in (score, lp, ref, mask)]
    try:
        out = call_learner(lambda: fn(score, lp, ref, mask, 0.1), what="kl_penalized_rewards", forbid=NO_LIBRARY)
    except AssertionError as e:
        if "a leaf Variable that requires grad" in str(e) or "in-place operation" in str(e):
            raise AssertionError("kl_penalized_rewards edits its inputs in place (PyTorch refused, because they "
                                 "require grad): build a new tensor instead, e.g. torch.zeros_like or .clone()") from None
        raise
    require_tensor(out, "kl_penalized_rewards", tuple(lp.shape))
    for name, t, b in zip(("score", "logprobs", "ref_logprobs", "mask"), (score, lp, ref, mask), before):
        assert torch.equal(t.detach(), b), (
            f"kl_penalized_rewards changed its input `{name}` in place: PPO reads the log-probabilities again "
            "after computing the rewards; build a new tensor (torch.zeros_like, .clone()) instead")
    assert not out.requires_grad, (
        "the rewards require grad (they were computed from log-probabilities that do): rewards are fixed "
        "targets for PPO, compute them under torch.no_grad() or .detach() the result")
    assert not any(out.data_ptr() == t.data_ptr() for t in (lp, ref)), (
        "kl_penalized_rewards returns one of its inputs' storage: return a new tensor")
    assert close(out, _rewards_ref(score.detach(), lp.detach(), ref, mask, 0.1), atol=1e-7), (
        "wrong rewards for inputs that require grad")


# ----------------------------------------------------------------------------- the adaptive controller


def _controller_run(updates, init, target, horizon, *, clip=True, clip_ratio=False, use_n=True,
                    additive=False, sign=1.0, use_horizon=True):
    value = init
    out = []
    for kl, n in updates:
        if clip_ratio:
            e = max(min(kl / target, 0.2), -0.2) - 1
        else:
            e = sign * (kl / target - 1)
            if clip:
                e = max(min(e, 0.2), -0.2)
        step = e * (n if use_n else 1) / (horizon if use_horizon else 1)
        value = value + step if additive else value * (1 + step)
        out.append(value)
    return out


UPDATES = [(9.0, 64), (7.0, 64), (6.3, 32), (2.0, 64), (5.0, 128), (30.0, 16), (6.0, 64), (0.5, 256)]


def _controller_values(cls, init, target, horizon, updates):
    desc = f"AdaptiveKLController(init_beta={init}, target_kl={target}, horizon={horizon})"
    ctl = call_learner(cls, init, target, horizon, what=desc, forbid=NO_LIBRARY)
    assert hasattr(ctl, "value"), f"{desc} has no attribute `value`"
    v0 = ctl.value
    assert isinstance(v0, (int, float)) or (isinstance(v0, torch.Tensor) and v0.numel() == 1), (
        f"{desc}.value should be a number, got {type(v0).__name__}")
    assert math.isclose(float(v0), init, rel_tol=1e-9), f"{desc}.value starts at {float(v0)}, not at init_beta={init}"
    got = []
    for kl, n in updates:
        call_learner(ctl.update, kl, n, what=f"{desc}.update({kl}, {n})", forbid=NO_LIBRARY)
        got.append(float(ctl.value))
    return got, desc


@graded("AdaptiveKLController: e = clip(KL / target - 1, -0.2, 0.2); value *= 1 + e * n_steps / horizon")
def check_controller_values(cls):
    for init, target, horizon in [(0.1, 6.0, 10_000), (0.5, 2.0, 500)]:
        got, desc = _controller_values(cls, init, target, horizon, UPDATES)
        want = _controller_run(UPDATES, init, target, horizon)
        if not all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(got, want)):
            variants = {
                "the error is not clipped: e = clip(KL / target - 1, -0.2, 0.2)": dict(clip=False),
                "the clip is applied to the ratio KL / target instead of to KL / target - 1":
                    dict(clip_ratio=True),
                "n_steps is ignored: value *= 1 + e * n_steps / horizon": dict(use_n=False),
                "horizon is ignored: value *= 1 + e * n_steps / horizon": dict(use_horizon=False),
                "the update is additive: value is MULTIPLIED by 1 + e * n_steps / horizon": dict(additive=True),
                "the sign is flipped: beta must grow while the KL is above its target": dict(sign=-1.0),
            }
            why = next((msg for msg, kw in variants.items()
                        if all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
                               for a, b in zip(got, _controller_run(UPDATES, init, target, horizon, **kw)))),
                       "compare with e = clip(current_kl / target_kl - 1, -0.2, 0.2); value *= 1 + e * n_steps / horizon")
            first = next(i for i, (a, b) in enumerate(zip(got, want)) if not math.isclose(a, b, rel_tol=1e-9))
            raise AssertionError(
                f"{desc}: after the updates {UPDATES[:first + 1]} value is {got[first]:.6g}, expected "
                f"{want[first]:.6g}: {why}")


@graded("AdaptiveKLController holds the KL: beta grows above the target, shrinks below, stays at it")
def check_controller_behaviour(cls):
    for kl, direction in [(12.0, 1), (1.0, -1), (4.0, 0)]:
        got, desc = _controller_values(cls, 0.2, 4.0, 100, [(kl, 10)] * 20)
        want = _controller_run([(kl, 10)] * 20, 0.2, 4.0, 100)
        moved = (got[-1] > 0.2 + 1e-12) - (got[-1] < 0.2 - 1e-12)
        assert moved == direction, (
            f"{desc}: after 20 updates with KL = {kl} (target 4.0) value went from 0.2 to {got[-1]:.4g}; it should "
            + ("grow (the policy strays too far)" if direction > 0 else
               "shrink (the policy could move more)" if direction < 0 else "stay the same (KL is on target)"))
        assert math.isclose(got[-1], want[-1], rel_tol=1e-9), (
            f"{desc}: after 20 updates with KL = {kl}, value is {got[-1]:.6g}, expected {want[-1]:.6g} "
            f"(each update multiplies it by 1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)")
