"""Grade a batch of submissions: in parallel, each kernel in a box of its own, into nbgrader's gradebook.

``llmcourse grade ASSIGNMENT`` (instructors) and ``llmcourse check NOTEBOOK`` (learners)
both come here. One long-lived worker process per slot (:mod:`.worker`, default one per
core) imports nbgrader once and grades students one after another. For each student
with ``submitted/<student>/<assignment>/``:

1. the submission is copied into a fresh temporary course (the course's
   ``nbgrader_config.py``, the assignment's source notebooks, a gradebook that knows the
   assignment), regular files only, after checking that each notebook is there (or
   renamed), is JSON, and is a notebook nbgrader can read;
2. a worker runs nbgrader's ``Autograde`` on it, with
   :class:`~llmcourse.grading.executor.ResilientExecute`, the tamper guard, and the kernel
   boxed by :class:`~llmcourse.grading.kernel.BoxedKernelManager` (:mod:`.sandbox`
   limits), then nbgrader's ``GenerateFeedback``; past the wall clock the worker is
   killed, the submission marked ``timeout`` and a fresh worker started;
3. back in the grader's own process, the autograded notebook is copied to
   ``autograded/<student>/<assignment>/`` and nbgrader's own ``SaveAutoGrades`` writes its
   scores into the course's gradebook, so ``nbgrader export`` and
   ``nbgrader generate_feedback`` work as after a plain ``nbgrader autograde``.

The learner's code runs only in the kernel, which sees the course read-only (or not at
all) and only its box folder writable; only the grader's process writes the gradebook.
A rerun skips a student whose submission, assignment source, grader code (every source
file of :mod:`llmcourse.grading`), ``nbgrader_config.py`` and limits are unchanged
(``force`` regrades).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from . import sandbox
from .scan import scan_notebook

STATE_FILE = ".llmcourse-grade.json"
TAMPER_MARK = "tampering detected"


@dataclass
class Part:
    """One graded cell of one student."""

    notebook: str
    grade_id: str
    score: float
    max_score: float
    status: str          # ok | failed | error | kernel-died | timeout | tampered | missing | invalid
    message: str = ""


@dataclass
class StudentResult:
    student: str
    status: str          # graded | unchanged | no-notebook | invalid-notebook | timeout | crashed
    parts: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(p.score for p in self.parts)

    @property
    def max_score(self) -> float:
        return sum(p.max_score for p in self.parts)


# ----------------------------------------------------------------------------- the course


class Course:
    """An nbgrader course root: its config, folders and gradebook."""

    def __init__(self, root: Path):
        from nbgrader.coursedir import CourseDirectory

        self.root = Path(root).resolve()
        cfg_file = self.root / "nbgrader_config.py"
        if not cfg_file.exists():
            raise SystemExit(f"{cfg_file} not found: run from the course's root folder (where nbgrader_config.py is)")
        self.coursedir = CourseDirectory(config=load_config(self.root), root=str(self.root))

    def folder(self, kind: str) -> Path:
        return self.root / getattr(self.coursedir, f"{kind}_directory")

    @property
    def db_url(self) -> str:
        return self.coursedir.db_url

    def source_notebooks(self, assignment: str) -> list[str]:
        src = self.folder("source") / assignment
        names = sorted(p.stem for p in src.glob("*.ipynb"))
        if not names:
            raise SystemExit(f"no source notebooks in {src}: is '{assignment}' one of the course's assignments?")
        return names

    def students(self, assignment: str) -> list[str]:
        sub = self.folder("submitted")
        return sorted(p.name for p in sub.iterdir() if (p / assignment).is_dir()) if sub.exists() else []


def load_config(root: Path):
    """The nbgrader config of the course at ``root``, its root set."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    return config


def generate_assignment(root: Path, assignment: str, release: Path) -> None:
    """nbgrader's ``generate_assignment``, in this process: registers the assignment in the
    gradebook of the course at ``root`` and writes its release to ``release``."""
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log

    config = load_config(root)
    config.CourseDirectory.release_directory = str(release)
    coursedir = CourseDirectory(config=config, root=str(root))
    coursedir.assignment_id = assignment
    app = GenerateAssignment(coursedir=coursedir, config=config)
    app.force = True
    result = capture_log(app)
    if not result["success"]:
        raise SystemExit(f"nbgrader generate_assignment {assignment} failed in {root}:\n"
                         f"{(result.get('error') or result.get('log') or '')[-3000:]}")


