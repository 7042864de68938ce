"""Tamper guard: an IPython extension the grader loads into the kernel before any cell runs.

nbgrader runs the hidden tests in the learner's own namespace, after the learner's
cells. A submission could replace what the tests rely on (``torch.allclose``,
``torch.testing.assert_close``, ``numpy.testing``, a builtin, ``llmcourse`` itself) so
that wrong code passes. The guard takes a snapshot of those modules when the kernel
starts, and before every cell it runs (and after every call the checks make into
learner code, see :func:`llmcourse.grading.common.call`) it compares them with the
snapshot, puts back whatever was replaced, and remembers what it found. The checks
then report "tampering detected" and give no credit to the part concerned.

It defends against replacing attributes of the guarded modules and classes, and
against swapping the modules in ``sys.modules``. It is not a security boundary: code
that goes after the guard itself (IPython's event machinery, ``ctypes``) is out of its
reach; the grader's sandbox and its scan of the submission's source cover some of that,
and the README says what is left.

Load it with ``ipython --ext=llmcourse.grading.guard`` (``nbgrader_config.py`` passes
the flag to every kernel it starts).
"""
from __future__ import annotations

import builtins
import importlib
import sys

#: modules whose attributes the tests rely on; llmcourse and all its submodules are added
GUARDED_MODULES = (
    "builtins", "math", "operator", "functools", "numpy", "numpy.testing", "torch", "torch.testing",
    "torch.nn", "torch.nn.functional", "torch.linalg",
)
#: classes whose attribute dictionaries are guarded (Python-level classes only)
GUARDED_CLASSES = (("torch", "Tensor"), ("torch.nn", "Module"), ("torch.nn", "Linear"))

#: names IPython and ipykernel rebind themselves while running cells (not tampering)
IPYTHON_MANAGED = {("builtins", n) for n in ("input", "raw_input", "get_ipython", "display", "exit", "quit",
                                            "_", "__", "___", "help", "__IPYTHON__")}

_state: dict = {}


def _snapshot_module(mod) -> dict:
    return dict(vars(mod))


def install() -> None:
    """Import what is guarded and take the snapshot (idempotent)."""
    if _state:
        return
    import pkgutil

    import llmcourse  # noqa: F401
    import llmcourse.grading.checks as checks
    import llmcourse.grading.common  # noqa: F401

    # every assignment's checks, so that replacing a check function is undone too
    for info in pkgutil.iter_modules(checks.__path__):
        importlib.import_module(f"llmcourse.grading.checks.{info.name}")

    names = list(GUARDED_MODULES) + sorted(n for n in sys.modules if n == "llmcourse" or n.startswith("llmcourse."))
    modules = {}
    for name in names:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            continue
    classes = {}
    for modname, clsname in GUARDED_CLASSES:
        cls = getattr(modules.get(modname), clsname, None)
        if cls is not None:
            classes[f"{modname}.{clsname}"] = (cls, dict(vars(cls)))
    _state.update(
        modules=modules,
        snapshots={name: _snapshot_module(m) for name, m in modules.items()},
        classes=classes,
        events=[],
        # captured now so that a replaced builtin cannot blind the guard
        setattr=builtins.setattr, delattr=builtins.delattr, vars=builtins.vars, list=builtins.list,
    )


def check_and_restore(where: str = "") -> list[str]:
    """Put back everything replaced since the snapshot; return (and remember) what was."""
    if not _state:
        return []
    st = _state
    found = []
    for name, mod in st["modules"].items():
        if sys.modules.get(name) is not mod:
            sys.modules[name] = mod
            found.append(f"sys.modules[{name!r}] was replaced")
        current = st["vars"](mod)
        for attr, original in st["snapshots"][name].items():
            if current.get(attr, _MISSING) is not original and (name, attr) not in IPYTHON_MANAGED:
                st["setattr"](mod, attr, original)
                found.append(f"{name}.{attr} was replaced" if attr in current else f"{name}.{attr} was deleted")
    for qual, (cls, saved) in st["classes"].items():
        current = st["vars"](cls)
        for attr, original in saved.items():
            if current.get(attr, _MISSING) is not original:
                try:
                    st["setattr"](cls, attr, original)
                except (TypeError, AttributeError):
                    pass
                found.append(f"{qual}.{attr} was replaced")
        for attr in st["list"](current):
            if attr not in saved:
                try:
                    st["delattr"](cls, attr)
                except (TypeError, AttributeError):
                    continue
                found.append(f"{qual}.{attr} was added")
    if found:
        st["events"].append((where, found))
    return found


def events() -> list:
    """Every detection so far, as ``(where, [what was replaced, ...])``."""
    return list(_state.get("events", []))


class _Missing:
    pass


_MISSING = _Missing()


def _pre_run_cell(info=None) -> None:
    check_and_restore("before a cell")


def load_ipython_extension(ip) -> None:
    """IPython entry point (``--ext=llmcourse.grading.guard``)."""
    install()
    ip.events.register("pre_run_cell", _pre_run_cell)


def unload_ipython_extension(ip) -> None:
    ip.events.unregister("pre_run_cell", _pre_run_cell)
