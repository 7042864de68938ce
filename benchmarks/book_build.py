"""Time the book build, cold and cached, and each notebook's execution.

    .venv/bin/python benchmarks/book_build.py            # cold build in a temp folder, then cached
    .venv/bin/python benchmarks/book_build.py --threads 2

Whole-process: it runs the same `jupyter-book build -W -n --keep-going` as `make book`,
into a fresh output folder (cold: nothing cached), then again (cached: nothing to
execute), and reads each notebook's execution time from the jupyter-cache database.
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

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path, env: dict) -> float:
    jb = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    proc = subprocess.run([str(jb), "build", str(ROOT), "--builder", "html", "-W", "-n", "--keep-going",
                           "--path-output", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="OMP/torch threads for the kernels (0: library default)")
    ap.add_argument("--keep", action="store_true", help="keep the output folder")
    args = ap.parse_args()
    env = dict(os.environ, TQDM_DISABLE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = Path(tempfile.mkdtemp(prefix="llmcourse-book-"))
    try:
        cold = build(out, env)
        cached = build(out, env)
        from jupyter_cache import get_cache

        cache = get_cache(out / "_build" / ".jupyter_cache")
        rows = sorted(((Path(r.uri).relative_to(ROOT).as_posix(), r.data.get("execution_seconds", float("nan")))
                       for r in cache.list_cache_records()), key=lambda r: r[0])
        print(f"{'notebook':48s} {'execution s':>12s}")
        for uri, secs in rows:
            flag = "  OVER 90 s" if secs > 90 else ""
            print(f"{uri:48s} {secs:12.1f}{flag}")
        print(f"{'all notebooks':48s} {sum(s for _, s in rows):12.1f}")
        print(f"book build cold:   {cold:7.1f} s")
        print(f"book build cached: {cached:7.1f} s")
        print(f"cold / cached ratio: {cold / cached:.1f}x")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
