"""The ``llmcourse`` command: grade your own notebook, or a class's submissions.

    llmcourse check exercises/attention/attention.ipynb     # a learner, anywhere on disk
    llmcourse grade attention                                # an instructor, from the course root
    llmcourse rlhf --out runs/instructgpt                    # the InstructGPT pipeline (chapter 24)

``check`` grades one notebook exactly as the instructor's autograde would (same hidden
tests, same executor, same sandbox), prints the score and feedback per part, writes the
feedback HTML beside the notebook, and exits 0 only with full marks. ``grade`` grades
every ``submitted/<student>/<assignment>/`` in parallel into nbgrader's gradebook.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from .grading import batch, sandbox


def course_root(explicit: str | None) -> Path:
    """The course root: ``--course``, else the folder above this package (a clone of the course)."""
    candidates = [Path(explicit)] if explicit else [Path.cwd(), Path(__file__).resolve().parents[1]]
    for c in candidates:
        if (c / "nbgrader_config.py").exists() and (c / "solutions").is_dir():
            return c.resolve()
    where = explicit or "the current folder or the folder of the llmcourse clone"
    raise SystemExit(f"no course found in {where}: it needs nbgrader_config.py and solutions/ "
                     f"(run from a clone of the course, or pass --course PATH)")


def identify(nb_raw: dict, root: Path) -> tuple[str, str]:
    """(assignment, notebook name) whose source shares the most graded cells with ``nb_raw``."""
    ids = batch._grade_ids(nb_raw)
    best, overlap = None, 0
    for src in sorted((root / "solutions").glob("*/*.ipynb")):
        found = len(batch._grade_ids(json.loads(src.read_text(encoding="utf-8"))) & ids)
        if found > overlap:
            best, overlap = (src.parent.name, src.stem), found
    if best is None:
        known = ", ".join(sorted(p.name for p in (root / "solutions").iterdir() if p.is_dir()))
        raise SystemExit(f"this notebook is not one of the course's assignments (none of its cells is a "
                         f"graded cell of {known}); grade the notebook you downloaded from exercises/")
    return best


def cmd_check(args) -> int:
    path = Path(args.notebook)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or "cells" not in raw:
            raise ValueError("no 'cells' in it")
    except (UnicodeDecodeError, ValueError) as exc:
        raise SystemExit(f"{path}: not a readable notebook ({exc}). If Jupyter can still open it, save it "
                         f"again from there; otherwise download a fresh copy from exercises/.")
    root = course_root(args.course)
    assignment, name = identify(raw, root)
    print(f"{path}: assignment '{assignment}', notebook '{name}'")
    with tempfile.TemporaryDirectory(prefix="llmcourse-check-") as tmp:
        tmp = Path(tmp)
        shutil.copy2(root / "nbgrader_config.py", tmp / "nbgrader_config.py")
        shutil.copytree(root / "solutions" / assignment, tmp / "solutions" / assignment)
        sub = tmp / "submitted" / "you" / assignment
        sub.mkdir(parents=True)
        shutil.copyfile(path, sub / f"{name}.ipynb")
        [r] = batch.grade(tmp, assignment, workers=1, students=["you"], progress=False,
                          cell_timeout=args.timeout, csv_path=tmp / "grades.csv")
        html = tmp / "feedback" / "you" / assignment / f"{name}.html"
        out_html = path.with_name(f"{path.stem}.feedback.html")
        if html.exists():
            shutil.copyfile(html, out_html)
    print_result(r)
    if html.exists():
        print(f"feedback: {out_html}")
    return 0 if r.parts and r.score == r.max_score else 1


def print_result(r) -> None:
    for p in r.parts:
        mark = "PASS" if p.status == "ok" and p.score == p.max_score else p.status.upper()
        print(f"  {mark:11s} {p.grade_id:32s} {p.score:4g} / {p.max_score:g}")
        if p.message:
            print(f"              {p.message}")
    for n in r.notes:
        print(f"  note: {n}")
    print(f"score: {r.score:g} / {r.max_score:g}" + ("  (full marks)" if r.parts and r.score == r.max_score else ""))


def cmd_grade(args) -> int:
    root = course_root(args.course)
    prot = sandbox.protection()
    for line in prot["missing"]:
        print(f"warning: {line}", file=sys.stderr)
    if args.require_sandbox and not prot["bubblewrap"]:
        raise SystemExit("--require-sandbox: bubblewrap is not available (apt-get install bubblewrap)")
    limits = sandbox.Limits(cpu_seconds=args.cpu_seconds, address_space_mb=args.memory_mb,
                            file_size_mb=args.file_size_mb, processes=args.processes,
                            wall_seconds=args.wall_seconds)
    results = batch.grade(root, args.assignment, workers=args.workers, force=args.force, limits=limits,
                          cell_timeout=args.timeout, students=args.student or None,
                          feedback=not args.no_feedback, csv_path=Path(args.csv) if args.csv else None)
    width = max([len(r.student) for r in results] + [7])
    print(f"{'student':{width}s}  {'score':>9s}  status")
    for r in results:
        print(f"{r.student:{width}s}  {r.score:4g}/{r.max_score:<4g}  {r.status}"
              + (f"  ({len(r.notes)} note{'s' * (len(r.notes) != 1)})" if r.notes else ""))
    csv_path = args.csv or root / f"grades-{args.assignment}.csv"
    print(f"{len(results)} submissions; grades in the gradebook and {csv_path}; "
          f"feedback in {root / 'feedback'}/<student>/{args.assignment}/")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["rlhf"]:                      # every option is the pipeline's own
        from .rlhf.pipeline import main as pipeline_main

        pipeline_main(argv[1:], prog="llmcourse rlhf")
        return 0
    ap = argparse.ArgumentParser(prog="llmcourse", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="grade your notebook against the hidden tests")
    c.add_argument("notebook")
    c.add_argument("--course", help="the course root (default: this clone of the course)")
    c.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: nbgrader_config.py)")
    c.set_defaults(func=cmd_check)
    g = sub.add_parser("grade", help="grade submitted/<student>/ASSIGNMENT in parallel into the gradebook")
    g.add_argument("assignment")
    g.add_argument("--course", help="the course root (default: the current folder)")
    g.add_argument("--workers", type=int, default=None, help="parallel workers (default: one per core)")
    g.add_argument("--force", action="store_true", help="regrade unchanged submissions too")
    g.add_argument("--student", action="append", help="only this student (repeatable)")
    g.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: nbgrader_config.py)")
    g.add_argument("--wall-seconds", type=float, default=900, help="seconds per submission, all in")
    g.add_argument("--cpu-seconds", type=int, default=900, help="CPU seconds per process")
    g.add_argument("--memory-mb", type=int, default=8192, help="address space per process")
    g.add_argument("--file-size-mb", type=int, default=256, help="largest file a submission may write")
    g.add_argument("--processes", type=int, default=128, help="processes per submission")
    g.add_argument("--csv", help="where to write the CSV (default: grades-ASSIGNMENT.csv)")
    g.add_argument("--no-feedback", action="store_true", help="skip nbgrader generate_feedback")
    g.add_argument("--require-sandbox", action="store_true", help="fail unless bubblewrap is available")
    g.set_defaults(func=cmd_grade)
    sub.add_parser("rlhf", help="run the InstructGPT pipeline: SFT, reward model, PPO, PPO-ptx "
                                "(llmcourse rlhf --help; the same as python -m llmcourse.rlhf.pipeline)")
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
