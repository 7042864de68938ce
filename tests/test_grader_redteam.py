"""Red team: broken and hostile submissions graded by ``llmcourse grade`` in one batch with honest ones.

For every hostile submission: exactly the score its code earns (what the parts it did not
break earn, none for what it broke), a clear status or message in the CSV and the
feedback, and the rest of the notebook and of the batch graded. The honest submissions'
grades equal their grades when graded alone; the gradebook, the course's sources and the
other students' files are intact; ``nbgrader export`` still works; a rerun regrades
nothing unless forced, and a forced rerun gives the same grades (of every submission but the
few that wait for a limit, which the first run pins to exact scores).

The defences that need bubblewrap (read-only file system, no network) are asserted when
bubblewrap is installed, and under CI (``CI`` set) its absence is a failure, not a skip.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from nbgrader_harness import REPO, grade_id, solution_sources

from llmcourse.grading import batch, sandbox

pytestmark = pytest.mark.slow
HAVE_BWRAP = sandbox.protection()["bubblewrap"]

A = "attention"
POINTS = {"sdpa": 13, "heads": 5, "mha": 9}          # per part of the attention assignment
FULL = sum(POINTS.values())
WRONG_SDPA = ("import torch\n"
              "def scaled_dot_product_attention(q, k, v, mask=None):\n"
              "    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)   # no 1/sqrt(dk)\n"
              "    return w @ v, w\n")
#: garbage attention: every attention test fails; split/merge heads (the solution) earn theirs
GARBAGE = POINTS["heads"]
GARBAGE_SDPA = ("def scaled_dot_product_attention(q, k, v, mask=None):\n"
                "    return q, q[..., :k.shape[-2]]\n")


def released() -> nbformat.NotebookNode:
    return nbformat.read(REPO / "exercises" / A / f"{A}.ipynb", as_version=4)


def notebook(sources: dict[str, str], edit: dict[str, str] | None = None, delete=()) -> nbformat.NotebookNode:
    nb = released()
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid in sources:
            cell.source = sources[gid]
        if edit and gid in edit:
            cell.source = edit[gid]
    nb.cells = [c for c in nb.cells if grade_id(c) not in set(delete)]
    return nb


def submissions(root: Path) -> dict:
    """student -> (files {name: str|NotebookNode}, the exact score it earns, words its status/messages show).

    A part that a broken cell leaves undefined fails, and so does multi-head attention when
    the attention or the head split it uses is missing; everything else keeps its points."""
    sol = solution_sources(A)

    def with_(**parts):
        return {**sol, **parts}

    others = f"{root}/submitted/honest_full/{A}/{A}.ipynb"
    writer = (sol["sdpa"] + "\n"
              "import os\n"
              "for target in [%r, %r, %r]:\n"
              "    try:\n"
              "        with open(target, 'w') as f:\n"
              "            f.write('overwritten by another student')\n"
              "    except OSError as e:\n"
              "        print('could not write', target, e)\n"
              % (others, f"{root}/gradebook.db", f"{root}/solutions/{A}/{A}.ipynb"))
    one = lambda nb: {f"{A}.ipynb": nb}  # noqa: E731
    hostile_writes = {}
    if HAVE_BWRAP:   # without the read-only view the writes would land: not a test to run then
        hostile_writes["writes_elsewhere"] = (one(notebook(with_(sdpa=writer))), FULL, [])
    return {**hostile_writes,
        "honest_full": (one(notebook(sol)), FULL, []),
        "honest_partial": (one(notebook(with_(mha=sol["mha"].replace("return self.w_o(", "return (")))),
                           FULL - 7, []),             # no output projection: mha values and masks
        "syntax_error": (one(notebook(with_(sdpa="def scaled_dot_product_attention(q, k, v, mask=None:\n    pass\n"))),
                         POINTS["heads"], ["syntax error"]),       # no attention: sdpa and mha fail
        "import_error": (one(notebook(with_(sdpa="import not_a_module_anyone_has\n" + sol["sdpa"]))),
                         POINTS["heads"], ["NameError"]),
        "infinite_loop": (one(notebook(with_(heads="while True:\n    pass\n" + sol["heads"]))),
                          POINTS["sdpa"], []),    # no heads: split/merge and mha fail
        "sys_exit": (one(notebook(with_(mha=sol["mha"] + "\nimport sys\nsys.exit(3)\n"))), FULL, ["sys.exit"]),
        "os_exit": (one(notebook(with_(heads=sol["heads"] + "\nimport os\nos._exit(0)\n"))),
                    POINTS["sdpa"], ["kernel-died"]),   # the replay skips the cell that killed it
        "kill_kernel": (one(notebook(with_(sdpa=sol["sdpa"] + "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"))),
                        POINTS["heads"], ["kernel-died"]),
        "memory_bomb": (one(notebook(with_(heads="hoard = []\nwhile True:\n    hoard.append(bytearray(256 * 1024 * 1024))\n"
                                                 + sol["heads"]))), POINTS["sdpa"], []),
        "fork_bomb": (one(notebook(with_(sdpa=sol["sdpa"] + "\nimport os, time\n"
                                               "for _ in range(100000):\n"
                                               "    try:\n"
                                               "        if os.fork() == 0:\n"
                                               "            time.sleep(600)\n"
                                               "            os._exit(0)\n"
                                               "    except OSError:\n"
                                               "        break\n"))), FULL, []),
        "disk_bomb": (one(notebook(with_(heads="with open('big.bin', 'wb') as f:\n"
                                               "    for _ in range(4096):\n"
                                               "        f.write(bytes(1024 * 1024))\n" + sol["heads"]))),
                      POINTS["sdpa"], []),
        "endless_output": (one(notebook(with_(mha="while True:\n    print('spam ' * 200)\n" + sol["mha"]))),
                           POINTS["sdpa"] + POINTS["heads"], []),
        # attention without scaling: shapes, weights sum and gradients (6 of 13); heads (5);
        # multi-head attention with it: shapes only (2 of 9)
        "edited_tests": (one(notebook(with_(sdpa=WRONG_SDPA),
                                      edit={g: "print('ok')" for g in ("test_sdpa_values", "test_sdpa_masks",
                                                                       "test_sdpa_weights_sum", "test_sdpa_shapes")})),
                         6 + POINTS["heads"] + 2, []),          # what "no scaling" earns with the real tests
        "deleted_tests": (one(notebook(with_(mha=sol["mha"].replace("return self.w_o(", "return (")),
                                       delete=("test_mha_values", "test_mha_masks"))), FULL - 7, []),   # re-added
        "patch_torch": (one(notebook(with_(sdpa="import torch, torch.testing\n"
                                                "torch.allclose = lambda *a, **k: True\n"
                                                "torch.testing.assert_close = lambda *a, **k: None\n"
                                                "torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)\n"
                                                + GARBAGE_SDPA))), GARBAGE, ["tampering"]),
        "patch_numpy": (one(notebook(with_(sdpa="import numpy as np, numpy.testing\n"
                                                "np.testing.assert_allclose = lambda *a, **k: None\n"
                                                "np.allclose = lambda *a, **k: True\nnp.tril = np.ones_like\n"
                                                + GARBAGE_SDPA))), GARBAGE, ["tampering"]),
        "patch_builtins": (one(notebook(with_(sdpa="import builtins\n"
                                                   "builtins.isinstance = lambda *a: True\n"
                                                   "builtins.all = lambda *a: True\nbuiltins.abs = lambda x: 0\n"
                                                   + GARBAGE_SDPA))), GARBAGE, ["tampering"]),
        "patch_llmcourse": (one(notebook(with_(sdpa="import llmcourse.grading.common as C\n"
                                                    "import llmcourse.grading.checks.attention as G\n"
                                                    "C.close = lambda *a, **k: True\n"
                                                    "for name in dir(G):\n"
                                                    "    if name.startswith('check_'):\n"
                                                    "        setattr(G, name, lambda *a, **k: print('ok'))\n"
                                                    + GARBAGE_SDPA))), GARBAGE, ["tampering"]),
        "patch_during_call": (one(notebook(with_(sdpa="import torch\n"
                                                      "def scaled_dot_product_attention(q, k, v, mask=None):\n"
                                                      "    torch.allclose = lambda *a, **k: True\n"
                                                      "    return q, q[..., :k.shape[-2]]\n"))),
                              GARBAGE, ["tampering"]),
        "invalid_json": ({f"{A}.ipynb": "this is not a notebook {"}, 0, ["invalid"]),
        "wrong_nbformat": ({f"{A}.ipynb": json.dumps({"nbformat": 99, "nbformat_minor": 0, "cells": "none"})},
                           0, ["invalid"]),
        "missing_notebook": ({"notes.txt": "I could not finish"}, 0, ["missing"]),
        "renamed_notebook": ({f"{A} (1).ipynb": notebook(sol)}, FULL, ["graded as"]),
    }


def make_course(root: Path, subs: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    shutil.copytree(REPO / "solutions" / A, root / "solutions" / A)
    for student, (files, _, _) in subs.items():
        folder = root / "submitted" / student / A
        folder.mkdir(parents=True)
        for name, content in files.items():
            if isinstance(content, str):
                (folder / name).write_text(content)
            else:
                nbformat.write(content, folder / name)


def digest(paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


LIMITS = sandbox.Limits(cpu_seconds=120, address_space_mb=4096, file_size_mb=64, processes=96, wall_seconds=300)


def run_grade(root: Path, **kw):
    # 60 s, as nbgrader_config.py: on a loaded 2-core machine 10 s and then 30 s were not enough to
    # interrupt the infinite loop, restart the kernel and replay the cells above it
    return {r.student: r for r in batch.grade(root, A, workers=2, limits=LIMITS, cell_timeout=60,
                                              progress=False, **kw)}


def scores(r) -> dict:
    return {p.grade_id: p.score for p in r.parts}


@pytest.fixture(scope="module")
def graded():
    if os.environ.get("CI"):
        assert sandbox.protection()["bubblewrap"], "bubblewrap must be installed under CI (.ci/run installs it)"
    alone_root = Path(tempfile.mkdtemp(prefix="llmcourse_redteam_alone_"))
    batch_root = Path(tempfile.mkdtemp(prefix="llmcourse_redteam_batch_"))
    try:
        subs = submissions(batch_root)
        honest = {k: v for k, v in subs.items() if k.startswith("honest")}
        make_course(alone_root, honest)
        alone = run_grade(alone_root)
        make_course(batch_root, subs)
        protected = digest([batch_root / "solutions" / A / f"{A}.ipynb", batch_root / "nbgrader_config.py",
                            *[p for p in (batch_root / "submitted").rglob("*") if p.is_file()]])
        first = run_grade(batch_root)
        yield dict(root=batch_root, subs=subs, alone=alone, first=first, protected=protected)
    finally:
        shutil.rmtree(alone_root, ignore_errors=True)
        shutil.rmtree(batch_root, ignore_errors=True)


def test_every_submission_gets_a_result(graded):
    assert set(graded["first"]) == set(graded["subs"])
    for student, r in graded["first"].items():
        assert r.parts, f"{student}: no parts graded"
        assert r.max_score == FULL, f"{student}: max {r.max_score}"


def test_honest_grades_equal_grading_alone(graded):
    for student, r in graded["alone"].items():
        assert scores(graded["first"][student]) == scores(r), student
    assert graded["first"]["honest_full"].score == FULL
    assert graded["first"]["honest_partial"].score == FULL - 7   # no output projection: mha values and masks


def test_each_earns_exactly_what_its_code_earns_and_a_clear_status(graded):
    problems = []
    for student, (_, exact, words) in graded["subs"].items():
        r = graded["first"][student]
        if r.score != exact:
            problems.append(f"{student}: {r.score}, expected exactly {exact}: "
                            f"{[(p.grade_id, p.score) for p in r.parts if p.score]}")
        text = " ".join([r.status] + r.notes + [f"{p.status} {p.message}" for p in r.parts]).lower()
        for w in words:
            if w.lower() not in text:
                problems.append(f"{student}: '{w}' not in its status and messages: {text[:400]}")
    assert not problems, "\n".join(problems)


def test_tampered_parts_get_nothing(graded):
    for student in ("patch_torch", "patch_numpy", "patch_builtins", "patch_llmcourse", "patch_during_call"):
        r = graded["first"][student]
        sdpa = [p for p in r.parts if p.grade_id.startswith("test_sdpa")]
        assert all(p.score == 0 for p in sdpa), (student, [(p.grade_id, p.score) for p in sdpa])
        assert r.status == "tampered", (student, r.status)
    during = graded["first"]["patch_during_call"]
    assert all("tampering detected" in p.message for p in during.parts if p.grade_id.startswith(("test_sdpa", "test_mha")))


def test_statuses_in_csv_and_feedback(graded):
    root = graded["root"]
    rows = list(csv.DictReader(open(root / f"grades-{A}.csv")))
    assert {r["student"] for r in rows} == set(graded["subs"])
    assert {"student", "part", "score", "max_score", "status", "message"} <= set(rows[0])
    by = {(r["student"], r["part"]): r for r in rows}
    assert by[("invalid_json", "test_sdpa_values")]["status"] == "invalid"
    assert by[("missing_notebook", "test_mha_values")]["status"] == "missing"
    for student in graded["subs"]:
        summary = root / "feedback" / student / A / "summary.txt"
        assert summary.exists(), summary
    for student in ("honest_full", "patch_torch", "os_exit"):
        assert (root / "feedback" / student / A / f"{A}.html").exists()
    assert "tampering detected" in (root / "feedback" / "patch_torch" / A / "summary.txt").read_text()


def test_gradebook_and_files_intact(graded):
    from nbgrader.api import Gradebook

    root = graded["root"]
    assert digest([Path(p) for p in graded["protected"]]) == graded["protected"], "a protected file changed"
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        students = {s.id for s in gb.students}
        assert set(graded["subs"]) <= students
        sub = gb.find_submission(A, "honest_full")
        assert sub.score == FULL
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "export"], cwd=root, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported = list(csv.DictReader(open(root / "grades.csv")))
    assert {r["student_id"] for r in exported} >= set(graded["subs"])


@pytest.mark.skipif(not HAVE_BWRAP and not os.environ.get("CI"),
                    reason="needs bubblewrap (read-only file system); under CI this fails instead")
def test_hostile_writes_were_refused(graded):
    r = graded["first"]["writes_elsewhere"]
    assert r.score == FULL          # its code is right: the writes were refused, nothing else happened
    autograded = nbformat.read(graded["root"] / "autograded" / "writes_elsewhere" / A / f"{A}.ipynb", 4)
    text = json.dumps([c.get("outputs", []) for c in autograded.cells])
    assert text.count("could not write") == 3, text[:2000]


def test_no_process_outlives_the_batch(graded):
    leftovers = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if sandbox.UID_BASE <= entry.stat().st_uid < sandbox.UID_BASE + 64:
                    leftovers.append(entry.name)
            except OSError:
                pass
    assert not leftovers, f"processes of grading uids still alive: {leftovers}"


#: Submissions that spend the batch's time waiting for a limit (the 60 s cell timeout, the memory,
#: process and file-size limits, endless output): a forced rerun of them cost 144 s of make test's
#: budget, and the first run already pins each to its exact score (a grade that drifted between
#: runs would fail there). The forced rerun below regrades everything else.
SLOW_TO_GRADE = ("infinite_loop", "endless_output", "memory_bomb", "fork_bomb", "disk_bomb")


def test_rerun_skips_unchanged_and_forced_rerun_is_identical(graded):
    root = graded["root"]
    again = run_grade(root)
    assert {r.status for r in again.values()} == {"unchanged"}
    assert {s: scores(r) for s, r in again.items()} == {s: scores(r) for s, r in graded["first"].items()}
    quick = sorted(set(graded["subs"]) - set(SLOW_TO_GRADE))
    assert len(quick) >= 15, quick                    # the honest ones, the crashes, the tampering, the files
    forced = run_grade(root, force=True, students=quick)
    first = {s: graded["first"][s] for s in quick}
    assert {s: scores(r) for s, r in forced.items()} == {s: scores(r) for s, r in first.items()}
    assert {s: r.status for s, r in forced.items()} == {s: r.status for s, r in first.items()}
