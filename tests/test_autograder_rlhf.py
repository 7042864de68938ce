"""The `rlhf` assignment's autograder: its catalogue, proven in-process and by nbgrader.

The catalogue, as data: wrong implementations (name -> (cell sources, hidden tests that must
fail, words the first failure's message must contain); nothing outside the parts touched may
lose points), correct implementations written differently from the contract (loops, a
log-sum-exp, softplus and binary cross-entropy, float64 inside, index arithmetic, one that
prints, warns and writes to stderr: full marks), submissions that call the course's own
``llmcourse.rlhf`` (no credit for that part) and a broken one.

Proven with ``nbgrader_harness.Catalogue``: every entry in-process in the fast tier (the
notebook's cells with the entry's sources, then the hidden test cells, in one namespace, as a
kernel runs them; a hidden test passes when it raises nothing and writes nothing to stderr,
nbgrader's rule); one real ``nbgrader autograde`` batch (slow) of the solution, the release,
the first wrong entry of each part, one library call, the noisy correct entry and the broken
submission, whose verdict per test must equal the in-process one; and ``llmcourse grade``
(workers, sandbox, tamper guard) grades the solution once (slow). The ungraded PPO cells at the end are shortened with ``RLHF_DEMO_ITERS``.
"""
from __future__ import annotations

import os
import textwrap

import pytest

from nbgrader_harness import REPO, Catalogue, course_with_submission, grade_id, solution_sources

ASSIGNMENT = "rlhf"
SOL = solution_sources(ASSIGNMENT)
PART_TESTS = {
    "logprobs": ["test_logprobs_values", "test_logprobs_dtypes", "test_logprobs_stable"],
    "bt": ["test_bt_values", "test_bt_stable"],
    "kwise": ["test_kwise_values", "test_kwise_small", "test_kwise_stable"],
    "rewards": ["test_rewards_values", "test_rewards_side_effects"],
    "controller": ["test_controller_values", "test_controller_behaviour"],
}
TOTAL = 24
TIMEOUT = 60                      # nbgrader's per-cell limit; the slowest check takes well under a second