def ensure_assignment_in_gradebook(course: Course, assignment: str) -> None:
    """Register the assignment in the course gradebook (generate_assignment into a temp release)."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(course.db_url) as gb:
        try:
            gb.find_assignment(assignment)
            return
        except MissingEntry:
            pass
    with tempfile.TemporaryDirectory() as rel:
        generate_assignment(course.root, assignment, Path(rel))


def make_template(course: Course, assignment: str, dest: Path) -> Path:
    """A minimal course root that knows the assignment: config, sources, gradebook."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(course.root / "nbgrader_config.py", dest / "nbgrader_config.py")
    src_rel = course.folder("source").relative_to(course.root)
    shutil.copytree(course.folder("source") / assignment, dest / src_rel / assignment)
    generate_assignment(dest, assignment, dest / ".release")
    shutil.rmtree(dest / ".release", ignore_errors=True)
    return dest


# ----------------------------------------------------------------------------- one submission


def _tree_digest(folder: Path, pattern: str = "*") -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob(pattern)):
        if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def grader_digest(folder: Path | None = None) -> str:
    """Hash of the grader's code: every source file of the ``llmcourse.grading`` package."""
    return _tree_digest(folder or Path(__file__).resolve().parent, "*.py")


def fingerprint(course: Course, assignment: str, student: str, settings: dict | None = None,
                grader: str | None = None) -> str:
    """Hash of what decides a grade: the submission, the assignment's sources, the grader's code,
    the course's ``nbgrader_config.py`` and the grading settings (limits, cell timeout)."""
    h = hashlib.sha256((grader or grader_digest()).encode())
    h.update(json.dumps(settings or {}, sort_keys=True).encode())
    h.update((course.root / "nbgrader_config.py").read_bytes())
    for folder in (course.folder("submitted") / student / assignment, course.folder("source") / assignment):
        h.update(str(folder.name).encode() + b"\0" + _tree_digest(folder).encode())
    return h.hexdigest()


def _grade_ids(nb: dict) -> set:
    return {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.get("cells", [])} - {None}


