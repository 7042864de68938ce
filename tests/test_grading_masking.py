"""Fast tests of llmcourse.grading.checks.masking itself, without nbgrader.

The catalogue of ``tests/test_autograder_masking.py`` is proven in-process there
(:class:`nbgrader_harness.Catalogue`). Here: the statistical checks run on the solution
with other random streams, to show that their bounds are not tuned to one seed; the
course's own implementation agrees with the solution but gets no credit; the consistency
check names its mistakes.
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


def test_hidden_cells_cover_every_test():
    assert set(HIDDEN) == {t for ts in T.PART_TESTS.values() for t in ts}
    assert sum(c.metadata["nbgrader"]["points"] for c in NB.cells
               if c.metadata.get("nbgrader", {}).get("grade")) == 23


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
