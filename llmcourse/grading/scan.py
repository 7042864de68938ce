"""Read a submission's code before running it, for what the feedback should mention.

The scan reports code that rebinds what the hidden tests rely on (attributes of
``torch``, ``numpy``, ``builtins``, ``llmcourse``, entries of ``sys.modules``), reaches
for IPython's event machinery (where the tamper guard lives), or ends its own process.
It only reads; the guard (:mod:`llmcourse.grading.guard`) and the sandbox do the
defending. Its findings go into the grade's notes, so an instructor sees them.
"""
from __future__ import annotations

import ast

GUARDED_ROOTS = {"torch", "numpy", "np", "builtins", "__builtins__", "llmcourse", "F", "nn", "math"}
EXITS = {("os", "_exit"), ("os", "kill"), ("os", "abort"), ("sys", "exit"), ("os", "killpg")}


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "get_ipython":
        parts.append("get_ipython()")
        return ".".join(reversed(parts))
    return None


def scan_source(source: str) -> list[str]:
    """Findings in one cell's Python source (IPython magics are skipped)."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError as exc:
        return [f"syntax error at line {exc.lineno}: {exc.msg}"]
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            if isinstance(t, ast.Attribute):
                name = _dotted(t)
                if name and name.split(".")[0] in GUARDED_ROOTS:
                    found.append(f"tampering: rebinds {name} (line {node.lineno})")
            elif isinstance(t, ast.Subscript):
                name = _dotted(t.value)
                if name in ("sys.modules", "__builtins__", "builtins.__dict__"):
                    found.append(f"tampering: writes into {name} (line {node.lineno})")
        if isinstance(node, ast.Call):
            fn = _dotted(node.func)
            if fn in ("setattr", "delattr") and node.args:
                obj = _dotted(node.args[0])
                if obj and obj.split(".")[0] in GUARDED_ROOTS:
                    found.append(f"tampering: {fn}({obj}, ...) (line {node.lineno})")
            if fn and (fn.startswith("get_ipython().events") or fn.endswith("events.unregister")):
                found.append(f"tampering: changes IPython's event hooks (line {node.lineno})")
            if fn and tuple(fn.split(".")[-2:]) in EXITS:
                found.append(f"ends its own process: {fn} (line {node.lineno})")
    return found


def scan_notebook(nb) -> list[str]:
    """Findings in the code cells a learner may edit (test cells are restored by nbgrader)."""
    out = []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("grade") and not meta.get("solution")):
            continue
        out += [f"cell {i}: {f}" for f in scan_source(cell.source)]
    return out
