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

How to prove an assignment's catalogue cheaply: :class:`Catalogue`
------------------------------------------------------------------
Most of an autograder's proof does not need nbgrader: whether a wrong implementation fails
the hidden test cells it should, with the words it should, is decided by the checks alone.
So each assignment declares its catalogue once, and :class:`Catalogue` proves it twice::

    CAT = Catalogue("<name>", parts={"<solution cell>": ["<its hidden test cells>", ...], ...},
                    wrong={name: ({cell: code}, [tests that must fail], "words of the first")},
                    correct={name: {cell: code}},
                    forbidden={name: ({cell: code}, [tests that must give nothing], "words")},
                    bad={student: ({cell: code}, [cells to delete])},      # nbgrader only
                    uses={"<part>": ["<parts whose code calls it>"]}, timeout=30)

    @pytest.mark.parametrize("kind,name", CAT.entries())
    def test_catalogue_in_process(kind, name):            # fast tier: seconds for the whole catalogue
        CAT.prove(kind, name)

    @pytest.fixture(scope="module")
    def graded():                                          # slow tier: ONE small nbgrader batch
        return CAT.grade()

    @pytest.mark.slow
    def test_nbgrader_agrees(graded):
        CAT.assert_graded(graded)

1. **In-process** (:meth:`Catalogue.run`, :meth:`Catalogue.prove`): the solution notebook's
   code cells run in order in one fresh namespace, as a kernel runs them (an error in a
   cell does not stop the next), the solution cells replaced by the entry's sources; the
   demonstration cells after the last hidden test are skipped (they earn nothing). A
   hidden test cell passes when it raises nothing and writes nothing to stderr (nbgrader's
   rule; warnings count as stderr). Proven for every entry: a wrong one fails its
   ``must_fail`` cells, the first with an ``AssertionError`` containing its words, and no
   cell outside the parts it touches (and the parts that ``use`` them); a correct one
   passes every cell; a forbidden one gives no credit (``gets no credit`` and its words)
   in exactly its cells; the solution passes every cell and prints ``ok:`` in each; the
   untouched release fails every cell.
2. **nbgrader** (:meth:`Catalogue.grade`, :meth:`Catalogue.assert_graded`): one real
   ``nbgrader autograde`` of the solution, the release, the first wrong entry of each
   part (or ``nbgrader_wrong``), the first forbidden entry, the ``nbgrader_correct``
   entries and the broken submissions (``bad``, with their own assertions in the test
   module). Besides the usual assertions it checks that nbgrader's verdict per cell (lost
   or not, and the error's text) equals the in-process one for every submission graded
   both ways: that is what lets the in-process proof stand for the rest.

