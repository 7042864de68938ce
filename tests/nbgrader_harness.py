"""Grade notebooks with the real ``nbgrader autograde``, in a throwaway course root.

How to prove a new assignment's autograder (say ``solutions/<name>/<name>.ipynb``)::

    from nbgrader_harness import Course, solution_sources

    course = Course.create("<name>", timeout=20)      # generate_assignment in a temp root
    sol = solution_sources("<name>")                  # {solution grade_id: code, markers stripped}
    subs = {
        "solution": course.submission(sol),            # released notebook, stubs replaced
        "release": course.submission({}),              # the untouched release
        "wrong_x": course.submission({**sol, "cell_id": WRONG_CODE}),
        "no_test": course.submission(sol, delete=["test_cell_id"]),
    }
    results = course.grade(subs)                       # ONE nbgrader autograde over the batch
    results["solution"].total == results["solution"].max_total
    results["wrong_x"].scores["test_cell_id"]          # (score, max_score) from the gradebook
    results["wrong_x"].errors["test_cell_id"]          # "AssertionError: <message>" from the output

Put every submission of a test module in one batch: each notebook costs a kernel start and
a torch import, the batch pays nbgrader's start-up once. ``Course`` copies the repository's
``nbgrader_config.py`` and ``solutions/<name>`` into a temporary directory, so the
checkout's own ``exercises/`` and ``gradebook.db`` are never touched. nbgrader runs as a
subprocess with the venv's ``bin`` first on PATH (it calls ``alembic`` from PATH).
Submissions are built from the *released* notebook by replacing the source of cells
found by their nbgrader ``grade_id``: the solution cells with code, or a test cell with an
edit (nbgrader must restore it); ``delete`` removes cells (nbgrader re-adds test cells
because ``OverwriteCells.add_missing_cells`` is on in ``nbgrader_config.py``).
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def nbgrader_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_nbgrader(args: list[str], cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run ``nbgrader <args>`` in ``cwd``; raise with its log if it fails."""
    proc = subprocess.run([str(VENV_BIN / "nbgrader"), *args], cwd=cwd, env=nbgrader_env(),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def solution_sources(assignment: str, notebook: str | None = None) -> dict[str, str]:
    """{grade_id: code} of every solution cell of ``solutions/<assignment>``, markers removed."""
    path = REPO / "solutions" / assignment / f"{notebook or assignment}.ipynb"
    nb = nbformat.read(path, as_version=4)
    out = {}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            lines = [ln for ln in cell.source.splitlines()
                     if ln.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
            out[grade_id(cell)] = "\n".join(lines)
    return out


def error_text(cell) -> str:
    """'Ename: evalue' of every error output of a cell, plus stderr, joined by newlines."""
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            parts.append(f"{o.get('ename')}: {o.get('evalue')}")
        elif o.get("output_type") == "stream" and o.get("name") == "stderr":
            parts.append(f"stderr: {o.get('text')}")
    return "\n".join(parts)


@dataclass
class Result:
    """One student's autograde result."""
    scores: dict[str, tuple[float, float]]        # grade_id -> (score, max_score), from the gradebook
    errors: dict[str, str]                        # grade_id -> error text of that cell's output
    notebook: nbformat.NotebookNode | None = None  # the autograded notebook
    stdout: dict[str, str] = field(default_factory=dict)  # grade_id -> stdout text

    @property
    def text(self) -> str:
        """Every output of every cell (errors, stderr, stdout): for the ungraded visible checks."""
        if self.notebook is None:
            return ""
        return "\n".join(error_text(c) + "".join(o.get("text", "") for o in c.get("outputs", [])
                                                  if o.get("output_type") == "stream")
                         for c in self.notebook.cells if c.cell_type == "code")

    @property
    def total(self) -> float:
        return sum(s for s, _ in self.scores.values())

    @property
    def max_total(self) -> float:
        return sum(m for _, m in self.scores.values())

    def lost(self) -> dict[str, float]:
        """grade_id -> points lost, for the cells that lost any."""
        return {k: m - s for k, (s, m) in self.scores.items() if s < m}


@dataclass
class Course:
    root: Path
    assignment: str
    notebook: str
    timeout: int
    seconds: float = 0.0        # wall time of the last autograde run
    log: str = ""               # its stdout and stderr

    @classmethod
    def create(cls, assignment: str, notebook: str | None = None, timeout: int = 30,
               root: Path | None = None) -> "Course":
        """Copy config and ``solutions/<assignment>`` to a temp root and generate the release there."""
        root = Path(root or tempfile.mkdtemp(prefix=f"nbgrader_{assignment}_"))
        shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
        shutil.copytree(REPO / "solutions" / assignment, root / "solutions" / assignment)
        run_nbgrader(["generate_assignment", assignment, "--force"], cwd=root)
        return cls(root, assignment, notebook or assignment, timeout)

    @property
    def released_path(self) -> Path:
        return self.root / "exercises" / self.assignment / f"{self.notebook}.ipynb"

    def released(self) -> nbformat.NotebookNode:
        return nbformat.read(self.released_path, as_version=4)

    def submission(self, sources: dict[str, str], delete: tuple[str, ...] | list[str] = ()) \
            -> nbformat.NotebookNode:
        """The released notebook with the cells named in ``sources`` replaced and ``delete`` removed."""
        nb = copy.deepcopy(self.released())
        known = {grade_id(c) for c in nb.cells}
        missing = (set(sources) | set(delete)) - known
        assert not missing, f"no cell with grade_id {sorted(missing)} in the release"
        for cell in nb.cells:
            gid = grade_id(cell)
            if gid in sources:
                cell.source = sources[gid]
        nb.cells = [c for c in nb.cells if grade_id(c) not in set(delete)]
        return nb

    def submit(self, submissions: dict[str, nbformat.NotebookNode]) -> None:
        """Put each notebook at ``submitted/<student>/<assignment>/``, as nbgrader collects them."""
        for student, nb in submissions.items():
            d = self.root / "submitted" / student / self.assignment
            d.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, d / f"{self.notebook}.ipynb")

    def grade(self, submissions: dict[str, nbformat.NotebookNode]) -> dict[str, Result]:
        """Write every submission, run ONE ``nbgrader autograde``, read the gradebook."""
        self.submit(submissions)
        t0 = time.perf_counter()
        proc = run_nbgrader(["autograde", self.assignment, "--force",
                             f"--Execute.timeout={self.timeout}"], cwd=self.root)
        self.seconds = time.perf_counter() - t0
        self.log = proc.stdout + proc.stderr
        return {s: self._result(s) for s in submissions}

    def _result(self, student: str) -> Result:
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gb:
            nb = gb.find_submission_notebook(self.notebook, self.assignment, student)
            scores = {g.name: (float(g.score), float(g.max_score)) for g in nb.grades}
        path = self.root / "autograded" / student / self.assignment / f"{self.notebook}.ipynb"
        graded_nb = nbformat.read(path, as_version=4) if path.exists() else None
        errors, stdout = {}, {}
        for cell in graded_nb.cells if graded_nb else []:
            gid = grade_id(cell)
            if gid:
                errors[gid] = error_text(cell)
                stdout[gid] = "".join(o.get("text", "") for o in cell.get("outputs", [])
                                      if o.get("output_type") == "stream" and o.get("name") == "stdout")
        return Result(scores, errors, graded_nb, stdout)


def grade_submissions(assignment: str, submissions: dict[str, dict[str, str]], timeout: int = 30,
                      deletions: dict[str, list[str]] | None = None) -> dict[str, Result]:
    """Shortcut: {student: {grade_id: source}} -> {student: Result}, one autograde run."""
    course = Course.create(assignment, timeout=timeout)
    deletions = deletions or {}
    nbs = {s: course.submission(src, deletions.get(s, ())) for s, src in submissions.items()}
    return course.grade(nbs)


# ----------------------------------------------------------------------------- an assignment's catalogue


def grade_catalogue(assignment: str, sol: dict[str, str], timeout: int, wrong: dict | None = None,
                    correct: dict | None = None, forbidden: dict | None = None, extra: dict | None = None,
                    prepare=None) -> dict[str, Result]:
    """The proof of one assignment's autograder, graded by ONE ``nbgrader autograde`` run.

    Students: ``solution``, ``release`` (untouched), ``wrong_<name>``, ``correct_<name>`` and
    ``forbidden_<name>`` (the solution with the given ``{grade_id: source}`` replaced), and
    ``extra`` as ``{student: (sources, cells to delete)}``. ``prepare(subs)`` may edit the
    notebooks before grading. Prints one line per student (score, parts lost, first error)
    so that the log of a test run reads as a report.
    """
    t0 = time.perf_counter()
    course = Course.create(assignment, timeout=timeout)
    subs = {"solution": course.submission(sol), "release": course.submission({})}
    for prefix, group in (("wrong", wrong), ("correct", correct), ("forbidden", forbidden)):
        subs.update({f"{prefix}_{name}": course.submission({**sol, **src}) for name, src in (group or {}).items()})
    subs.update({student: course.submission(src, delete) for student, (src, delete) in (extra or {}).items()})
    if prepare is not None:
        prepare(subs)
    results = course.grade(subs)
    width = max(map(len, results)) + 2
    for student, r in results.items():
        first = next((r.errors[k].splitlines()[0][:160] for k in r.lost() if r.errors.get(k)), "")
        print(f"{student:{width}s} {r.total:4.0f}/{r.max_total:.0f}  lost {sorted(r.lost())}  {first}")
    print(f"\nautograde of {len(subs)} submissions: {course.seconds:.0f} s "
          f"(with setup {time.perf_counter() - t0:.0f} s)")
    shutil.rmtree(course.root, ignore_errors=True)
    return results


def hidden(result: Result) -> dict:
    """The graded (hidden-test) cells of a result: grade_id -> (score, max_score)."""
    return {k: v for k, v in result.scores.items() if v[1] > 0}


def assert_full_marks(r: Result) -> None:
    assert r.total == r.max_total, {k: r.errors[k] for k in r.lost()}


def assert_solution_and_release(sol: Result, rel: Result, max_total: float, stub_cell: str) -> None:
    """The solution gets every point and every check says ``ok:``; the release gets none
    and its feedback says the stub is still there."""
    assert sol.max_total == max_total
    assert_full_marks(sol)
    assert all(sol.stdout[k].startswith("ok: ") for k in hidden(sol)), sol.stdout
    assert rel.max_total == sol.max_total and rel.total == 0, rel.scores
    assert "replace it with your code" in rel.errors[stub_cell], rel.errors[stub_cell]


def assert_wrong_loses(r: Result, must_fail, words: str, allowed) -> None:
    """A wrong implementation: the ``must_fail`` tests lose their points, the first one's
    AssertionError names the mistake (``words``), and no test outside ``allowed`` loses any."""
    lost = r.lost()
    assert set(must_fail) <= set(lost), (must_fail, lost)
    assert all(lost[k] == r.scores[k][1] for k in lost)              # a failed cell gives nothing
    assert "AssertionError" in r.errors[must_fail[0]]
    assert words in r.errors[must_fail[0]], r.errors[must_fail[0]]
    assert set(lost) <= set(allowed), lost


def assert_library_gets_no_credit(r: Result, must_fail, words: str = "") -> None:
    """A part done by calling the library gets nothing, with a message that says why; the
    rest of the submission keeps its points."""
    for k in must_fail:
        assert r.scores[k][0] == 0, (k, r.scores[k])
        assert "gets no credit" in r.errors[k] and words in r.errors[k], r.errors[k]
    assert r.total == r.max_total - sum(r.scores[k][1] for k in must_fail)
