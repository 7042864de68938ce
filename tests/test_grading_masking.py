"""Fast tests of llmcourse.grading.checks.masking, without nbgrader.

The catalogue of ``tests/test_autograder_masking.py`` runs here in-process: each
submission's cells are executed in one namespace, as a kernel would, and the hidden test
cells of the changed parts are run against them, so a regression in a check is caught in
seconds. The statistical checks are also run on the course's implementation with other
random streams, to show that their bounds are not tuned to one seed.
"""
from __future__ import annotations

import contextlib
import io

import nbformat
import pytest
import torch

import test_autograder_masking as T
from llmcourse.attention import masked_softmax, mlm_corrupt
from llmcourse.grading.checks import masking as G
from nbgrader_harness import REPO, grade_id

NB = nbformat.read(REPO / "solutions" / "masking" / "masking.ipynb", as_version=4)
SETUP = next(c.source for c in NB.cells if c.cell_type == "code" and "nbgrader" not in c.metadata)
HIDDEN = {grade_id(c): c.source for c in NB.cells
          if c.metadata.get("nbgrader", {}).get("grade") and c.metadata["nbgrader"]["points"] > 0}


def run_cells(sources: dict[str, str], parts) -> dict[str, str]:
    """Exec the solution cells with ``sources`` swapped in, then the hidden tests of ``parts``:
    grade_id -> error message ('' = passed)."""
    ns: dict = {}
    exec(SETUP, ns)
    for gid in T.PART_TESTS:
        with contextlib.suppress(Exception):
            exec(sources.get(gid, T.SOL[gid]), ns)
    errors = {}
    for gid in (t for part in parts for t in T.PART_TESTS[part]):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(HIDDEN[gid], ns)
            errors[gid] = ""
        except Exception as e:                                  # noqa: BLE001 (we report it)
            errors[gid] = f"{type(e).__name__}: {e}"
    return errors


def test_hidden_cells_cover_every_test():
    assert set(HIDDEN) == {t for ts in T.PART_TESTS.values() for t in ts}
    assert sum(c.metadata["nbgrader"]["points"] for c in NB.cells
               if c.metadata.get("nbgrader", {}).get("grade")) == 23


def test_solution_passes_every_check():
    errors = run_cells({}, T.PART_TESTS)
    assert not any(errors.values()), {k: v for k, v in errors.items() if v}


@pytest.mark.parametrize("name", list(T.WRONG))
def test_wrong_fails_its_checks_with_its_words(name):
    src, must_fail, words = T.WRONG[name]
    errors = run_cells(src, src)
    failed = {k for k, v in errors.items() if v}
    assert set(must_fail) <= failed, (must_fail, {k: v[:300] for k, v in errors.items() if v})
    assert words in errors[must_fail[0]], errors[must_fail[0]]


@pytest.mark.parametrize("name", list(T.CORRECT))
def test_correct_passes(name):
    src = T.CORRECT[name]
    errors = run_cells(src, src)
    assert not any(errors.values()), {k: v for k, v in errors.items() if v}


@pytest.mark.parametrize("name", list(T.FORBIDDEN))
def test_forbidden_gets_no_credit(name):
    src, must_fail, words = T.FORBIDDEN[name]
    errors = run_cells(src, src)
    assert {k for k, v in errors.items() if v} == set(must_fail), errors
    assert all("gets no credit" in errors[k] and words in errors[k] for k in must_fail), errors


def _solution(name):
    ns: dict = {}
    exec(SETUP, ns)
    exec(T.SOL[{"mlm_corrupt": "mlm", "masked_softmax": "softmax"}[name]], ns)
    return ns[name]


@pytest.mark.parametrize("offset", [1, 2, 3, 4, 5])
def test_statistical_checks_pass_with_other_random_streams(offset):
    """The solution's mlm_corrupt, fed other seeds than the checks choose: the 6-sigma bounds hold."""
    solution = _solution("mlm_corrupt")

    def other_stream(*args, generator=None, **kwargs):
        seed = int(torch.randint(0, 2**31, (1,), generator=generator)) + 7919 * offset
        return solution(*args, generator=torch.Generator().manual_seed(seed), **kwargs)
    with contextlib.redirect_stdout(io.StringIO()):
        G.check_mlm_selection(other_stream)
        G.check_mlm_replacements(other_stream)


def test_course_implementation_agrees_but_gets_no_credit():
    solution = _solution("masked_softmax")
    scores, mask = torch.randn(3, 4, 5), torch.rand(3, 4, 5) < 0.5
    torch.testing.assert_close(solution(scores, mask), masked_softmax(scores, mask))
    with pytest.raises(AssertionError, match="no credit"):
        G.check_masked_softmax_values(masked_softmax)
    with pytest.raises(AssertionError, match="no credit"):
        G.check_mlm_contract(lambda *a, **k: mlm_corrupt(*a, **k))


def test_consistency_check_names_mistakes():
    tokens = torch.tensor([[0, 5, 6, 7, 3, 8] * 5])
    with pytest.raises(AssertionError, match="special tokens were selected"):
        G._check_consistency(tokens, tokens, torch.where(tokens == 0, tokens, -100), "x")
    with pytest.raises(AssertionError, match="label -100"):
        G._check_consistency(tokens, torch.where(tokens == 5, 9, tokens), torch.full_like(tokens, -100), "x")
    with pytest.raises(AssertionError, match="ORIGINAL"):
        inputs = torch.where(tokens == 5, 3, tokens)
        G._check_consistency(tokens, inputs, torch.where(tokens == 5, inputs, -100), "x")
    G._check_consistency(tokens, torch.where(tokens == 5, 3, tokens), torch.where(tokens == 5, tokens, -100), "x")
