"""Shared fixtures.

``built_book``: the strict book build (`make book`'s command, ``-W -n --keep-going``) into a
fresh temporary folder, so it runs with no execution cache: every notebook executes
against the package as it is now, and nothing is written into the repository. Built once
per test session; the tests of the built site (``test_book.py``, the browser test) share it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BookBuild:
    returncode: int
    log: str
    output: Path          # the --path-output folder (holds _build/)
    repo_changes: list = field(default_factory=list)   # files the build added or changed in the checkout

    @property
    def html(self) -> Path:
        return self.output / "_build" / "html"


def _repo_state() -> str:
    """Everything git sees in the working tree, ignored files included (but not the venv)."""
    proc = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
                          cwd=ROOT, capture_output=True, text=True)
    return "\n".join(line for line in proc.stdout.splitlines()
                     if not line[3:].startswith((".venv/", ".pytest_cache/")) and "__pycache__" not in line)


@pytest.fixture(scope="session")
def built_book():
    jb = Path(sys.executable).with_name("jupyter-book")
    env = dict(os.environ, TQDM_DISABLE="1", PATH=f"{jb.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    out = Path(tempfile.mkdtemp(prefix="llmcourse_book_"))
    before = _repo_state()
    try:
        proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "--builder", "html",
                               "-W", "-n", "--keep-going"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=40 * 60)
        changes = sorted(set(_repo_state().splitlines()) ^ set(before.splitlines()))
        yield BookBuild(proc.returncode, proc.stdout + proc.stderr, out, changes)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_tamper_guard_left_installed():
    """A test that installs the tamper guard in pytest's own process must uninstall it: left
    installed, it compares every later test's honest changes with its snapshot."""
    yield
    common = sys.modules.get("llmcourse.grading.common")
    if common is not None and common._GUARD is not None:
        common.__dict__["_GUARD"] = None
        sys.modules["llmcourse.grading.guard"].__dict__["_G"] = None
        pytest.fail("this test left the tamper guard installed in pytest's process (uninstall it in finally)")
