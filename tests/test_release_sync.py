"""exercises/ is exactly what `nbgrader generate_assignment` makes of solutions/, for every assignment."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

from nbgrader_harness import REPO, run_nbgrader

ASSIGNMENTS = sorted(p.name for p in (REPO / "solutions").iterdir() if p.is_dir())
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def _cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in nb.cells]


def test_there_are_assignments():
    assert "attention" in ASSIGNMENTS


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_has_no_solutions_or_hidden_tests(assignment):
    released = sorted((REPO / "exercises" / assignment).glob("*.ipynb"))
    assert released, f"exercises/{assignment} is missing: run `make release`"
    for path in released:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            assert not any(m in cell.source for m in MARKERS), (path.name, cell.source[:200])
            assert not cell.get("outputs"), f"{path.name}: outputs stored in the release"


@pytest.fixture(scope="module")
def fresh_release():
    """Every assignment's release, made from solutions/ by ONE `nbgrader generate_assignment "*"` in a
    temporary course (nbgrader globs the assignment id): one nbgrader start-up for all of them."""
    root = Path(tempfile.mkdtemp(prefix="nbgrader_release_sync_"))
    try:
        shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
        for assignment in ASSIGNMENTS:
            shutil.copytree(REPO / "solutions" / assignment, root / "solutions" / assignment)
        run_nbgrader(["generate_assignment", "*", "--force"], cwd=root)
        yield root / "exercises"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_matches_generate_assignment(assignment, fresh_release):
    fresh_dir = fresh_release / assignment
    fresh = sorted(str(p.relative_to(fresh_dir)) for p in fresh_dir.rglob("*") if p.is_file())
    assert fresh, f"nbgrader made no release of {assignment}"
    stored_dir = REPO / "exercises" / assignment
    stored = sorted(str(p.relative_to(stored_dir)) for p in stored_dir.rglob("*") if p.is_file())
    assert stored == fresh, "exercises/ is out of date: run `make release`"
    for name in fresh:
        if name.endswith(".ipynb"):
            assert _cells(REPO / "exercises" / assignment / name) == _cells(fresh_dir / name), (
                f"exercises/{assignment}/{name} differs from the release of solutions/: run `make release`")
