"""Batch grading: `llmcourse grade` against sequential `nbgrader autograde`, and the floor.

    .venv/bin/python benchmarks/grade_batch.py                 # 40 submissions of `attention`
    .venv/bin/python benchmarks/grade_batch.py --n 10 --workers 2

Whole-process and in one run on the same machine: it builds a course with N copies of
the solution notebook (each a distinct student), then times

1. `nbgrader autograde attention` over all of them (one process, one notebook after another);
2. `llmcourse grade attention --force` over the same folder (parallel workers, boxed
   kernels, and per-student feedback HTML, which (1) does not write);
3. the floor: one fresh process that starts a kernel, imports torch and llmcourse and
   runs the solution notebook's cells (nbclient, no nbgrader), the best of a few runs.

It prints the speed-up (1)/(2) and the seconds per submission of (2), with one worker
per core, against the floor.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def timed(cmd, cwd) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return seconds


FLOOR = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], 4)
if sys.argv[2] == "imports":          # kernel start and imports only
    nb.cells = [nbformat.v4.new_code_cell("import torch, llmcourse, llmcourse.grading.checks.attention")]
NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=False).execute()
"""


def floor_seconds(source: Path, what: str, runs: int) -> float:
    """Best of ``runs`` whole-process times of FLOOR (a fresh interpreter each time)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", FLOOR, str(source), what], env=env(), check=True,
                       capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="submissions")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="llmcourse grade workers")
    ap.add_argument("--floor-runs", type=int, default=3)
    args = ap.parse_args()
    from nbgrader_harness import Course, solution_sources

    root = Path(tempfile.mkdtemp(prefix="llmcourse-bench-"))
    try:
        course = Course.create("attention", root=root)
        nb = course.submission(solution_sources("attention"))
        course.submit({f"student{i:03d}": nb for i in range(args.n)})
        source = root / "solutions" / "attention" / "attention.ipynb"
        floor = floor_seconds(source, "all", args.floor_runs)
        imports = floor_seconds(source, "imports", args.floor_runs)
        seq = timed([sys.executable, "-m", "nbgrader", "autograde", "attention", "--force"], root)
        par = timed([sys.executable, "-m", "llmcourse.cli", "grade", "attention", "--force",
                     "--workers", str(args.workers)], root)
        per = par / args.n * args.workers
        print(f"submissions:                       {args.n}")
        print(f"nbgrader autograde (sequential):   {seq:7.1f} s  ({seq / args.n:.2f} s per submission)")
        print(f"llmcourse grade ({args.workers} workers):        {par:7.1f} s  ({par / args.n:.2f} s per submission, "
              f"feedback and CSV included)")
        print(f"kernel start + imports (torch, llmcourse), one process:           {imports:.2f} s")
        print(f"floor (kernel + torch + llmcourse + solution cells, one process): {floor:.2f} s")
        print(f"speed-up, nbgrader / llmcourse:    {seq / par:.2f}x   (target >= 1.7x: "
              f"{'met' if seq / par >= 1.7 else 'NOT met'})")
        print(f"llmcourse grade, seconds per submission per worker: {per:.2f} s = {per / floor:.2f}x the floor   "
              f"(target <= 1.5x: {'met' if per / floor <= 1.5 else 'NOT met'})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
