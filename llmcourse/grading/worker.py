"""A grading worker: one long-lived process per core that grades submissions one after another.

:mod:`.batch` starts ``python -m llmcourse.grading.worker SETTINGS`` once per worker
slot and sends it one job per line on stdin; the worker answers one JSON line per job.
For each job it runs nbgrader's own ``Autograde`` (and ``GenerateFeedback``) in this
process, on a prepared copy of the course, so nbgrader, nbconvert and the gradebook
code are imported once per worker rather than once per submission. Only the kernel that
runs the learner's code is boxed (:class:`~.kernel.BoxedKernelManager`); it sees none of
the copy but its own folder.

The answers go to a duplicate of the original stdout; fd 1 is pointed at stderr so that
nothing the kernels (or nbgrader) print can forge an answer.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import sandbox


def grade_one(job: dict, slot: int, limits: sandbox.Limits, use_bwrap: bool | None) -> dict:
    """Autograde ``job["student"]`` in the course copy ``job["work"]``; return what happened."""
    from nbgrader.converters import Autograde, GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log
    from .batch import load_config
    from .kernel import BoxedKernelManager

    work = Path(job["work"])
    assignment, student = job["assignment"], job["student"]
    box = sandbox.Box(work / ".box", limits, slot, use_bwrap)
    shutil.copytree(job["submission"], box.cwd, dirs_exist_ok=True)   # the kernel's own copy of the files
    config = load_config(work)
    if job.get("cell_timeout"):
        config.Execute.timeout = job["cell_timeout"]
    config.Execute.kernel_manager_class = BoxedKernelManager
    config.BoxedKernelManager.folder = str(box.folder)
    config.BoxedKernelManager.slot = slot
    config.BoxedKernelManager.limits = asdict(limits)
    config.BoxedKernelManager.use_bwrap = use_bwrap
    coursedir = CourseDirectory(config=config, root=str(work))
    coursedir.assignment_id, coursedir.student_id = assignment, student
    out = {"notes": list(box.notes)}
    start = time.perf_counter()
    box.open()
    try:
        app = Autograde(coursedir=coursedir, config=config)
        app.force, app.create_student = True, True
        graded = capture_log(app)
    finally:
        box.close()
    out.update(success=graded["success"], log=graded.get("log", "")[-20000:], error=graded.get("error"),
               autograde_seconds=time.perf_counter() - start)
    if job.get("feedback") and graded["success"]:
        config.HTMLExporter.template_name = "feedback"
        app = GenerateFeedback(coursedir=coursedir, config=config)
        app.force = True
        fed = capture_log(app)
        if not fed["success"]:
            out["notes"].append("feedback could not be generated: " + (fed.get("error") or "?").strip()[-300:])
    if box.log.exists() and not graded["success"]:
        out["log"] += "\n[kernel]\n" + box.log.read_text(errors="replace")[-4000:]
    return out


def main(argv: list[str] | None = None) -> int:
    settings = json.loads((argv or sys.argv[1:])[0])
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    limits = sandbox.Limits(**settings["limits"])
    slot, use_bwrap = settings["slot"], settings["use_bwrap"]
    # import what every job needs now, while the parent prepares the first submission
    import nbgrader.converters  # noqa: F401

    from . import kernel  # noqa: F401
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        try:
            result = grade_one(job, slot, limits, use_bwrap)
        except Exception as exc:                          # the worker lives on; the job is reported
            import traceback

            result = {"success": False, "error": f"{type(exc).__name__}: {exc}",
                      "log": traceback.format_exc()[-8000:], "notes": []}
        answers.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
