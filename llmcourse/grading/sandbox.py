"""Run one grading job in a box: its own folder, resource limits, a wall clock.

What the box gives, from the outside in:

1. **Bubblewrap** (``bwrap``, Debian package ``bubblewrap``), when it is installed: the
   whole file system read-only, a private ``/tmp``, the job's folder the only writable
   place, no network (a private loopback), its own PID namespace, and every process in
   it killed when the job ends (``--die-with-parent``).
2. **Another user id** when the grader runs as root: each worker slot gets a uid of its
   own (``60000 + slot``), so the process limit below counts that job's processes only
   and the job cannot write files that belong to root (other students, the gradebook).
   The Linux kernel never enforces the process limit on root, hence the switch.
3. **Resource limits** (``setrlimit``) inherited by the kernel and everything it starts:
   CPU seconds, address space, file size, number of processes.
4. **A wall clock**: past it the whole process group is killed.

Without bubblewrap the job still gets 2-4, and :func:`protection` says what is missing.
It is no container: the job shares the kernel, the CPU and the page cache with the rest
of the machine.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

UID_BASE = 60000


@dataclass
class Limits:
    """Per-job limits. Each process of the job gets its own CPU, memory and file-size limit."""

    cpu_seconds: int = 900            #: CPU seconds per process (SIGXCPU, then SIGKILL)
    address_space_mb: int = 8192      #: virtual memory per process (an allocation past it fails)
    file_size_mb: int = 256           #: largest file a process may write (EFBIG past it)
    processes: int = 128              #: processes and threads of the job's user at once
    wall_seconds: float = 900.0       #: the whole job, then it is killed
    threads: int = 1                  #: OMP/MKL/torch threads (parallel jobs on few cores)


@dataclass
class Result:
    """What came of a job: ``status`` is ``ok``, ``failed`` (non-zero exit) or ``timeout``."""

    status: str
    returncode: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""
    notes: list = field(default_factory=list)


def bwrap_path() -> str | None:
    """The bubblewrap binary, or ``None`` when it is not installed (or does not work here)."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    probe = subprocess.run([path, "--ro-bind", "/", "/", "--unshare-net", "true"],
                           capture_output=True, timeout=30)
    return path if probe.returncode == 0 else None


def protection() -> dict:
    """Which defences this machine gives the grader, and what is missing, in words to act on."""
    bw = bwrap_path() is not None
    root = os.geteuid() == 0
    missing = []
    if not bw:
        missing.append("bubblewrap is not installed (apt-get install bubblewrap): submissions can read "
                       "and write whatever the grading user can, and reach the network")
    if root and not bw:
        missing.append("running as root without bubblewrap: jobs run as root and the process limit "
                       "is not enforced (the kernel exempts root)")
    return {"bubblewrap": bw, "separate_uid": root and bw, "rlimits": True, "missing": missing}


def _preexec(limits: Limits):
    def apply() -> None:
        os.setsid()                                      # own process group: killpg reaches everything
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_mb * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Counted per real uid. As root the job switches to a uid of its own inside the box
        # (setpriv), so the limit counts that job alone; as an ordinary user it counts all of
        # the user's processes, so it allows for those already running.
        base = 0 if os.geteuid() == 0 else _count_processes(os.getuid())
        resource.setrlimit(resource.RLIMIT_NPROC, (base + limits.processes,) * 2)
    return apply


