"""scripts/mutation_check.py: its list of planted bugs stays in step with the code, and it works.

The whole check (every mutant against the fast tests that cover its module) takes tens of
minutes, so it is a script, run by hand (the score and the
survivors are in its output); here the list is checked against the code in the fast tier
(a snippet that no longer occurs exactly once fails), and one mutant runs end to end in
the slow tier.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from nbgrader_harness import REPO

spec = importlib.util.spec_from_file_location("mutation_check", REPO / "scripts" / "mutation_check.py")
mc = sys.modules["mutation_check"] = importlib.util.module_from_spec(spec)   # dataclasses look it up
spec.loader.exec_module(mc)


def test_every_snippet_occurs_exactly_once():
    assert mc.check_snippets() == []


def test_the_list_covers_the_package_and_the_named_bugs():
    assert len(mc.MUTANTS) >= 40
    files = {m.file for m in mc.MUTANTS}
    assert len(files) >= 12 and set(mc.COVERS) == files
    # the bugs that issue 12 found surviving must be among them
    names = {m.name for m in mc.MUTANTS}
    assert {"ppo_policy_gradient_sign_flipped", "lora_dropout_never_applied", "seq2seq_loss_without_shift"} <= names
    assert not any("generate" in m.original for m in mc.MUTANTS)   # GPT.generate is being rewritten


def _checkout_state() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "llmcourse"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_a_planted_bug_is_killed_and_the_checkout_is_untouched(capsys):
    before = _checkout_state()
    rc = mc.main(["--only", "entropy_sign_flipped"])
    out = capsys.readouterr().out
    assert "baseline: the unmutated code" in out and ": passed in" in out, out
    assert "killed   entropy_sign_flipped" in out and "1 of 1 mutants killed" in out, out
    assert rc == 0
    assert _checkout_state() == before
