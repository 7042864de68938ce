"""The `ppo` assignment's autograder: its catalogue, proven in-process and by nbgrader.

The catalogue: the solution, the untouched release, plausible wrong implementations (each
must lose points in the part it touches, with a message naming the mistake, and nothing
elsewhere), several different correct ones (full marks), a library call (no credit) and
broken submissions. Every entry is proven in-process in the fast tier
(``test_catalogue_in_process``, see :class:`nbgrader_harness.Catalogue`); one real
``nbgrader autograde`` batch (slow) grades the solution, the release, one wrong entry per
part, the library call and the broken submissions, and checks that nbgrader's verdicts
equal the in-process ones. The course's one proof of the per-cell timeout is here: an
infinite loop in ``normalize_advantages`` hangs its single test cell, which gets a message
and no points, and the rest of the notebook is graded. The final ungraded training cell
is shortened with PPO_DEMO_STEPS.
"""
from __future__ import annotations

import textwrap

import pytest

from nbgrader_harness import Catalogue, solution_sources

ASSIGNMENT = "ppo"
SOL = solution_sources(ASSIGNMENT)
GAE_TESTS = ["test_gae_no_boundaries", "test_gae_termination", "test_gae_truncation",
             "test_gae_returns", "test_gae_defaults"]
PART_TESTS = {
    "gae": GAE_TESTS,
    "norm": ["test_normalize"],
    "clip": ["test_clip_loss_values", "test_clip_loss_grad", "test_clip_stats"],
    "vloss": ["test_value_loss_plain", "test_value_loss_clipped"],
    "entropy": ["test_entropy_values", "test_entropy_stable"],
}