def prepare(course: Course, template: Path, assignment: str, student: str, work: Path,
            notebooks: list[str]) -> tuple[list, dict]:
    """Copy template and submission into ``work``; return (notes, {notebook: problem})."""
    shutil.copytree(template, work, dirs_exist_ok=True)
    src = course.folder("submitted") / student / assignment
    dst = work / course.folder("submitted").relative_to(course.root) / student / assignment
    dst.mkdir(parents=True)
    notes, problems = [], {}
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_symlink():
            notes.append(f"{rel}: a symbolic link, not copied")
        elif path.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / rel)
    source_ids = {name: _grade_ids(nbformat.read(course.folder("source") / assignment / f"{name}.ipynb", 4))
                  for name in notebooks}
    for name in notebooks:
        path = dst / f"{name}.ipynb"
        if not path.exists():
            renamed = _find_renamed(dst, source_ids[name], {f"{n}.ipynb" for n in notebooks})
            if renamed is None:
                problems[name] = (f"missing: {name}.ipynb is not in the submission "
                                  f"(files: {', '.join(sorted(p.name for p in dst.iterdir())) or 'none'})")
                continue
            notes.append(f"{renamed.name} graded as {name}.ipynb (it holds this notebook's cells)")
            renamed.rename(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            problems[name] = f"invalid: {name}.ipynb is not valid JSON ({exc}); nothing in it could be graded"
            continue
        try:
            nb = nbformat.reads(json.dumps(raw), as_version=4)
            nbformat.validate(nb)
            if not isinstance(raw, dict) or raw.get("nbformat") != 4:
                notes.append(f"{name}.ipynb: nbformat {raw.get('nbformat')} converted to 4")
                nbformat.write(nb, path)
        except Exception as exc:  # nbformat raises several kinds
            problems[name] = (f"invalid: {name}.ipynb is JSON but not a notebook nbgrader can read "
                              f"({type(exc).__name__}: {str(exc)[:200]})")
            continue
        notes += [f"{name}.ipynb: {finding}" for finding in scan_notebook(nb)]
    for name in problems:
        (dst / f"{name}.ipynb").unlink(missing_ok=True)
    return notes, problems


def _find_renamed(folder: Path, ids: set, expected: set) -> Path | None:
    best, overlap = None, 0
    for path in folder.glob("*.ipynb"):
        if path.name in expected:
            continue
        try:
            found = len(_grade_ids(json.loads(path.read_text(encoding="utf-8"))) & ids)
        except (OSError, ValueError, AttributeError):
            continue
        if found > overlap:
            best, overlap = path, found
    return best


def _cell_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "".join(parts)


def _part_from_cell(name: str, cell) -> Part:
    from nbgrader.utils import determine_grade

    meta = cell.metadata.nbgrader
    score, max_score = determine_grade(cell)
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    text = _cell_text(cell)
    if errors:
        ename = errors[-1].get("ename", "")
        status = {"KernelDied": "kernel-died", "CellTimeoutError": "timeout"}.get(ename, "failed")
        message = f"{ename}: {errors[-1].get('evalue', '')}".strip()
        if ename == "KeyboardInterrupt" or any(o.get("ename") == "CellTimeoutError" for o in errors):
            status, message = "timeout", "the cell ran past the time limit and was interrupted"
    elif any(o.get("output_type") == "stream" and o.get("name") == "stderr" for o in cell.get("outputs", [])):
        status, message = "failed", "the test wrote to stderr (nbgrader counts that as a failure)"
    else:
        status, message = "ok", ""
    if TAMPER_MARK in text.lower():
        line = next(ln for ln in text.splitlines() if TAMPER_MARK in ln.lower())
        status, message = "tampered", line.strip() + (f" | {message}" if message else "")
    return Part(name, meta["grade_id"], float(score or 0.0), float(max_score), status, message[:500])


def guard_notes(name: str, nb) -> list:
    """What the tamper guard reported in the cells that are not tests (it writes its note into
    the output of the cell that follows the tampering, whichever cell that is)."""
    out = []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("grade") and not meta.get("solution")):
            continue
        out += [f"{name}.ipynb, cell {i}: {ln.strip()}"[:500] for ln in _cell_text(cell).splitlines()
                if TAMPER_MARK in ln.lower()]
    return out


def _failure(outcome: dict | None) -> str:
    """The most telling line of a failed run: nbgrader's first specific error, else the last line."""
    outcome = outcome or {}
    generic = ("There was an error processing", "Please see the", "Traceback")
    for line in (outcome.get("log") or "").splitlines():
        if line.startswith("[ERROR]") and not any(g in line for g in generic):
            return line[len("[ERROR]"):].strip()
    lines = (outcome.get("error") or outcome.get("log") or "").strip().splitlines()
    return lines[-1] if lines else "no reason given"


