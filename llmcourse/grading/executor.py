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

from nbclient.exceptions import DeadKernelError
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


def _descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
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

    def preprocess(self, nb, resources=None, km=None):
        _become_subreaper()
        self._restarts = 0
        return super().preprocess(nb, resources, km)

    async def _async_handle_timeout(self, timeout, cell=None):
        self._timed_out = True
        return await super()._async_handle_timeout(timeout, cell)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        self._timed_out = False
        try:
            result = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
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
        kernel_pid = getattr(getattr(self.km, "provisioner", None), "pid", None)
        if kernel_pid is None:
            return
        keep = {kernel_pid}
        for pid in _descendants(os.getpid()):
            if pid not in keep:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    async def _restart_and_replay(self, upto: int) -> None:
        if self._restarts >= self.max_restarts:
            self.log.error("Too many kernel restarts; the remaining cells will fail")
            return
        self._restarts += 1
        self.log.warning("Restarting the kernel and replaying cells 0..%d", upto - 1)
        await ensure_async(self.km.restart_kernel(now=True))
        self._kill_strays()
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
