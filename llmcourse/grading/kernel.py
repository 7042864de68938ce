"""A Jupyter kernel manager that starts the kernel inside a :class:`~.sandbox.Box`.

The grading worker runs nbgrader in its own process and only the kernel, which runs
the learner's code, goes in the box. nbclient creates the manager from the config::

    c.Execute.kernel_manager_class = "llmcourse.grading.kernel.BoxedKernelManager"
    c.BoxedKernelManager.folder = "/tmp/.../box"       # the box's writable folder
    c.BoxedKernelManager.slot = 0                       # picks the uid when root

The kernel talks to the grader over Unix sockets (``transport = "ipc"``) in the box's
folder, so it needs no network, and it starts in the box's ``cwd`` rather than next to
the notebook nbgrader writes, which it cannot touch.
"""
from __future__ import annotations

import os
import uuid

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Dict, Integer, Unicode, default

from . import sandbox


class BoxedKernelManager(AsyncKernelManager):
    """``AsyncKernelManager`` whose kernel runs under :class:`~.sandbox.Box` limits."""

    folder = Unicode(help="The box's folder: the only place the kernel may write").tag(config=True)
    slot = Integer(0, help="Worker slot; picks the box's uid when the grader runs as root").tag(config=True)
    limits = Dict(help="sandbox.Limits fields").tag(config=True)
    use_bwrap = Bool(None, allow_none=True, help="None: bubblewrap when available").tag(config=True)

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @property
    def box(self) -> sandbox.Box:
        if getattr(self, "_box", None) is None:
            if not self.folder:
                raise RuntimeError("BoxedKernelManager.folder is not set")
            self._box = sandbox.Box(self.folder, sandbox.Limits(**self.limits), self.slot, self.use_bwrap)
        return self._box

    async def _async_pre_start_kernel(self, **kw):
        box = self.box
        if not self.connection_file:
            self.connection_file = str(box.runtime / f"kernel-{uuid.uuid4().hex[:12]}.json")
            self.ip = os.path.splitext(self.connection_file)[0] + "-ipc"
        kw["env"] = box.env({"PATH": sandbox.env_with_venv()["PATH"]})
        kw["cwd"] = str(box.cwd)
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        # the kernel's own stdout and stderr (and bwrap's complaints) go to a log beside its folder
        with open(self.box.log, "ab") as log:
            kw.update(stdout=log, stderr=log)
            await super()._async_launch_kernel(kernel_cmd, **kw)

    def write_connection_file(self, **kwargs) -> None:
        super().write_connection_file(**kwargs)
        if self.box.uid is not None:                 # the kernel runs as the box's uid: let it read
            os.chmod(self.connection_file, 0o644)

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.box.bwrap:
            # In its PID namespace the kernel's parent is bwrap's init (pid 1), which ipykernel
            # takes for "the grader has gone" and exits; --die-with-parent does that job instead.
            cmd.append("--IPKernelApp.parent_handle=1")
        return self.box.command(cmd)