The infinite-loop timeout is proven once, by the ``ppo`` assignment (its loop hangs a single
test cell, so it costs one per-cell timeout).
"""
from __future__ import annotations

import contextlib
import copy
import io
import linecache
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
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


def course_with_submission(root: Path, assignment: str, sources: dict[str, str], student: str = "solution") -> None:
    """A course folder for ``llmcourse grade`` in ``root``: the nbgrader config, the source
    notebook, and the release with ``sources`` (grade id -> code) filled in, submitted by ``student``."""
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    shutil.copytree(REPO / "solutions" / assignment, root / "solutions" / assignment)
    nb = nbformat.read(REPO / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)
    for cell in nb.cells:
        if grade_id(cell) in sources:
            cell.source = sources[grade_id(cell)]
    folder = root / "submitted" / student / assignment
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{assignment}.ipynb")


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
        made = root is None
        root = Path(root or tempfile.mkdtemp(prefix=f"nbgrader_{assignment}_"))
        try:
            shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
            shutil.copytree(REPO / "solutions" / assignment, root / "solutions" / assignment)
            run_nbgrader(["generate_assignment", assignment, "--force"], cwd=root)
        except BaseException:
            if made:                                    # the caller never gets the folder: remove it here
                shutil.rmtree(root, ignore_errors=True)
            raise
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


# ----------------------------------------------------------------------------- an assignment's catalogue


def grade_catalogue(assignment: str, sol: dict[str, str], timeout: int, wrong: dict | None = None,
                    correct: dict | None = None, forbidden: dict | None = None, extra: dict | None = None,
                    prepare=None, notebook: str | None = None) -> dict[str, Result]:
    """The proof of one assignment's autograder, graded by ONE ``nbgrader autograde`` run.

    Students: ``solution``, ``release`` (untouched), ``wrong_<name>``, ``correct_<name>`` and
    ``forbidden_<name>`` (the solution with the given ``{grade_id: source}`` replaced), and
    ``extra`` as ``{student: (sources, cells to delete)}``. ``prepare(subs)`` may edit the
    notebooks before grading. Prints one line per student (score, parts lost, first error)
    so that the log of a test run reads as a report.
    """
    t0 = time.perf_counter()
    course = Course.create(assignment, notebook, timeout=timeout)
    try:
        subs = {"solution": course.submission(sol), "release": course.submission({})}
        for prefix, group in (("wrong", wrong), ("correct", correct), ("forbidden", forbidden)):
            subs.update({f"{prefix}_{name}": course.submission({**sol, **src})
                         for name, src in (group or {}).items()})
        subs.update({student: course.submission(src, delete) for student, (src, delete) in (extra or {}).items()})
        if prepare is not None:
            prepare(subs)
        results = course.grade(subs)
    finally:
        shutil.rmtree(course.root, ignore_errors=True)
    width = max(map(len, results)) + 2
    for student, r in results.items():
        first = next((r.errors[k].splitlines()[0][:160] for k in r.lost() if r.errors.get(k)), "")
        print(f"{student:{width}s} {r.total:4.0f}/{r.max_total:.0f}  lost {sorted(r.lost())}  {first}")
    print(f"\nautograde of {len(subs)} submissions: {course.seconds:.0f} s "
          f"(with setup {time.perf_counter() - t0:.0f} s)")
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


# ----------------------------------------------------------------------------- a catalogue, proven in-process and by nbgrader


_NOT_STDERR = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # ignored by default


@dataclass
class CellRun:
    """What one hidden test cell did in-process."""
    error: str = ""          # "Ename: message" of the exception it raised, "" if none
    stdout: str = ""
    stderr: str = ""         # what it wrote to stderr, warnings included

    @property
    def passed(self) -> bool:
        return not self.error and not self.stderr

    @property
    def text(self) -> str:
        return self.error or f"stderr: {self.stderr}"


@dataclass
class Catalogue:
    """An assignment's catalogue of submissions, proven in-process and by a small nbgrader batch.

    ``parts`` maps each solution cell's grade_id to the hidden test cells that grade it;
    ``uses`` maps a part to the parts whose code calls it (a mistake in it may cost their
    points too). Entries: ``wrong`` {name: (sources, must_fail, words)}, ``correct``
    {name: sources}, ``forbidden`` {name: (sources, must_fail, words)} (sources replace the
    solution's cells), ``bad`` {student: (sources, cells to delete)} for nbgrader only.
    See the module docstring.
    """
    assignment: str
    parts: dict
    wrong: dict = field(default_factory=dict)
    correct: dict = field(default_factory=dict)
    forbidden: dict = field(default_factory=dict)
    bad: dict = field(default_factory=dict)
    uses: dict = field(default_factory=dict)
    timeout: int = 30
    notebook: str | None = None
    prepare: object = None                   # prepare(subs) edits the notebooks before nbgrader grades them
    env: dict = field(default_factory=dict)  # extra environment of the nbgrader run
    nbgrader_wrong: list | None = None       # wrong entries graded by nbgrader (default: the first of each part)
    nbgrader_forbidden: list | None = None   # forbidden entries graded by nbgrader (default: the first)
    nbgrader_correct: list = field(default_factory=list)
    total: float | None = None               # the points the assignment is worth, if given: checked

    def __post_init__(self):
        path = REPO / "solutions" / self.assignment / f"{self.notebook or self.assignment}.ipynb"
        self.source_notebook = nbformat.read(path, as_version=4)
        self.sol = solution_sources(self.assignment, self.notebook)
        assert set(self.parts) == set(self.sol), (sorted(self.parts), sorted(self.sol))
        self.tests = [t for ts in self.parts.values() for t in ts]
        self.points = {grade_id(c): c.metadata["nbgrader"]["points"] for c in self.source_notebook.cells
                       if c.metadata.get("nbgrader", {}).get("grade")
                       and c.metadata["nbgrader"].get("points", 0) > 0}
        assert set(self.points) == set(self.tests), (sorted(self.points), sorted(self.tests))
        assert self.total is None or self.max_total == self.total, (self.max_total, self.total)
        for kind, group in (("wrong", self.wrong), ("forbidden", self.forbidden)):
            for name, (src, must_fail, _) in group.items():
                assert set(src) <= set(self.parts) and set(must_fail) <= set(self.tests), (kind, name)
        self._release = None

    # -- in-process

    @property
    def max_total(self) -> float:
        return sum(self.points.values())

    def release_sources(self) -> dict[str, str]:
        """The stubs of the committed release, per solution cell."""
        if self._release is None:
            nb = nbformat.read(REPO / "exercises" / self.assignment / f"{self.notebook or self.assignment}.ipynb",
                               as_version=4)
            self._release = {grade_id(c): c.source for c in nb.cells if grade_id(c) in self.sol}
        return self._release

    def run(self, sources: dict[str, str]) -> dict[str, CellRun]:
        """Run the notebook in-process with ``sources`` in place of the solution cells named
        there: hidden test grade_id -> :class:`CellRun`."""
        cells = [c for c in self.source_notebook.cells if c.cell_type == "code"]
        last = max(i for i, c in enumerate(cells) if grade_id(c) in self.points)
        ns: dict = {"__name__": "__main__"}
        out: dict[str, CellRun] = {}
        for i, cell in enumerate(cells[: last + 1]):
            gid = grade_id(cell)
            src = sources.get(gid, self.sol[gid]) if gid in self.sol else cell.source
            stdout, stderr = io.StringIO(), io.StringIO()
            error = ""
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                    warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    name = f"<cell {gid or i}>"             # registered as IPython does, for traceback lines
                    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
                    exec(compile(src, name, "exec"), ns)
                except Exception as e:                              # noqa: BLE001 (a kernel reports it)
                    error = f"{type(e).__name__}: {e}"
            if gid in self.points:
                shown = [f"{w.category.__name__}: {w.message}" for w in caught
                         if not issubclass(w.category, _NOT_STDERR)]
                out[gid] = CellRun(error, stdout.getvalue(), stderr.getvalue() + "\n".join(shown))
        return out

    def touched(self, sources: dict[str, str]) -> set[str]:
        """The hidden tests a change of these solution cells may cost: their parts' and their users'."""
        parts = set(sources) | {u for p in sources for u in self.uses.get(p, ())}
        return {t for p in parts for t in self.parts[p]}

    def entries(self) -> list[tuple[str, str]]:
        """(kind, name) of everything :meth:`prove` proves, for ``pytest.mark.parametrize``."""
        return ([("solution", "solution"), ("release", "release")]
                + [(kind, name) for kind in ("wrong", "correct", "forbidden") for name in getattr(self, kind)])

    def prove(self, kind: str, name: str) -> None:
        """Assert in-process what nbgrader would grade for one entry (see the module docstring)."""
        if kind == "solution":
            res = self.run({})
            assert all(r.passed for r in res.values()), {k: r.text for k, r in res.items() if not r.passed}
            assert all(r.stdout.startswith("ok: ") for r in res.values()), {k: r.stdout for k, r in res.items()}
        elif kind == "release":
            res = self.run(self.release_sources())
            assert not any(r.passed for r in res.values()), [k for k, r in res.items() if r.passed]
            assert any("replace it with your code" in r.error for r in res.values()), res
        elif kind == "wrong":
            src, must_fail, words = self.wrong[name]
            res = self.run(src)
            lost = {k for k, r in res.items() if not r.passed}
            assert set(must_fail) <= lost, (must_fail, {k: res[k].text[:300] for k in lost})
            first = res[must_fail[0]].error
            assert first.startswith("AssertionError") and words in first, first
            assert lost <= self.touched(src), ("points lost outside the parts touched",
                                               {k: res[k].text[:300] for k in lost - self.touched(src)})
        elif kind == "correct":
            res = self.run(self.correct[name])
            assert all(r.passed for r in res.values()), {k: r.text for k, r in res.items() if not r.passed}
        elif kind == "forbidden":
            src, must_fail, words = self.forbidden[name]
            res = self.run(src)
            assert {k for k, r in res.items() if not r.passed} == set(must_fail), {
                k: r.text[:300] for k, r in res.items() if not r.passed}
            assert all("gets no credit" in res[k].error and words in res[k].error for k in must_fail), {
                k: res[k].error for k in must_fail}
        else:
            raise ValueError(kind)

    # -- nbgrader

    def graded_by_nbgrader(self) -> dict[str, dict[str, str]]:
        """student -> sources of the submissions that :meth:`grade` sends to nbgrader
        (the broken ones, ``bad``, apart)."""
        wrong = self.nbgrader_wrong
        if wrong is None:                                           # the first wrong entry of each part
            firsts: dict[str, str] = {}
            for name, (src, _, _) in self.wrong.items():
                if len(src) == 1:
                    firsts.setdefault(next(iter(src)), name)
            wrong = list(firsts.values())
        forbidden = self.nbgrader_forbidden if self.nbgrader_forbidden is not None else list(self.forbidden)[:1]
        subs = {"solution": {}, "release": self.release_sources()}
        subs.update({f"wrong_{n}": self.wrong[n][0] for n in wrong})
        subs.update({f"forbidden_{n}": self.forbidden[n][0] for n in forbidden})
        subs.update({f"correct_{n}": self.correct[n] for n in self.nbgrader_correct})
        return subs

    def grade(self) -> dict[str, Result]:
        """ONE ``nbgrader autograde`` of the solution, the release, one wrong entry per part, one
        forbidden entry, ``nbgrader_correct`` and ``bad`` (as students ``bad_<name>``)."""
        subs = self.graded_by_nbgrader()
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return grade_catalogue(
                self.assignment, self.sol, self.timeout,
                wrong={s[len("wrong_"):]: src for s, src in subs.items() if s.startswith("wrong_")},
                correct={s[len("correct_"):]: src for s, src in subs.items() if s.startswith("correct_")},
                forbidden={s[len("forbidden_"):]: src for s, src in subs.items() if s.startswith("forbidden_")},
                extra={f"bad_{n}": bad for n, bad in self.bad.items()}, prepare=self.prepare,
                notebook=self.notebook)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def assert_graded(self, graded: dict[str, Result]) -> None:
        """nbgrader's grades of :meth:`grade`'s batch: the usual assertions, and the same verdict
        per hidden test cell (lost or not, and the error's text) as in-process."""
        sol, rel = graded["solution"], graded["release"]
        assert_solution_and_release(sol, rel, self.max_total, self.tests[0])
        for student, src in self.graded_by_nbgrader().items():
            r = graded[student]
            if student.startswith("wrong_"):
                _, must_fail, words = self.wrong[student[len("wrong_"):]]
                assert_wrong_loses(r, must_fail, words, allowed=self.touched(src))
            elif student.startswith("forbidden_"):
                _, must_fail, words = self.forbidden[student[len("forbidden_"):]]
                assert_library_gets_no_credit(r, must_fail, words)
            elif student.startswith("correct_"):
                assert_full_marks(r)
            mine = self.run({**self.sol, **src})
            assert set(r.lost()) == {k for k, c in mine.items() if not c.passed}, (student, r.lost(), mine)
            for k in r.lost():
                theirs, ours = r.errors[k].splitlines()[0], mine[k].text.splitlines()[0]
                assert _same_message(theirs, ours), (student, k, theirs, ours)


def _same_message(a: str, b: str) -> bool:
    """Equal, or equal but for dotted names and numbers: a check that reports the first of a set of
    layers names the one Python's per-process hash seed puts first (lora's apply_lora check)."""
    dotted = re.compile(r"\b\w+(?:\.\w+)+\b")
    return a == b or dotted.sub("<name>", a) == dotted.sub("<name>", b)
