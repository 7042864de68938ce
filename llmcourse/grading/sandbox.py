"""The box a submission's kernel runs in: its own folder, resource limits, another uid.

Only the Python kernel that runs the learner's code goes in the box; the grading
worker that drives it (nbgrader, the gradebook, the feedback) stays outside. What the
box gives, from the outside in:

1. **Resource limits** (``setrlimit``, set just before the box starts) inherited by the kernel and everything
   it starts: CPU seconds, address space, file size, number of processes.
2. **Bubblewrap** (``bwrap``, Debian package ``bubblewrap``), when it is installed: the
   whole file system read-only, a private ``/tmp`` in which only the box's folder is
   writable, no network (a private loopback; the kernel talks to the grader over Unix
   sockets in its folder), its own PID namespace, and every process in it killed when
   the grader goes (``--die-with-parent``).
3. **Another user id** when the grader runs as root: each worker slot gets a uid of its
   own (``60000 + slot``), so the process limit counts that box's processes only and the
   kernel cannot write files that belong to root (other students, the gradebook). The
   Linux kernel never enforces the process limit on root, hence the switch.

The grader adds a wall clock per submission and kills what a cell leaves behind.
Without bubblewrap the kernel still gets 1, and :func:`protection` says what is missing.
It is no container: the kernel shares the machine's kernel, CPU and page cache.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: first of the uids the boxes run as when the grader is root (slot n runs as UID_BASE + n).
#: Two graders on one machine (two courses, or two checkouts testing at once) need bases at
#: least 64 apart, or one grader's clean-up kills the other's kernels.
UID_BASE = int(os.environ.get("LLMCOURSE_UID_BASE", "60000"))


@dataclass
class Limits:
    """Per-job limits. Each process of the job gets its own CPU, memory and file-size limit."""

    cpu_seconds: int = 900            #: CPU seconds per process (SIGXCPU, then SIGKILL)
    address_space_mb: int = 8192      #: virtual memory per process (an allocation past it fails)
    file_size_mb: int = 256           #: largest file a process may write (EFBIG past it)
    processes: int = 128              #: processes and threads of the job's user at once
    wall_seconds: float = 900.0       #: the whole job, then it is killed
    threads: int = 1                  #: OMP/MKL/torch threads (parallel jobs on few cores)


@functools.lru_cache(maxsize=None)
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


def env_with_venv() -> dict:
    """This environment with the interpreter's folder (the venv's ``bin``) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


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
        # torch's compiler cache: once anything in the grader's process has asked torch for it,
        # torch stores its path (under the real /tmp) in this variable, which the kernel would
        # inherit and, in the box's private /tmp, fail to create (a PermissionError in the
        # learner's first cell, e.g. from torch.use_deterministic_algorithms)
        "TORCHINDUCTOR_CACHE_DIR": str(home / "cache" / "torchinductor"),
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


#: sets the limits given as JSON, then becomes the command (a few milliseconds; portable,
#: unlike util-linux's prlimit)
_LIMIT_SHIM = """\
import json, os, resource, sys
for name, (soft, hard) in json.loads(sys.argv[1]).items():
    which = getattr(resource, name)
    _, current = resource.getrlimit(which)
    if current != resource.RLIM_INFINITY:       # never above what the grader itself may use
        soft, hard = min(soft, current), min(hard, current)
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):               # a platform that refuses this limit
        pass
os.execvp(sys.argv[2], sys.argv[2:])
"""


def box_uid(slot: int, use_bwrap: bool | None) -> int | None:
    """The uid a box on ``slot`` runs as: its own when the grader is root and has bubblewrap."""
    if os.geteuid() == 0 and use_bwrap is not False and bwrap_path() is not None:
        return UID_BASE + slot
    return None


@dataclass
class Box:
    """A kernel's box: the folder it may write, the uid it runs as (root only), its limits."""

    folder: Path
    limits: Limits
    slot: int = 0
    use_bwrap: bool | None = None          #: None: when available; True: insist
    uid: int | None = None
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.bwrap = bwrap_path() if self.use_bwrap in (None, True) else None
        if self.use_bwrap and self.bwrap is None:
            raise RuntimeError("bubblewrap was asked for but is not available (apt-get install bubblewrap)")
        self.uid = box_uid(self.slot, self.use_bwrap)
        if not self.bwrap:
            self.notes.append("no bubblewrap: the kernel saw the real file system and network")
            if os.geteuid() == 0:
                self.notes.append("running as root without bubblewrap: the process limit is not enforced")
        for sub in ("cwd", "run", ".home", ".tmp"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    @property
    def cwd(self) -> Path:
        """The kernel's working folder (a copy of the submission's files goes here)."""
        return self.folder / "cwd"

    @property
    def runtime(self) -> Path:
        """Connection file (root's, read-only to the box) and the kernel's Unix sockets.
        Sticky and owned by the grader, so the kernel cannot swap the grader's files there."""
        return self.folder / "run"

    @property
    def log(self) -> Path:
        """The kernel's stdout and stderr; beside the folder, out of the kernel's reach."""
        return self.folder.with_name(self.folder.name + ".kernel.log")

    def env(self, base: dict | None = None) -> dict:
        return job_env(self.folder, self.limits, base)

    def open(self) -> None:
        """Hand the folder's working parts to the box's uid (root only)."""
        if self.uid is not None:                  # the folder itself stays the grader's
            for sub in ("cwd", ".home", ".tmp"):
                _chown_tree(self.folder / sub, self.uid)
            os.chmod(self.folder, 0o755)
            os.chmod(self.runtime, 0o1777)

    def close(self) -> None:
        """Kill whatever still runs under the box's uid; take the folder back."""
        if self.uid is not None:
            _kill_uid(self.uid)
            _chown_tree(self.folder, os.geteuid())

    def command(self, cmd: list[str]) -> list[str]:
        """``cmd`` wrapped: limits, then bubblewrap and setpriv when available."""
        mb = 1024 * 1024
        lim = self.limits
        limits = {"RLIMIT_CPU": (lim.cpu_seconds, lim.cpu_seconds + 5),
                  "RLIMIT_AS": (lim.address_space_mb * mb,) * 2,
                  "RLIMIT_FSIZE": (lim.file_size_mb * mb,) * 2, "RLIMIT_CORE": (0, 0)}
        if os.path.isdir("/proc"):
            # Counted per real uid. As root the box switches to a uid of its own, so the limit
            # counts that box alone; as an ordinary user it counts all of the user's processes,
            # so it allows for those already running.
            base = 0 if os.geteuid() == 0 else _count_processes(os.getuid())
            limits["RLIMIT_NPROC"] = (base + lim.processes,) * 2
        out = [sys.executable, "-I", "-S", "-c", _LIMIT_SHIM, json.dumps(limits)]
        if self.bwrap:
            out += [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                    *_tmp_binds(self.folder), "--unshare-net", "--unshare-pid", "--unshare-ipc",
                    "--die-with-parent", "--chdir", str(self.cwd)]
            if self.uid is not None:
                out += _overlay_args(_visible_paths())
                out += ["--", "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--"]
            else:
                out += ["--"]
        return out + list(cmd)


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
