"""The kernel box (``sandbox.Box`` through ``kernel.BoxedKernelManager``) and the worker pool.

A boxed kernel runs a few probes; the assertions check what the box promises: limits
in force, no network, a read-only file system but for its folder, another uid when the
grader is root. The network probe connects to a TCP listener this test starts on the
machine (on 127.0.0.1 and on the machine's own non-loopback address, when it has one):
the connection succeeds from outside the box and must fail inside it. The worker-pool test checks that a submission past the wall clock is
stopped and reported, and that the next one on the same worker is graded as usual.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nbgrader_harness import Course, solution_sources

from llmcourse.grading import batch, sandbox

HAVE_BWRAP = sandbox.protection()["bubblewrap"]
LIMITS = sandbox.Limits(cpu_seconds=60, address_space_mb=3072, file_size_mb=8, processes=64, wall_seconds=120)

PROBE = r'''
import json, os, resource, socket
out = {"uid": os.getuid(), "cwd": os.getcwd(), "home": os.environ["HOME"],
       "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0], "as": resource.getrlimit(resource.RLIMIT_AS)[0],
       "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0]}
def attempt(f):
    try:
        f()
        return "ok"
    except Exception as e:
        return type(e).__name__
out["write_cwd"] = attempt(lambda: open("here.txt", "w").write("x"))
out["write_outside"] = attempt(lambda: open(OUTSIDE, "w").write("x"))
out["network"] = {f"{h}:{p}": attempt(lambda: socket.create_connection((h, p), timeout=3).close())
                  for h, p in LISTENERS}
out["big_file"] = attempt(lambda: open("big.bin", "wb").write(bytes(16 * 1024 * 1024)))
print(json.dumps(out))
'''


def run_boxed(folder: Path, outside: Path, listeners: list) -> dict:
    setup = f"OUTSIDE = {str(outside)!r}\nLISTENERS = {listeners!r}\n"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup + PROBE)])
    from llmcourse.grading.kernel import BoxedKernelManager

    from dataclasses import asdict

    from traitlets.config import Config

    c = Config()
    c.BoxedKernelManager.folder = str(folder)
    c.BoxedKernelManager.limits = asdict(LIMITS)
    c.BoxedKernelManager.slot = 7
    box = sandbox.Box(folder, LIMITS, 7)
    box.open()
    try:
        NotebookClient(nb, kernel_name="python3", timeout=60, kernel_manager_class=BoxedKernelManager,
                       config=c, allow_errors=False).execute()
    finally:
        box.close()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


def machine_address() -> str | None:
    """The machine's own non-loopback IPv4 address, if it has one (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


class Listener:
    """A TCP server on every interface of the machine that accepts and closes connections."""

    def __init__(self):
        self.server = socket.create_server(("0.0.0.0", 0))
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.close()


def test_boxed_kernel_limits_and_view():
    tmp = Path(tempfile.mkdtemp(prefix="llmcourse_sandbox_"))
    listener = Listener()
    try:
        hosts = ["127.0.0.1"] + [a for a in [machine_address()] if a]
        targets = [(h, listener.port) for h in hosts]
        for target in targets:                       # reachable from outside the box
            socket.create_connection(target, timeout=3).close()
        deadline = time.monotonic() + 10
        while listener.accepted < len(targets) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.accepted == len(targets), "the listener did not see the connections from outside"
        outside = tmp / "outside.txt"
        outside.write_text("intact")
        accepted_before = listener.accepted
        probe = run_boxed(tmp / "box", outside, targets)
        assert probe["cwd"] == str(tmp / "box" / "cwd")
        assert probe["home"] == str(tmp / "box" / ".home")
        assert probe["write_cwd"] == "ok"
        assert probe["fsize"] == 8 * 1024 * 1024 and probe["big_file"] != "ok"
        assert probe["as"] == 3072 * 1024 * 1024 and probe["cpu"] == 60
        if HAVE_BWRAP:
            assert probe["write_outside"] != "ok" and outside.read_text() == "intact"
            assert set(probe["network"]) == {f"{h}:{p}" for h, p in targets}
            assert all(result != "ok" for result in probe["network"].values()), probe["network"]
            time.sleep(0.5)
            assert listener.accepted == accepted_before, "a connection from inside the box reached the listener"
            if os.geteuid() == 0:
                assert probe["uid"] == sandbox.UID_BASE + 7
        elif os.environ.get("CI"):
            pytest.fail("bubblewrap must be installed under CI (.ci/run installs it)")
        else:                                        # without the box the listener is reachable
            assert all(result == "ok" for result in probe["network"].values()), probe["network"]
    finally:
        listener.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_wall_clock_stops_one_submission_and_the_worker_goes_on():
    tmp_path = Path(tempfile.mkdtemp(prefix="llmcourse_wall_clock_"))
    try:
        _wall_clock(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _wall_clock(tmp_path: Path) -> None:
    sol = solution_sources("attention")
    course = Course.create("attention", root=tmp_path)
    course.submit({"a_sleeper": course.submission({**sol, "heads": "import time\ntime.sleep(3600)\n" + sol["heads"]}),
                   "b_honest": course.submission(sol)})
    limits = sandbox.Limits(**{**LIMITS.__dict__, "wall_seconds": 25})
    results = {r.student: r for r in batch.grade(tmp_path, "attention", workers=1, limits=limits,
                                                 cell_timeout=600, progress=False)}
    sleeper, honest = results["a_sleeper"], results["b_honest"]
    assert sleeper.status == "timeout" and sleeper.score == 0
    assert all(p.status == "timeout" and "wall-clock" in p.message for p in sleeper.parts)
    assert honest.status == "graded" and honest.score == honest.max_score == 27
    assert "wall-clock" in (tmp_path / "feedback" / "a_sleeper" / "attention" / "summary.txt").read_text()
    assert (tmp_path / "feedback" / "b_honest" / "attention" / "attention.html").exists()


def test_job_env_keeps_every_cache_in_the_jobs_folder(tmp_path, monkeypatch):
    """Caches the grader's own process points at (torch sets TORCHINDUCTOR_CACHE_DIR in it once
    anything asks for its compiler cache) are not handed to the kernel: in the box's private
    /tmp such a path cannot be created, and the learner's first cell failed with a
    PermissionError in the full test run."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_root")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", "/somewhere/else")
    env = sandbox.job_env(tmp_path, sandbox.Limits())
    for key in ("HOME", "TMPDIR", "TORCHINDUCTOR_CACHE_DIR", "XDG_CACHE_HOME", "MPLCONFIGDIR",
                "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR"):
        assert Path(env[key]).is_relative_to(tmp_path), (key, env[key])
    assert (tmp_path / ".tmp").is_dir() and (tmp_path / ".home").is_dir()