def _count_processes(uid: int) -> int:
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def job_env(workdir: Path, limits: Limits, extra: dict | None = None) -> dict:
    """Environment of a job: HOME and every cache inside its folder, thread counts set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    home = workdir / ".home"
    home.mkdir(exist_ok=True)
    env.update({
        "HOME": str(home), "TMPDIR": str(workdir / ".tmp"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_DATA_DIR": str(home / "data"),
        "IPYTHONDIR": str(home / "ipython"), "MPLCONFIGDIR": str(home / "mpl"),
        "XDG_CACHE_HOME": str(home / "cache"), "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": str(limits.threads), "MKL_NUM_THREADS": str(limits.threads),
        "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
    })
    (workdir / ".tmp").mkdir(exist_ok=True)
    if extra:
        env.update(extra)
    return env


def _visible_paths() -> list[str]:
    """Folders a job must be able to reach: the interpreter, the venv, the installed package."""
    import llmcourse

    paths = {sys.prefix, sys.base_prefix, os.path.dirname(sys.executable),
             str(Path(llmcourse.__file__).resolve().parents[1])}
    return sorted({os.path.realpath(p) for p in paths})


def _overlay_args(paths: list[str]) -> list[str]:
    """bwrap arguments that let an unprivileged uid reach ``paths`` through folders it may not
    enter (``/root`` is 0700): each such folder is covered by an empty tmpfs into which only
    the next folder on the way is bound back, read-only. The rest of the folder stays hidden."""
    args: list[str] = []
    covered: set[str] = set()
    for target in paths:
        parts = Path(target).parts
        for i in range(1, len(parts)):
            parent = str(Path(*parts[:i]))
            child = str(Path(*parts[:i + 1]))
            if parent in covered:
                if child not in covered:
                    args += ["--ro-bind", child, child]
                    covered.add(child)
                continue
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                args += ["--tmpfs", parent, "--ro-bind", child, child]
                covered.update({parent, child})
    return args


def _private_tmp_parents(path: Path) -> list[str]:
    """Folders between the private /tmp and ``path``, made enterable (bwrap makes them 0700)."""
    args: list[str] = []
    for parent in reversed(Path(path).parents):
        if str(parent).startswith("/tmp/"):
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _tmp_binds(workdir: Path) -> list[str]:
    """Put back, inside the private /tmp, what the job needs from the real one: the interpreter,
    the venv and the package when they live under /tmp (a clone there, say) read-only, and the
    job folder writable."""
    args: list[str] = []
    under_tmp = [p for p in _visible_paths() if p.startswith("/tmp/")]
    for path in under_tmp:
        if not any(path.startswith(other + "/") for other in under_tmp):   # the outermost is enough
            args += [*_private_tmp_parents(Path(path)), "--ro-bind", path, path]
    return args + [*_private_tmp_parents(workdir), "--bind", str(workdir), str(workdir)]


def run(cmd: list[str], workdir: Path, limits: Limits | None = None, slot: int = 0,
        extra_env: dict | None = None, use_bwrap: bool | None = None) -> Result:
    """Run ``cmd`` in ``workdir`` (the only folder it may write) under ``limits``.

    ``slot`` picks the uid when running as root, so parallel jobs never share one.
    ``use_bwrap=None`` uses bubblewrap when it is available; ``True`` insists on it.
    """
    limits = limits or Limits()
    workdir = Path(workdir).resolve()
    env = job_env(workdir, limits, extra_env)
    notes = []
    bw = bwrap_path() if use_bwrap in (None, True) else None
    if use_bwrap and bw is None:
        raise RuntimeError("bubblewrap was asked for but is not available (apt-get install bubblewrap)")
    uid = None
    if bw:
        box = [bw, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               *_tmp_binds(workdir), "--unshare-net", "--unshare-pid", "--unshare-ipc",
               "--die-with-parent", "--chdir", str(workdir)]
        if os.geteuid() == 0:
            uid = UID_BASE + slot
            box += _overlay_args(_visible_paths())
            box += ["--", "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        else:
            box += ["--"]
        cmd = box + list(cmd)
    else:
        notes.append("no bubblewrap: the job saw the real file system and network")
        if os.geteuid() == 0:
            notes.append("running as root without bubblewrap: the process limit is not enforced")
    if uid is not None:
        _chown_tree(workdir, uid)
    out_path, err_path = workdir / ".job.stdout", workdir / ".job.stderr"
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, preexec_fn=_preexec(limits))
        try:
            rc = proc.wait(timeout=limits.wall_seconds)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            status, rc = "timeout", None
            notes.append(f"stopped after the wall-clock limit of {limits.wall_seconds:.0f} s")
        finally:
            _kill_group(proc)
    seconds = time.perf_counter() - start
    if uid is not None:
        _kill_uid(uid)                                   # anything that escaped the group
        _chown_tree(workdir, os.geteuid())
    return Result(status, rc, seconds, _tail(out_path), _tail(err_path), notes)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of a job uid (a daemon that left the process group)."""
    for _ in range(3):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid == uid:
                    found = True
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        if not found:
            return
        time.sleep(0.2)


def _chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            try:
                os.lchown(os.path.join(root, name), uid, uid)
            except OSError:
                pass
    os.lchown(path, uid, uid)


def _tail(path: Path, limit: int = 20000) -> str:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size > limit:
            f.seek(size - limit)
        text = f.read().decode("utf-8", errors="replace")
    return text if size <= limit else f"[... {size - limit} bytes cut ...]\n{text}"
