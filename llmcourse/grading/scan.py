"""Read a submission's code before running it, for what the feedback should mention.

The scan notes code that reaches for what the hidden tests rely on: rebinding attributes
of ``torch``, ``numpy``, ``builtins`` or of a ``llmcourse`` module (however it was
imported), touching ``sys.modules``, reloading a module, changing a function in place
(``__code__``, ``__defaults__``, closure cells), reaching into the interpreter (``gc``,
``ctypes``, frames, trace and profile functions, IPython's event hooks), or ending its own
process. It only reads, and its findings are notes for an instructor, never a verdict: the
status ``tampered`` comes from what the tamper guard (:mod:`llmcourse.grading.guard`)
observed while the code ran. Settings that honest code changes and that cannot change a
grade (``torch.backends.cudnn.deterministic = True``, say) are not noted.
"""
from __future__ import annotations

import ast
import threading

#: names whose attributes the tests rely on, as learners usually import them
GUARDED_ROOTS = {"torch", "numpy", "np", "builtins", "__builtins__", "llmcourse", "F", "nn", "math", "sys"}
#: attribute assignments under these prefixes are settings, not tampering
HARMLESS = ("torch.backends.",)
EXITS = {("os", "_exit"), ("os", "kill"), ("os", "abort"), ("sys", "exit"), ("os", "killpg")}
#: attributes whose assignment changes a function or a closure in place
IN_PLACE = {"__code__", "__defaults__", "__kwdefaults__", "__closure__", "cell_contents", "__globals__",
            "__dict__", "__class__", "__bases__"}
#: calls that reach into the interpreter, below what the tests see
INTROSPECTION = {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._getframe", "sys.settrace",
                 "sys.setprofile", "inspect.currentframe", "inspect.stack", "threading.settrace",
                 "threading.setprofile", "ctypes.pythonapi", "ctypes.cast", "importlib.reload"}
PREFIX = "source scan: "
_PARSE_LOCK = threading.Lock()


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("get_ipython", "vars"):
        parts.append(f"{node.func.id}()")
        return ".".join(reversed(parts))
    return None


class _Scanner:
    """Walks the cells of one notebook in order, remembering what names llmcourse was imported as."""

    def __init__(self):
        self.llmcourse_names: set[str] = {"llmcourse"}

    def _imports(self, tree) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "llmcourse":
                        self.llmcourse_names.add((a.asname or a.name).split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "llmcourse":
                for a in node.names:
                    self.llmcourse_names.add(a.asname or a.name)

    def _guarded(self, name: str | None) -> str | None:
        """What kind of guarded thing ``name`` (dotted) is an attribute of, if any."""
        if not name or name.startswith(HARMLESS):
            return None
        root = name.split(".")[0]
        if root in self.llmcourse_names:
            return "llmcourse"
        if root in GUARDED_ROOTS:
            return root
        return None

    def scan(self, source: str) -> list[str]:
        lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            with _PARSE_LOCK:       # CPython 3.11 < 3.11.8: ast.parse in two threads at once can raise
                tree = ast.parse("\n".join(lines))     # SystemError (gh-106905); batch.grade prepares in threads
        except SyntaxError as exc:
            return [f"syntax error at line {exc.lineno}: {exc.msg}"]
        self._imports(tree)
        found: list[str] = []

        def note(text, node):
            found.append(f"{PREFIX}{text} (line {node.lineno})")

        for node in ast.walk(tree):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif isinstance(node, ast.Delete):
                targets = node.targets
            for t in targets:
                if isinstance(t, ast.Attribute):
                    name = _dotted(t)
                    kind = self._guarded(_dotted(t.value)) if name else None
                    if t.attr in IN_PLACE:
                        note(f"changes {name or t.attr} in place", node)
                    elif kind == "llmcourse":
                        note(f"rebinds {name}, an attribute of a llmcourse module", node)
                    elif kind:
                        note(f"rebinds {name}", node)
                elif isinstance(t, ast.Subscript):
                    name = _dotted(t.value)
                    if name and (name.endswith(("__dict__", "vars()")) or name in ("sys.modules", "__builtins__")):
                        note(f"writes into {name}", node)
            if isinstance(node, ast.Attribute) and _dotted(node) == "sys.modules":
                note("touches sys.modules", node)
            if isinstance(node, ast.Call):
                fn = _dotted(node.func)
                if fn in ("setattr", "delattr") and node.args:
                    obj = _dotted(node.args[0])
                    if self._guarded(obj):
                        note(f"{fn}({obj}, ...)", node)
                if fn and (fn in INTROSPECTION or fn.startswith(("gc.", "ctypes."))):
                    note(f"calls {fn}", node)
                if fn and (fn.startswith("get_ipython().events") or fn.endswith("events.unregister")):
                    note("changes IPython's event hooks", node)
                if fn and tuple(fn.split(".")[-2:]) in EXITS:
                    found.append(f"{PREFIX}ends its own process: {fn} (line {node.lineno})")
        return list(dict.fromkeys(found))


def scan_source(source: str) -> list[str]:
    """Findings in one cell's Python source (IPython magics are skipped)."""
    return _Scanner().scan(source)


def scan_notebook(nb) -> list[str]:
    """Findings in the code cells a learner may edit (test cells are restored by nbgrader)."""
    scanner = _Scanner()
    out = []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("grade") and not meta.get("solution")):
            continue
        out += [f"cell {i}: {f}" for f in scanner.scan(cell.source)]
    return out