def code(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


def edit(part: str, old: str, new: str) -> dict[str, str]:
    """The solution's cell ``part`` with ``old`` (which must occur once) replaced by ``new``."""
    src = SOL[part]
    assert src.count(old) == 1, (part, old)
    return {part: src.replace(old, new)}


def logprobs(body: str) -> dict[str, str]:
    return {"logprobs": "def response_logprobs(logits, input_ids):\n" + textwrap.indent(code(body), "    ")}


def bt(body: str) -> dict[str, str]:
    return {"bt": "def bradley_terry_loss(r_chosen, r_rejected):\n" + textwrap.indent(code(body), "    ")}


def kwise(margin="rewards[:, :, None] - rewards[:, None, :]", better="ranks[:, :, None] < ranks[:, None, :]",
          nll="-F.logsigmoid(margin)", denom="(K * (K - 1) / 2)", reduce=".mean()") -> dict[str, str]:
    return {"kwise": code(f"""
        def kwise_ranking_loss(rewards, ranks):
            K = rewards.shape[-1]
            margin = {margin}
            better = {better}
            nll = torch.where(better, {nll}, torch.zeros_like(margin))
            return (nll.sum(dim=(1, 2)) / {denom}){reduce}""")}


def controller(update: str) -> dict[str, str]:
    head = code("""
        class AdaptiveKLController:
            def __init__(self, init_beta, target_kl, horizon):
                self.value = init_beta
                self.target_kl = target_kl
                self.horizon = horizon

            def update(self, current_kl, n_steps):""")
    return {"controller": head + "\n" + textwrap.indent(code(update), " " * 8)}


LP, BT, KW, RW, CT = (PART_TESTS[p] for p in ("logprobs", "bt", "kwise", "rewards", "controller"))

# ----------------------------------------------------------------------------- wrong implementations

WRONG = {
    # response_logprobs
    "logprobs_no_shift": (logprobs("""
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        return logp.gather(-1, input_ids[:, :-1, None]).squeeze(-1)"""), LP[:1], "not shifted"),
    "logprobs_wrong_shift": (logprobs("""
        logp = torch.log_softmax(logits[:, 1:], dim=-1)
        return logp.gather(-1, input_ids[:, :-1, None]).squeeze(-1)"""), LP[:1], "wrong way"),
    "logprobs_full_length": (logprobs("""
        return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[..., None]).squeeze(-1)"""),
        LP, "should be (B, T - 1)"),
    "logprobs_log_of_softmax": (logprobs("""
        p = torch.softmax(logits[:, :-1], dim=-1)
        return torch.log(p.gather(-1, input_ids[:, 1:, None]).squeeze(-1))"""), ["test_logprobs_stable"], "not finite"),
    "logprobs_wrong_axis": (logprobs("""
        logp = torch.log_softmax(logits, dim=1)[:, :-1]
        return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)"""), LP[:1], "wrong axis"),
    "logprobs_probabilities": (logprobs("""
        return torch.softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)"""),
        LP[:1], "probabilities, not log-probabilities"),
    "logprobs_float32_always": (logprobs("""
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)"""), ["test_logprobs_dtypes"], "dtype"),
    # bradley_terry_loss
    "bt_sign_flipped": (bt("return -F.logsigmoid(r_rejected - r_chosen).mean()"), BT, "sign is flipped"),
    "bt_log_of_sigmoid": (bt("return -torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()"),
                          ["test_bt_stable"], "logsigmoid"),
    "bt_summed": (bt("return -F.logsigmoid(r_chosen - r_rejected).sum()"), BT, "summed"),
    "bt_no_minus": (bt("return F.logsigmoid(r_chosen - r_rejected).mean()"), BT, "minus sign is missing"),
    "bt_softplus_overflow": (bt("return torch.log1p(torch.exp(r_rejected - r_chosen)).mean()"),
                             ["test_bt_stable"], "logsigmoid"),
    # kwise_ranking_loss
    "kwise_ranks_backwards": (kwise(better="ranks[:, :, None] > ranks[:, None, :]"), KW[:2], "backwards"),
    "kwise_both_orders": (kwise(better="ranks[:, :, None] != ranks[:, None, :]"), KW[:2], "both orders"),
    "kwise_pairs_summed": (kwise(denom="1"), KW[:1], "summed, not averaged"),
    "kwise_ordered_pairs": (kwise(denom="(K * (K - 1))"), KW[:2], "K(K-1), the ordered pairs"),
    "kwise_ranks_as_order": ({"kwise": code("""
        def kwise_ranking_loss(rewards, ranks):
            # ranks read as the order of the responses (index of the best first): a misreading
            K = rewards.shape[-1]
            sorted_r = torch.gather(rewards, 1, ranks)              # best first
            margin = sorted_r[:, :, None] - sorted_r[:, None, :]
            i, j = torch.triu_indices(K, K, 1)
            return (-F.logsigmoid(margin[:, i, j])).mean()""")}, ["test_kwise_values"], "rank of response k"),
    "kwise_adjacent_only": ({"kwise": code("""
        def kwise_ranking_loss(rewards, ranks):
            order = ranks.argsort(-1)                               # best first
            r = torch.gather(rewards, 1, order)
            return (-F.logsigmoid(r[:, :-1] - r[:, 1:])).mean()""")}, ["test_kwise_values"], "neighbouring ranks"),
    "kwise_log_of_sigmoid": (kwise(nll="-torch.log(torch.sigmoid(margin))"), ["test_kwise_stable"], "logsigmoid"),
    # kl_penalized_rewards
    "rewards_penalty_everywhere": (edit("rewards", "torch.where(mask, -beta * (logprobs - ref_logprobs), torch.zeros_like(logprobs))",
                                        "-beta * (logprobs - ref_logprobs)"), RW, "masked (non-response) tokens"),
    "rewards_score_at_count": (edit("rewards", "last = T - 1 - mask.flip(-1).to(torch.uint8).argmax(-1)     # each row's last True",
                                    "last = mask.sum(-1) - 1"), RW, "mask.sum() - 1"),
    "rewards_score_at_end": (edit("rewards", "last = T - 1 - mask.flip(-1).to(torch.uint8).argmax(-1)     # each row's last True",
                                  "last = torch.full((mask.shape[0],), T - 1)"), RW, "last column"),
    "rewards_score_at_first": (edit("rewards", "last = T - 1 - mask.flip(-1).to(torch.uint8).argmax(-1)     # each row's last True",
                                    "last = mask.to(torch.uint8).argmax(-1)"), RW, "first response token"),
    "rewards_sign_flipped": (edit("rewards", "-beta * (logprobs - ref_logprobs)", "beta * (logprobs - ref_logprobs)"),
                             RW, "wrong sign"),
    "rewards_score_everywhere": (edit("rewards", "rewards[rows, last] += score.to(rewards.dtype)",
                                      "rewards += torch.where(mask, score[:, None].to(rewards.dtype), 0.0)"),
                                 RW, "every response token"),
    "rewards_in_place": ({"rewards": code("""
        def kl_penalized_rewards(score, logprobs, ref_logprobs, mask, beta):
            with torch.no_grad():
                logprobs -= ref_logprobs                      # in place: the caller's tensor changes
                logprobs *= -beta
                logprobs[~mask] = 0.0
                last = mask.shape[1] - 1 - mask.flip(-1).to(torch.uint8).argmax(-1)
                logprobs[torch.arange(mask.shape[0]), last] += score.to(logprobs.dtype)
            return logprobs""")}, ["test_rewards_side_effects"], "in place"),
    "rewards_with_grad": (edit("rewards", "    with torch.no_grad():\n        rewards =", "    if True:\n        rewards ="),
                          ["test_rewards_side_effects"], "require grad"),
    # AdaptiveKLController
    "controller_no_clip": (controller("""
        error = current_kl / self.target_kl - 1
        self.value *= 1 + error * n_steps / self.horizon"""), CT[:1], "not clipped"),
    "controller_clip_on_ratio": (controller("""
        error = min(max(current_kl / self.target_kl, -0.2), 0.2) - 1
        self.value *= 1 + error * n_steps / self.horizon"""), CT, "applied to the ratio"),
    "controller_n_steps_ignored": (controller("""
        error = min(max(current_kl / self.target_kl - 1, -0.2), 0.2)
        self.value *= 1 + error / self.horizon"""), CT[:1], "n_steps is ignored"),
    "controller_additive": (controller("""
        error = min(max(current_kl / self.target_kl - 1, -0.2), 0.2)
        self.value += error * n_steps / self.horizon"""), CT[:1], "additive"),
    "controller_sign_flipped": (controller("""
        error = min(max(1 - current_kl / self.target_kl, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon"""), CT, "sign is flipped"),
}

# ----------------------------------------------------------------------------- correct implementations

CORRECT = {
    "loops_everywhere": {
        "logprobs": code("""
            def response_logprobs(logits, input_ids):
                B, T, V = logits.shape
                out = torch.empty(B, T - 1, dtype=logits.dtype)
                for b in range(B):
                    for t in range(T - 1):
                        row = logits[b, t]
                        out[b, t] = row[input_ids[b, t + 1]] - torch.logsumexp(row, dim=0)
                return out"""),
        "kwise": code("""
            def kwise_ranking_loss(rewards, ranks):
                B, K = rewards.shape
                per_prompt = []
                for b in range(B):
                    terms = []
                    for i in range(K):
                        for j in range(K):
                            if ranks[b, i] < ranks[b, j]:
                                terms.append(F.softplus(rewards[b, j] - rewards[b, i]))
                    per_prompt.append(torch.stack(terms).mean())
                return torch.stack(per_prompt).mean()"""),
        "rewards": code("""
            def kl_penalized_rewards(score, logprobs, ref_logprobs, mask, beta):
                B, T = logprobs.shape
                out = torch.zeros(B, T, dtype=logprobs.dtype)
                for b in range(B):
                    last = None
                    for t in range(T):
                        if mask[b, t]:
                            out[b, t] = -beta * (logprobs[b, t].item() - ref_logprobs[b, t].item())
                            last = t
                    if last is not None:
                        out[b, last] += score[b].item()
                return out"""),
        "controller": code("""
            import numpy as np

            class AdaptiveKLController:
                def __init__(self, init_beta, target_kl, horizon):
                    self.value, self._target, self._horizon = float(init_beta), target_kl, horizon

                def update(self, current_kl, n_steps):
                    e = float(np.clip(current_kl / self._target - 1.0, -0.2, 0.2))
                    self.value = self.value * (1.0 + e * n_steps / self._horizon)
                    return self.value"""),
    },
    "softplus_and_bce": {
        "logprobs": code("""
            def response_logprobs(logits, input_ids):
                z = logits[:, :-1]
                picked = torch.gather(z, 2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)
                return picked - torch.logsumexp(z, dim=2)"""),
        "bt": code("""
            def bradley_terry_loss(r_chosen, r_rejected):
                m = r_chosen - r_rejected
                return F.binary_cross_entropy_with_logits(m, torch.ones_like(m))"""),
        "kwise": code("""
            import itertools

            def kwise_ranking_loss(rewards, ranks):
                K = rewards.shape[1]
                order = ranks.argsort(dim=1)                       # best first
                r = rewards.gather(1, order)
                pairs = list(itertools.combinations(range(K), 2))  # (better, worse) positions
                i = torch.tensor([p[0] for p in pairs])
                j = torch.tensor([p[1] for p in pairs])
                return F.softplus(r[:, j] - r[:, i]).mean()"""),
        "rewards": code("""
            def kl_penalized_rewards(score, logprobs, ref_logprobs, mask, beta):
                kl = (logprobs - ref_logprobs).detach()
                r = -beta * kl * mask.to(kl.dtype)
                idx = torch.arange(mask.shape[1]).expand_as(mask)
                last = torch.where(mask, idx, -1).max(dim=1).values
                onehot = torch.nn.functional.one_hot(last.clamp(min=0), mask.shape[1]).to(kl.dtype)
                return r + onehot * score.detach().to(kl.dtype)[:, None]"""),
    },
    "float64_inside": {
        "logprobs": code("""
            def response_logprobs(logits, input_ids):
                lp = torch.log_softmax(logits.double(), -1)[:, :-1]
                out = torch.take_along_dim(lp, input_ids[:, 1:, None], dim=-1)[..., 0]
                return out.to(logits.dtype)"""),
        "bt": code("""
            def bradley_terry_loss(r_chosen, r_rejected):
                d = (r_chosen - r_rejected).double()
                return (torch.relu(-d) + torch.log1p(torch.exp(-d.abs()))).mean().to(r_chosen.dtype)"""),
        "kwise": code("""
            def kwise_ranking_loss(rewards, ranks):
                B, K = rewards.shape
                r = rewards.double()
                d = r.unsqueeze(2) - r.unsqueeze(1)
                w = (ranks.unsqueeze(2) < ranks.unsqueeze(1)).double()
                per = (w * -F.logsigmoid(d)).sum((1, 2)) / w.sum((1, 2))
                return per.mean().to(rewards.dtype)"""),
        "rewards": code("""
            def kl_penalized_rewards(score, logprobs, ref_logprobs, mask, beta):
                with torch.no_grad():
                    out = (-beta * (logprobs.double() - ref_logprobs.double())).masked_fill(~mask, 0.0)
                    pos = torch.arange(1, mask.shape[1] + 1) * mask           # 0 off the mask
                    last = pos.argmax(dim=1)
                    out[torch.arange(len(last)), last] += score.double()
                return out.to(logprobs.dtype)"""),
        "controller": code("""
            class AdaptiveKLController:
                def __init__(self, init_beta, target_kl, horizon):
                    self.beta = torch.tensor(float(init_beta), dtype=torch.float64)
                    self.target_kl, self.horizon = target_kl, horizon

                @property
                def value(self):
                    return float(self.beta)

                def update(self, current_kl, n_steps):
                    e = torch.clamp(torch.tensor(current_kl / self.target_kl - 1, dtype=torch.float64), -0.2, 0.2)
                    self.beta = self.beta * (1 + e * n_steps / self.horizon)"""),
    },
    "noisy_prints_and_warns": {part: ("import sys\nimport warnings\n\n" + src.replace(
        ":\n    ", ":\n    print('debug: called', file=sys.stdout); warnings.warn('a harmless learner warning'); "
        "print('a line on stderr', file=sys.stderr)\n    ", 1)) for part, src in SOL.items() if part != "controller"},
}

# ----------------------------------------------------------------------------- library calls

FORBIDDEN = {
    "calls_llmcourse_rlhf": ({"logprobs": "from llmcourse.rlhf.core import response_logprobs",
                              "controller": code("""
                                  from llmcourse.rlhf import core

                                  class AdaptiveKLController(core.AdaptiveKLController):
                                      pass""")},
                             LP + CT, "llmcourse.rlhf"),
    "kwise_calls_the_package": ({"kwise": code("""
        import llmcourse.rlhf.core as C

        def kwise_ranking_loss(rewards, ranks):
            return C.kwise_ranking_loss(rewards, ranks)""")}, KW, "llmcourse.rlhf"),
}

BAD = {"syntax_error": ({**SOL, "bt": "def bradley_terry_loss(r_chosen, r_rejected)\n    return 0"}, BT)}

# ----------------------------------------------------------------------------- the proofs (nbgrader_harness.Catalogue)

CAT = Catalogue(ASSIGNMENT, PART_TESTS, wrong=WRONG, correct=CORRECT, forbidden=FORBIDDEN,
                bad={n: (src, ()) for n, (src, _) in BAD.items()}, timeout=TIMEOUT,
                env={"RLHF_DEMO_ITERS": "1"},                   # the ungraded PPO cells: one iteration
                nbgrader_forbidden=["kwise_calls_the_package"], nbgrader_correct=["noisy_prints_and_warns"],
                total=TOTAL)


def test_catalogue_is_large_enough_and_covers_every_part():
    assert len(WRONG) >= 15 and len(CORRECT) >= 4
    assert all(words for _, _, words in {**WRONG, **FORBIDDEN}.values())
    assert {p for src, _, _ in WRONG.values() for p in src} == set(PART_TESTS)     # every part has wrong entries


@pytest.mark.parametrize("kind,name", CAT.entries())
def test_catalogue_in_process(kind, name):
    CAT.prove(kind, name)


def test_the_package_meets_the_graders():
    """llmcourse.rlhf.core's own functions, pasted as a learner who copied them would."""
    from llmcourse.rlhf import core

    src = open(core.__file__).read().replace("from __future__ import annotations\n", "")
    res = CAT.run({"logprobs": src, "bt": "", "kwise": "", "rewards": "", "controller": ""})
    assert all(r.passed for r in res.values()), {k: r.text for k, r in res.items() if not r.passed}


# ----------------------------------------------------------------------------- the nbgrader batch (slow)

@pytest.fixture(scope="module")
def graded():
    """The solution, the release, the first wrong entry of each part, one library call, the noisy
    correct entry and the broken submission, graded by ONE nbgrader autograde run."""
    return CAT.grade()


@pytest.mark.slow
def test_nbgrader_grades_as_in_process(graded):
    CAT.assert_graded(graded)


@pytest.mark.slow
def test_prints_and_warnings_cost_nothing(graded):
    r = graded["correct_noisy_prints_and_warns"]
    assert "debug: called" in r.text and r.total == TOTAL


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD))
def test_broken_part_loses_only_that_part(graded, name):
    r = graded[f"bad_{name}"]
    assert set(r.lost()) == set(BAD[name][1]), r.lost()


@pytest.mark.slow
def test_llmcourse_grade_gives_the_solution_full_marks(tmp_path):
    """The same notebook through the course's own grader (workers, sandbox, tamper guard)."""
    from llmcourse.grading import batch, sandbox

    course_with_submission(tmp_path, ASSIGNMENT, SOL)
    limits = sandbox.Limits(cpu_seconds=600, address_space_mb=4096, file_size_mb=64, processes=96,
                            wall_seconds=900)
    old = os.environ.get("RLHF_DEMO_ITERS")
    os.environ["RLHF_DEMO_ITERS"] = "1"
    try:
        (result,) = batch.grade(tmp_path, ASSIGNMENT, workers=1, limits=limits, progress=False)
    finally:
        if old is None:
            os.environ.pop("RLHF_DEMO_ITERS", None)
        else:
            os.environ["RLHF_DEMO_ITERS"] = old
    assert result.status == "graded", result
    assert result.score == result.max_score == TOTAL, [(p.grade_id, p.score, p.message) for p in result.parts]