def code(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


def gae(delta: str = "rewards + gamma * next_values * not_term - values",
        carry: str = "not_term * (1.0 - truncated.to(rewards.dtype))",
        ret: str = "advantages + values", gl: str = "gamma * lam") -> str:
    """A compute_gae with one expression replaced."""
    return code(f"""
def compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.99, lam=0.95):
    not_term = 1.0 - terminated.to(rewards.dtype)
    carry = {carry}
    deltas = {delta}
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        last = deltas[t] + {gl} * carry[t] * last
        advantages[t] = last
    return advantages, {ret}""")


def clip(loss: str = "-torch.min(ratio * advantages, clipped * advantages).mean()",
         ratio: str = "log_ratio.exp()", clipped: str = "torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)",
         cf: str = "((ratio - 1).abs() > clip_eps)", kl: str = "((ratio - 1) - log_ratio)") -> str:
    """A ppo_clip_loss with one expression replaced."""
    return code(f"""
def ppo_clip_loss(logp_new, logp_old, advantages, clip_eps=0.2):
    log_ratio = logp_new - logp_old
    ratio = {ratio}
    clipped = {clipped}
    loss = {loss}
    stats = {{"clip_fraction": {cf}.float().mean().item(),
             "approx_kl": {kl}.mean().item()}}
    return loss, stats""")


def vloss(combine: str = "torch.max") -> str:
    return code(f"""
def value_loss(values, returns, old_values=None, clip_eps=None):
    err = (values - returns) ** 2
    if old_values is None or clip_eps is None:
        return 0.5 * err.mean()
    v_clip = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    return 0.5 * {combine}(err, (v_clip - returns) ** 2).mean()""")


# name -> (cell sources replacing the solution's, test cells that must lose points,
#          words the message of the first of them must contain)
WRONG = {
    "gamma_lambda_swapped": ({"gae": gae(
        delta="rewards + lam * next_values * not_term - values")},
        ["test_gae_no_boundaries", "test_gae_termination", "test_gae_truncation"], "swapped"),
    "terminal_bootstrapped": ({"gae": gae(delta="rewards + gamma * next_values - values")},
                              ["test_gae_termination"], "terminal states are bootstrapped"),
    "truncation_as_termination": ({"gae": gae(
        delta="rewards + gamma * next_values * not_term * (1.0 - truncated.to(rewards.dtype)) - values")},
        ["test_gae_truncation"], "truncation is treated as a termination"),
    "carried_across_episodes": ({"gae": gae(carry="torch.ones_like(rewards)")},
                                ["test_gae_termination", "test_gae_truncation"], "carried across"),
    "carried_across_truncation": ({"gae": gae(carry="not_term")},
                                  ["test_gae_truncation"], "carried across a truncation"),
    "returns_missing_values": ({"gae": gae(ret="advantages")},
                               ["test_gae_returns"], "returns equal the advantages"),
    "lambda_missing": ({"gae": gae(gl="gamma")},
                       ["test_gae_no_boundaries", "test_gae_termination"], "λ is missing"),
    "next_value_from_next_row": ({"gae": gae(
        delta="rewards + gamma * torch.cat([values[1:], torch.zeros_like(values[:1])]) * not_term - values")},
        ["test_gae_no_boundaries", "test_gae_truncation"], "values[t+1]"),
    "population_std": ({"norm": code("""
        def normalize_advantages(adv, eps=1e-8):
            return (adv - adv.mean()) / (adv.std(unbiased=False) + eps)""")},
        ["test_normalize"], "population"),
    "max_instead_of_min": ({"clip": clip(loss="-torch.max(ratio * advantages, clipped * advantages).mean()")},
                           ["test_clip_loss_values"], "max instead of min"),
    "advantages_clipped": ({"clip": clip(
        loss="-torch.min(ratio * advantages, ratio * torch.clamp(advantages, 1 - clip_eps, 1 + clip_eps)).mean()")},
        ["test_clip_loss_values"], "advantages were clipped"),
    "sign_lost": ({"clip": clip(loss="torch.min(ratio * advantages, clipped * advantages).mean()")},
                  ["test_clip_loss_values", "test_clip_loss_grad"], "sign is lost"),
    "ratio_of_log_probs": ({"clip": clip(ratio="logp_new / logp_old")},
                           ["test_clip_loss_values"], "logp_new / logp_old"),
    "clip_fraction_one_sided": ({"clip": clip(cf="(ratio > 1 + clip_eps)")},
                                ["test_clip_stats"], "only ratios above"),
    "approx_kl_naive": ({"clip": clip(kl="(-log_ratio)")}, ["test_clip_stats"], "high-variance"),
    "value_clip_with_min": ({"vloss": vloss("torch.min")}, ["test_value_loss_clipped"], "with min"),
    "entropy_unstable": ({"entropy": code("""
        def categorical_entropy(logits):
            p = torch.softmax(logits, dim=-1)
            return -(p * torch.log(p)).sum(-1)""")}, ["test_entropy_stable"], "not finite"),
    "entropy_wrong_axis": ({"entropy": code("""
        def categorical_entropy(logits):
            logp = torch.log_softmax(logits, dim=0)
            return -(logp.exp() * logp).sum(0)""")}, ["test_entropy_values"], "last axis"),
}

CORRECT = {
    "loops_and_logsumexp": {
        "gae": code("""
            def compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.99, lam=0.95):
                flat = rewards.dim() == 1
                R, V, NV = (x.reshape(x.shape[0], -1) for x in (rewards, values, next_values))
                TE, TR = terminated.reshape(R.shape), truncated.reshape(R.shape)
                adv = torch.zeros_like(R)
                for n in range(R.shape[1]):
                    running = 0.0
                    for t in range(R.shape[0] - 1, -1, -1):
                        if TE[t, n] or TR[t, n]:
                            running = 0.0
                        boot = 0.0 if TE[t, n] else gamma * NV[t, n]
                        running = R[t, n] + boot - V[t, n] + gamma * lam * running
                        adv[t, n] = running
                adv = adv.reshape(rewards.shape)
                return adv, adv + values"""),
        "entropy": code("""
            def categorical_entropy(logits):
                logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
                return -(torch.exp(logp) * logp).sum(dim=-1)"""),
    },
    "matrix_gae_and_entr": {
        "gae": code("""
            def compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.99, lam=0.95):
                T = rewards.shape[0]
                delta = rewards + gamma * next_values * (~terminated.bool()) - values
                ended = (terminated.bool() | truncated.bool()).to(rewards.dtype)
                episode = torch.cumsum(ended, 0) - ended                     # id of each step's episode
                t = torch.arange(T).view(T, 1, *([1] * (rewards.dim() - 1)))
                k = torch.arange(T).view(1, T, *([1] * (rewards.dim() - 1)))
                same = (episode.unsqueeze(1) == episode.unsqueeze(0)) & (k >= t)
                w = torch.where(same, (gamma * lam) ** (k - t).clamp(min=0).to(rewards.dtype),
                                torch.zeros((), dtype=rewards.dtype))
                adv = (w * delta.unsqueeze(0)).sum(1)
                return adv, adv + values"""),
        "entropy": code("""
            def categorical_entropy(logits):
                return torch.special.entr(torch.softmax(logits, -1)).sum(-1)"""),
        "norm": code("""
            def normalize_advantages(adv, eps=1e-8):
                n = adv.numel()
                mean = adv.sum() / n
                std = torch.sqrt(((adv - mean) ** 2).sum() / (n - 1))
                return (adv - mean) / (std + eps)"""),
    },
    "where_cases": {
        "clip": code("""
            def ppo_clip_loss(logp_new, logp_old, advantages, clip_eps=0.2):
                r = torch.exp(logp_new - logp_old)
                pos = torch.minimum(r, torch.tensor(1 + clip_eps, dtype=r.dtype)) * advantages
                neg = torch.maximum(r, torch.tensor(1 - clip_eps, dtype=r.dtype)) * advantages
                surrogate = torch.where(advantages >= 0, pos, neg)
                out = (r < 1 - clip_eps) | (r > 1 + clip_eps)
                kl = (r - 1) - (logp_new - logp_old)
                return -surrogate.mean(), {"clip_fraction": float(out.double().mean()),
                                           "approx_kl": float(kl.mean())}"""),
        "vloss": code("""
            def value_loss(values, returns, old_values=None, clip_eps=None):
                a = (values - returns).pow(2)
                if old_values is not None and clip_eps is not None:
                    d = (values - old_values).clamp(-clip_eps, clip_eps)
                    a = torch.maximum(a, (old_values + d - returns).pow(2))
                return a.mean() / 2"""),
    },
    "log_space_clip_and_list_scan": {
        "clip": code("""
            import warnings

            def ppo_clip_loss(logp_new, logp_old, advantages, clip_eps=0.2):
                print("debug: batch of", logp_new.numel())
                warnings.warn("a harmless learner warning")
                lr = logp_new - logp_old
                lr_c = lr.clamp(math.log(1 - clip_eps), math.log(1 + clip_eps))
                obj = torch.min(lr.exp() * advantages, lr_c.exp() * advantages)
                r = lr.detach().exp()
                return -obj.mean(), {"clip_fraction": (r - 1).abs().gt(clip_eps).sum().item() / r.numel(),
                                     "approx_kl": torch.mean(r - 1 - lr.detach()).item()}"""),
        "gae": code("""
            def compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.99, lam=0.95):
                out, acc = [], torch.zeros_like(rewards[0])
                for t in range(len(rewards) - 1, -1, -1):
                    live = (~terminated[t]).to(rewards.dtype)
                    acc = acc * live * (~truncated[t]).to(rewards.dtype)
                    acc = rewards[t] + gamma * live * next_values[t] - values[t] + gamma * lam * acc
                    out.append(acc)
                adv = torch.stack(out[::-1])
                return adv, adv + values"""),
    },
}

FORBIDDEN = {
    "calls_llmcourse_rl": ({"gae": "from llmcourse.rl import compute_gae",
                            "entropy": code("""
                                def categorical_entropy(logits):
                                    return torch.distributions.Categorical(logits=logits).entropy()""")},
                           GAE_TESTS + PART_TESTS["entropy"], ""),
}

# name -> (cell sources, test cells that must lose points); graded by nbgrader only
BAD = {"syntax_error": ({**SOL, "clip": "def ppo_clip_loss(logp_new, logp_old, advantages, clip_eps=0.2)\n    return 0"},
                        PART_TESTS["clip"]),
       # the course's one proof of the per-cell timeout: a single test cell calls normalize_advantages
       "infinite_loop": ({**SOL, "norm": "def normalize_advantages(adv, eps=1e-8):\n    while True:\n        pass"},
                         PART_TESTS["norm"])}
TIMEOUT = 30        # seconds per cell: the slowest honest cell takes about 2 s on an idle machine

CAT = Catalogue(ASSIGNMENT, PART_TESTS, wrong=WRONG, correct=CORRECT, forbidden=FORBIDDEN,
                bad={n: (src, ()) for n, (src, _) in BAD.items()}, timeout=TIMEOUT,
                env={"PPO_DEMO_STEPS": "256"}, total=24)     # the ungraded training cell: one update


# ----------------------------------------------------------------------------- fast: the catalogue in-process


@pytest.mark.parametrize("kind,name", CAT.entries())
def test_catalogue_in_process(kind, name):
    CAT.prove(kind, name)


# ----------------------------------------------------------------------------- slow: one nbgrader batch


@pytest.fixture(scope="module")
def graded():
    """The solution, the release, one wrong entry per part, the library call and the broken submissions,
    graded by ONE nbgrader autograde run."""
    return CAT.grade()


@pytest.mark.slow
def test_nbgrader_grades_as_in_process(graded):
    CAT.assert_graded(graded)
    assert "greedy policy, 20 episodes" in graded["solution"].text    # the ungraded training cell ran


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD))
def test_broken_part_loses_only_that_part(graded, name):
    _, must_fail = BAD[name]
    r = graded[f"bad_{name}"]
    assert set(r.lost()) == set(must_fail), r.lost()
    assert r.total == r.max_total - sum(r.scores[k][1] for k in must_fail)


@pytest.mark.slow
def test_infinite_loop_is_stopped_by_the_cell_timeout_and_named(graded):
    r = graded["bad_infinite_loop"]
    (test,) = PART_TESTS["norm"]
    assert "did not finish" in r.errors[test] and "infinite loop" in r.errors[test], r.errors[test]