def _source_parts(course: Course, assignment: str, name: str) -> list:
    nb = nbformat.read(course.folder("source") / assignment / f"{name}.ipynb", 4)
    return [(c.metadata.nbgrader["grade_id"], float(c.metadata.nbgrader.get("points", 0)))
            for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def collect(course: Course, assignment: str, student: str, work: Path, notebooks: list[str],
            problems: dict, outcome: dict | None, notes: list | None = None) -> list:
    """Copy the autograded notebooks into the course and save their grades in its gradebook;
    what the tamper guard said outside the test cells is added to ``notes``."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import SaveAutoGrades

    import warnings

    from sqlalchemy.exc import SAWarning

    warnings.filterwarnings("ignore", category=SAWarning)   # nbgrader's add_submission, harmless
    out_dir = course.folder("autograded") / student / assignment
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    with Gradebook(course.db_url) as gb:
        gb.update_or_create_student(student)
        gb.update_or_create_submission(assignment, student)
    parts = []
    for name in notebooks:
        graded = work / course.folder("autograded").relative_to(course.root) / student / assignment / f"{name}.ipynb"
        # nbgrader copies the submission there before running it: only a finished run counts
        if name in problems or not graded.exists() or not (outcome or {}).get("success"):
            if name in problems:
                status, message = problems[name].split(": ", 1)
            elif outcome is not None and outcome.get("timeout"):
                status, message = "timeout", outcome["error"]
            else:
                status, message = "crashed", "nbgrader could not grade this notebook: " + _failure(outcome)
            with Gradebook(course.db_url) as gb:
                for grade_id, points in _source_parts(course, assignment, name):
                    grade = gb.find_grade(grade_id, name, assignment, student)
                    grade.auto_score, grade.needs_manual_grade = 0.0, False
                    parts.append(Part(name, grade_id, 0.0, points, status, message[:500]))
                gb.db.commit()
            continue
        nb = nbformat.read(graded, 4)
        shutil.copyfile(graded, out_dir / f"{name}.ipynb")
        resources = {"nbgrader": {"notebook": name, "assignment": assignment, "student": student,
                                  "db_url": course.db_url}}
        SaveAutoGrades().preprocess(nb, resources)
        parts += [_part_from_cell(name, c) for c in nb.cells
                  if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c.cell_type == "code"
                  and not c.metadata.nbgrader.get("solution")]
        if notes is not None:
            notes += guard_notes(name, nb)
    return parts


# ----------------------------------------------------------------------------- the workers


class Worker:
    """One :mod:`.worker` process on one slot: started on first use, restarted after a kill."""

    def __init__(self, slot: int, limits: sandbox.Limits, use_bwrap: bool | None, log: Path):
        self.slot, self.limits, self.use_bwrap, self.log = slot, limits, use_bwrap, log
        self.proc = None
        self._buffer, self.ready = b"", False

    def start(self) -> None:
        import subprocess

        settings = {"slot": self.slot, "limits": asdict(self.limits), "use_bwrap": self.use_bwrap}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "llmcourse.grading.worker", json.dumps(settings)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         env=sandbox.env_with_venv(), start_new_session=True)
        self._buffer, self.ready = b"", False

    def _readline(self, deadline: float) -> bytes | None:
        """One line of the worker's answers, or None at the deadline or when it died."""
        import select

        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def ask(self, job: dict, wall_seconds: float) -> dict:
        """Send one job; its answer, or ``{"timeout": True}`` / ``{"crashed": True}``."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        if not self.ready:
            if self._readline(time.monotonic() + 300) is None:
                self.kill()
                return {"crashed": True, "error": "the grading worker did not start", "log": self.tail()}
            self.ready = True
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            self.kill()
            return {"crashed": True, "error": "the grading worker stopped", "log": self.tail()}
        line = self._readline(time.monotonic() + wall_seconds)
        if line is None:
            timed_out = self.proc.poll() is None
            self.kill()
            if timed_out:
                return {"timeout": True, "error": f"stopped after the wall-clock limit of {wall_seconds:.0f} s"}
            return {"crashed": True, "error": "the grading worker stopped", "log": self.tail()}
        return json.loads(line)

    def tail(self, limit: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def kill(self) -> None:
        import signal

        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None
        uid = sandbox.box_uid(self.slot, self.use_bwrap)
        if uid is not None:
            sandbox._kill_uid(uid)              # a kernel (or what it started) that outlived it

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
            self.proc = None
        except Exception:                       # it would not stop: make it
            self.kill()


# ----------------------------------------------------------------------------- the batch


def grade(course_root: Path, assignment: str, workers: int | None = None, force: bool = False,
          limits: sandbox.Limits | None = None, cell_timeout: int | None = None, students=None,
          use_bwrap: bool | None = None, feedback: bool = True, progress: bool = True,
          csv_path: Path | None = None) -> list[StudentResult]:
    """Grade every submission of ``assignment`` under ``course_root``; return one result per student."""
    import threading

    from tqdm.auto import tqdm

    os.environ.update(PATH=sandbox.env_with_venv()["PATH"])       # nbgrader's Gradebook calls `alembic` from PATH
    course = Course(course_root)
    notebooks = course.source_notebooks(assignment)
    students = list(students) if students is not None else course.students(assignment)
    limits = limits or sandbox.Limits()
    results: dict[str, StudentResult] = {}
    todo = []
    settings = {"limits": asdict(limits), "cell_timeout": cell_timeout, "use_bwrap": use_bwrap}
    grader = grader_digest()
    for student in students:
        state = course.folder("autograded") / student / assignment / STATE_FILE
        fp = fingerprint(course, assignment, student, settings, grader)
        if not force and state.exists():
            saved = json.loads(state.read_text())
            if saved.get("fingerprint") == fp:
                r = StudentResult(**{**saved["result"], "parts": [Part(**p) for p in saved["result"]["parts"]]})
                r.status, r.seconds = "unchanged", 0.0
                results[student] = r
                continue
        todo.append((student, fp))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    if use_bwrap and sandbox.bwrap_path() is None:
        raise RuntimeError("bubblewrap was asked for but is not available (apt-get install bubblewrap)")

    with tempfile.TemporaryDirectory(prefix="llmcourse-grade-") as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)
        pool = [Worker(slot, limits, use_bwrap, tmp / f"worker-{slot}.log") for slot in range(workers)]
        for w in pool[:len(todo)]:
            w.start()                           # they import nbgrader while the template is made
        lock = threading.Lock()
        free = list(range(workers))
        try:
            ensure_assignment_in_gradebook(course, assignment)
            template = make_template(course, assignment, tmp / "template") if todo else None

            def one(student: str, fp: str) -> StudentResult:
                with lock:
                    slot = free.pop()
                start = time.perf_counter()
                work = tmp / f"work-{slot}-{student}"
                try:
                    notes, problems = prepare(course, template, assignment, student, work, notebooks)
                    outcome = None
                    if len(problems) < len(notebooks):
                        sub = work / course.folder("submitted").relative_to(course.root) / student / assignment
                        outcome = pool[slot].ask({"work": str(work), "submission": str(sub), "assignment": assignment,
                                                  "student": student, "cell_timeout": cell_timeout,
                                                  "feedback": feedback}, limits.wall_seconds)
                        notes += outcome.get("notes", [])
                    with lock:
                        parts = collect(course, assignment, student, work, notebooks, problems, outcome, notes)
                    log = (outcome or {}).get("log") or ""
                    status = "graded"
                    if problems and len(problems) == len(notebooks):
                        status = next(iter(problems.values())).split(":", 1)[0] + "-notebook"
                    elif outcome and outcome.get("timeout"):
                        status = "timeout"
                    elif outcome and outcome.get("crashed"):
                        status = "crashed"
                    elif any(p.status == "tampered" for p in parts) or any(TAMPER_MARK in n.lower() for n in notes):
                        status = "tampered"             # what the guard saw; the source scan's notes stay notes
                    elif any(p.status == "kernel-died" for p in parts) or "Restarting the kernel" in log:
                        status = "kernel-died"
                    result = StudentResult(student, status, parts, notes, time.perf_counter() - start)
                    state = course.folder("autograded") / student / assignment / STATE_FILE
                    state.write_text(json.dumps({"fingerprint": fp, "result": asdict(result)}, indent=1))
                    if feedback:
                        fed = course.folder("feedback") / student / assignment
                        shutil.rmtree(fed, ignore_errors=True)
                        made = work / course.folder("feedback").relative_to(course.root) / student / assignment
                        if made.is_dir():
                            shutil.copytree(made, fed, symlinks=True)
                        write_summary(course, assignment, result)
                    return result
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                    with lock:
                        free.append(slot)

            with ThreadPoolExecutor(max_workers=workers) as threads:
                futures = {threads.submit(one, s, fp): s for s, fp in todo}
                bar = tqdm(total=len(futures), desc=f"grading {assignment}", unit="submission", disable=not progress)
                for fut in as_completed(futures):
                    r = fut.result()
                    results[r.student] = r
                    bar.set_postfix_str(f"{r.student}: {r.score:g}/{r.max_score:g} {r.status}")
                    bar.update()
                bar.close()
        finally:
            for w in pool:
                w.close()
    ordered = [results[s] for s in students]
    write_csv(csv_path or course.root / f"grades-{assignment}.csv", ordered)
    return ordered


def write_summary(course: Course, assignment: str, r: StudentResult) -> None:
    folder = course.folder("feedback") / r.student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{assignment}: {r.score:g} / {r.max_score:g} points ({r.status})", ""]
    for p in r.parts:
        lines.append(f"{p.grade_id:32s} {p.score:5g} / {p.max_score:<5g} {p.status}"
                     + (f"\n    {p.message}" if p.message else ""))
    if r.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in r.notes]
    (folder / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(path: Path, results: list) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "part", "score", "max_score", "status", "message"])
        for r in results:
            for p in r.parts:
                w.writerow([r.student, p.grade_id, f"{p.score:g}", f"{p.max_score:g}", p.status, p.message])
            if not r.parts:
                w.writerow([r.student, "", 0, 0, r.status, "; ".join(r.notes)])
