"""`llmcourse check NOTEBOOK`: a learner grades a notebook anywhere on disk.

Full marks exit 0 and write the feedback HTML beside the notebook; anything less exits
1 with the feedback per part; a corrupt file or a notebook of no assignment gets a
message that says so (exit 2 from argparse-style `SystemExit` with text).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbgrader_harness import REPO, grade_id, solution_sources

LLMCOURSE = [sys.executable, "-m", "llmcourse.cli"]


def run(args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([*LLMCOURSE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def released_with(sources: dict) -> nbformat.NotebookNode:
    nb = nbformat.read(REPO / "exercises" / "attention" / "attention.ipynb", as_version=4)
    for cell in nb.cells:
        if grade_id(cell) in sources:
            cell.source = sources[grade_id(cell)]
    return nb


@pytest.mark.slow
def test_check_solution_and_release(tmp_path):
    mine = tmp_path / "somewhere" / "my attention.ipynb"
    mine.parent.mkdir()
    nbformat.write(released_with(solution_sources("attention")), mine)
    full = run(["check", str(mine)], cwd=tmp_path)
    assert full.returncode == 0, full.stdout + full.stderr
    assert "assignment 'attention'" in full.stdout
    assert "score: 27 / 27" in full.stdout and "full marks" in full.stdout
    assert mine.with_name("my attention.feedback.html").exists()

    blank = tmp_path / "blank.ipynb"
    nbformat.write(released_with({}), blank)
    zero = run(["check", str(blank)], cwd=tmp_path)
    assert zero.returncode == 1, zero.stdout + zero.stderr
    assert "score: 0 / 27" in zero.stdout
    assert "NotImplementedError" in zero.stdout          # the feedback says the stub is still there


def test_check_says_what_is_wrong_with_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.ipynb"
    corrupt.write_text("{ this is not json")
    r = run(["check", str(corrupt)], cwd=tmp_path)
    assert r.returncode != 0 and "not a readable notebook" in r.stderr

    other = tmp_path / "other.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), other)
    r = run(["check", str(other)], cwd=tmp_path)
    assert r.returncode != 0 and "not one of the course's assignments" in r.stderr

    r = run(["check", str(tmp_path / "nowhere.ipynb")], cwd=tmp_path)
    assert r.returncode != 0 and "no such file" in r.stderr


def test_grade_outside_a_course_says_where_to_run(tmp_path):
    r = run(["grade", "attention", "--course", str(tmp_path)], cwd=tmp_path)
    assert r.returncode != 0 and "nbgrader_config.py" in r.stderr
