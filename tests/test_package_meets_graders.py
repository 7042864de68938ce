"""The course's own implementations held to the graders' standard.

Each assignment's hidden test cells, the very ones that grade learners, run here on the
package's implementation: the module's source (``llmcourse.attention``, ``llmcourse.peft``,
``llmcourse.rl.core``) is pasted in place of the learner's cells, as a learner who copied it
would submit it, and the notebook is run in-process by :meth:`nbgrader_harness.Catalogue.run`.
Pasted, the code no longer lives in the package's file, so the checks' ban on calling the
course's own modules (a ban by source file) does not apply, while every other rule does
(no PyTorch attention, no ``Categorical.entropy``, no stderr). A bug planted in the package
that the checks would catch in a learner's code is caught here too.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import test_autograder_attention
import test_autograder_lora
import test_autograder_masking
import test_autograder_ppo

# assignment -> (its catalogue, the package module that implements it, hidden tests of what the package lacks)
CASES = {
    "attention": (test_autograder_attention.CAT, "llmcourse.attention", {}),
    # the package builds its masks inline (Seq2SeqTransformer.src_mask and causal_mask): no attention_mask
    "masking": (test_autograder_masking.CAT, "llmcourse.attention", {"test_attention_mask": "attention_mask"}),
    "lora": (test_autograder_lora.CAT, "llmcourse.peft", {}),
    "ppo": (test_autograder_ppo.CAT, "llmcourse.rl.core", {}),
}


def package_source(module: str) -> str:
    return Path(importlib.import_module(module).__file__).read_text()


@pytest.mark.parametrize("assignment", list(CASES))
def test_package_passes_the_hidden_tests(assignment):
    cat, module, lacking = CASES[assignment]
    first, *rest = cat.parts                         # the whole module in the first solution cell, the rest empty
    res = cat.run({first: package_source(module), **{part: "" for part in rest}})
    failed = {k: r.text for k, r in res.items() if not r.passed}
    assert set(failed) == set(lacking), failed
    for test, name in lacking.items():               # fails only because the package has no such function
        assert failed[test].startswith("NameError") and repr(name) in failed[test], failed[test]
    assert all(r.stdout.startswith("ok: ") for k, r in res.items() if k not in lacking)


def test_a_planted_bug_is_caught():
    """The route is live: the package's attention with the scaling dropped fails the value checks."""
    cat = test_autograder_attention.CAT
    src = package_source("llmcourse.attention")
    assert src.count("/ math.sqrt(dk)") == 1
    res = cat.run({"sdpa": src.replace("/ math.sqrt(dk)", ""), "heads": "", "mha": ""})
    assert not res["test_sdpa_values"].passed and "did not scale" in res["test_sdpa_values"].error
    assert res["test_split_heads"].passed
