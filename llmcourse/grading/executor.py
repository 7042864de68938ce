"""An nbgrader ``Execute`` that survives what submissions do to their kernel.

nbgrader 0.9's executor stops grading a notebook when its kernel dies (``os._exit``, a
kill, the CPU-time limit) and gives up on the whole submission; after a timeout whose
interrupt the code ignores, every later cell times out too. :class:`ResilientExecute`
grades on instead:

- **the kernel dies during a cell**: the cell gets an error output that says so; the
  kernel is restarted and the code cells above (not the tests) are run again, silently,
  so the parts after it are graded as if the cell had simply failed;
- **a cell times out**: the kernel is interrupted (nbgrader's behaviour), then restarted
  and the cells above replayed, so a loop that ignores the interrupt costs one cell;
- **after every cell**, processes the cell left behind (a fork bomb's children, a
  daemon) are killed: the executor makes itself the "child subreaper" so that orphans
  stay its descendants.

``nbgrader_config.py`` puts it in place of ``Execute`` for ``nbgrader autograde``.
"""
from __future__ import annotations

import copy
import ctypes
import os
import signal

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat.v4 import new_output
from traitlets import Integer

from nbgrader.preprocessors import Execute

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    if not os.path.isdir("/proc"):          # not Linux: strays are left to the box's end
        return tree
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _kernel_start(pid: int) -> int | None:
    """The start time of ``pid`` when it is an IPython kernel (``python -m ipykernel_launcher``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        if args[1:3] != [b"-m", b"ipykernel_launcher"]:
            return None
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _descendants(pid: int, tree: dict | None = None) -> list[int]:
    tree, out, todo = tree if tree is not None else _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _is_grade_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


class ResilientExecute(Execute):
    """nbgrader's ``Execute``, restarting a dead or stuck kernel and grading on."""

    max_restarts = Integer(8, help="Restarts per notebook before the rest is left unexecuted").tag(config=True)
    max_output_bytes = Integer(4_000_000, help="Output kept per cell; the rest is dropped").tag(config=True)
    # nbclient waits 4 s for a cell's output after its reply; on a loaded 2-core machine, and after
    # an interrupted infinite loop (the kernel formats its traceback), it can take longer
    iopub_timeout = Integer(30, help="Seconds to wait for a cell's output after its reply").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        _become_subreaper()
        self._restarts = 0
        return super().preprocess(nb, resources, km)

    async def _async_handle_timeout(self, timeout, cell=None):
        self._timed_out = True
        return await super()._async_handle_timeout(timeout, cell)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        self._timed_out = False
        self._output_bytes, self._output_capped = 0, False
        try:
            result = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except CellTimeoutError:
            if not self._timed_out:
                raise
            # the cell ran past its limit, and its output did not end in time after the interrupt
            # either: it is failed as timed out, and the kernel restarted like any other timeout
            cell.outputs.append(new_output(
                "error", ename="CellTimeoutError", evalue="the cell ran past the time limit and was interrupted",
                traceback=["CellTimeoutError: the cell ran past the time limit and was interrupted"]))
            await self._restart_and_replay(cell_index)
            return cell
        except DeadKernelError:
            cell.outputs.append(new_output(
                "error", ename="KernelDied",
                evalue="the Python kernel stopped while running this cell (os._exit, sys.exit in a thread, "
                       "a signal, or a resource limit). The grader restarted it and re-ran the cells above; "
                       "the parts below are graded as usual.",
                traceback=["KernelDied: the kernel stopped while running this cell; it was restarted"]))
            await self._restart_and_replay(cell_index)
            return cell
        self._kill_strays()
        if self._timed_out:
            await self._restart_and_replay(cell_index)
        return result

    def _kill_strays(self) -> None:
        """Kill every process below the grader but the kernel and the chain that starts it
        (``bwrap`` and its PID-namespace init when the kernel is boxed)."""
        root = getattr(getattr(self.km, "provisioner", None), "pid", None)
        if root is None:
            return
        tree = _children()
        keep, level = {root}, [(root, (root,))]
        while level:
            # the kernel: the shallowest ipykernel process, and the oldest of those (a fork of
            # the kernel orphaned into the box's init sits at its level, but started later)
            kernels = [(start, path) for pid, path in level if (start := _kernel_start(pid)) is not None]
            if kernels:
                keep.update(min(kernels)[1])
                break
            level = [(child, path + (child,)) for pid, path in level for child in tree.get(pid, [])]
        else:   # no kernel yet (the box is still starting it): leave the whole chain alone
            keep.update(_descendants(root, tree))
        for pid in _descendants(os.getpid(), tree):
            if pid not in keep:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def output(self, outs, msg, display_id, cell_index):
        """nbclient's, with a cap on a cell's output: past it, output is dropped (with a note),
        so that endless printing cannot fill the grader's memory."""
        content = msg.get("content", {})
        size = len(str(content.get("text", ""))) + sum(len(str(v)) for v in content.get("data", {}).values())
        self._output_bytes = getattr(self, "_output_bytes", 0) + size
        if self._output_bytes > self.max_output_bytes:
            if not getattr(self, "_output_capped", False):
                self._output_capped = True
                outs.append(new_output("stream", name="stdout", text=(
                    f"\n[output past {self.max_output_bytes // 1000000} MB dropped by the grader]\n")))
            return None
        return super().output(outs, msg, display_id, cell_index)

    async def _restart_and_replay(self, upto: int) -> None:
        if self._restarts >= self.max_restarts:
            self.log.error("Too many kernel restarts; the remaining cells will fail")
            return
        self._restarts += 1
        self.log.warning("Restarting the kernel and replaying cells 0..%d", upto - 1)
        self._kill_strays()
        await ensure_async(self.km.restart_kernel(now=True))
        await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
        for index, cell in enumerate(self.nb.cells[:upto]):
            if cell.cell_type != "code" or _is_grade_test(cell):
                continue
            replay = copy.deepcopy(cell)
            self._timed_out = False
            try:
                await super().async_execute_cell(replay, index, store_history=False)
            except DeadKernelError:
                await ensure_async(self.km.restart_kernel(now=True))
                await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
                return
            if self._timed_out:
                return

    # nbclient binds the synchronous wrapper to its own coroutine: bind it to ours
    execute_cell = run_sync(async_execute_cell)
