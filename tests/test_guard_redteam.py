"""Generated red team of the tamper guard, graded by ``llmcourse grade`` in ONE batch.

What is attacked, generated rather than listed by hand: every name, function, closure
cell, class attribute, list, dict and object of the grader's in-kernel modules (the guard,
``common``, each assignment's checks, the two package modules) and of the ``llmcourse``
modules the checks import (``llmcourse`` and its submodules loaded with the checks). The
code that enumerates and attacks them, :data:`RT_LIB`, runs inside the submissions' kernels;
the test runs the same code in a fresh interpreter to know what must have been covered,
so a function added to a check module tomorrow is attacked tomorrow.

The course: one synthetic assignment, ``redteam``, made of the solution and hidden test
cells of all four assignments (attention, masking, lora, ppo), so one batch grades every
assignment's checks. Every tampering submission has the same wrong code, :data:`WRONG`,
chosen to earn a known small amount (:data:`WRONG_SCORE`: 6 points in attention, 3 in
lora, 2 in ppo, 0 in masking; its ``causal_mask`` is wrong). Canaries (the solutions) must
keep full marks.

Methods (each applied to every name, function, ... of its groups):

- in a cell (the first solution cell; the guard's cell hooks must undo it before the tests):
  ``attr-<group>`` rebinds every name of the group's modules and every attribute of their
  classes with ``mod.name = fake`` (one submission per group: guard, common, each
  assignment's checks, the packages, the other llmcourse modules, so that a group whose
  fakes break the kernel cannot hide another's); ``setattr`` and ``dict`` do the same for
  all groups at once through ``setattr`` and ``module.__dict__``; ``reload`` runs
  ``importlib.reload`` on every module; ``inplace-funcs`` changes every function in place
  (``__code__`` to a no-op that "passes", ``__defaults__``, ``__kwdefaults__``,
  ``__dict__``), ``inplace-cells`` every closure cell (the checks' wrapped functions among
  them), ``inplace-objects`` every list, dict and set (cleared), every object's attributes
  and every class attribute (through ``type.__setattr__``);
- during a call (``during-*``): the same from inside the learner's ``causal_mask`` while
  ``check_causal_mask`` calls it. Here ``causal_mask`` is *correct*, so a tampering the
  guard missed would show as 2 points more than :data:`WRONG_SCORE`.

The fakes return success (a check becomes ``print("ok")``, ``close`` returns True,
``call_learner`` calls the function without any watching, lists of test cases become
empty). Grouping many names into one submission loses nothing: the submission's last cell
(added by the learner, as any learner may) checks, name by name, that the guard reported
the change (its events) and put the original back, by identity and by value, and prints a
report that the test reads. So each name is checked separately, and a regression for any
one of them (not snapshotted, not restored, not reported) fails the test with that name;
and a score other than exactly :data:`WRONG_SCORE` fails it too. 18 tampering submissions
and 2 canaries: about 90 s of two workers.

Also checked: every submission has status ``tampered`` with a message; the canaries have
status ``graded``, full marks and no note; ``nbgrader export`` works afterwards.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from nbgrader_harness import REPO, grade_id, solution_sources

from llmcourse.grading import batch, sandbox

pytestmark = pytest.mark.slow

A = "redteam"
SOURCES = ("attention", "masking", "lora", "ppo")
SETUP = "import math\n\nimport torch\nimport torch.nn as nn\n\ntorch.manual_seed(0)\n"

#: the wrong code every tampering submission has (the other solution cells keep the stub)
WRONG = {
    "sdpa": ("import torch\n"
             "def scaled_dot_product_attention(q, k, v, mask=None):\n"
             "    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)   # no 1/sqrt(dk), mask ignored\n"
             "    return w @ v, w\n"),
    "masks": ("def causal_mask(T, device=None):\n"
              "    return torch.ones(T, T, dtype=torch.bool, device=device).triu()   # transposed\n"),
    "lora_linear": None,            # filled in below: the solution with scaling = alpha instead of alpha / r
    "entropy": ("def categorical_entropy(logits):\n"
                "    p = torch.softmax(logits, -1)\n"
                "    return -(p * p.log()).sum(-1)          # nan for large logits\n"),
}
#: what WRONG earns, per part (all other parts: 0): shapes, weights sum and gradients of
#: the unscaled attention; LoRA's dropout (r = 1, where alpha = alpha / r) and gradients;
#: the entropy on ordinary logits
WRONG_PARTS = {"test_sdpa_shapes": 2, "test_sdpa_weights_sum": 2, "test_sdpa_grad": 2,
               "test_lora_dropout": 2, "test_lora_grad": 1, "test_entropy_values": 2}
WRONG_SCORE = sum(WRONG_PARTS.values())

# ----------------------------------------------------------------------------- the attacks, run in the kernel

RT_LIB = r'''
import builtins as _rt_builtins, importlib as _rt_importlib, json as _rt_json, sys as _rt_sys, types as _rt_types

RT_GROUPS = ("guard", "common", "attention", "masking", "lora", "ppo", "packages", "llmcourse")
RT_MISSING = object()
RT_RECORDS = []
RT_CALLED = []


def rt_modules(group):
    if group == "guard":
        names = ["llmcourse.grading.guard"]
    elif group == "common":
        names = ["llmcourse.grading.common"]
    elif group in ("attention", "masking", "lora", "ppo"):
        names = ["llmcourse.grading.checks." + group]
    elif group == "packages":
        names = ["llmcourse.grading", "llmcourse.grading.checks"]
    else:
        names = sorted(n for n in _rt_sys.modules if (n == "llmcourse" or n.startswith("llmcourse."))
                       and not n.startswith("llmcourse.grading"))
    return [(n, _rt_sys.modules[n]) for n in names]


def rt_fake(*a, **k):
    print("ok: faked")
    return True


def rt_bypass(fn, *a, what=None, forbid=None, **k):
    return fn(*a, **k)


class RtFake:
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return True

    def __getattr__(self, name):
        return rt_fake


RT_SPECIAL = {"call_learner": rt_bypass, "close": lambda *a, **k: True, "require_tensor": lambda x, *a, **k: x,
              "diagnose": lambda *a, **k: "", "check_and_restore": lambda *a, **k: [], "run": lambda *a, **k: [],
              "events": lambda *a, **k: [], "_core": lambda *a, **k: [], "graded": lambda *a, **k: (lambda f: f)}


def rt_fake_for(name, value):
    fake = _rt_fake_for(name, value)
    return RtFake() if fake is value else fake          # a change the guard cannot miss by identity


def _rt_fake_for(name, value):
    if name in RT_SPECIAL:
        return RT_SPECIAL[name]
    if isinstance(value, type):
        return RtFake
    if callable(value):
        return rt_fake
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return type(value)()
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return 0
    return None


def rt_names(groups):
    """(module name, module, name) of every name of the groups' modules but the dunders."""
    return [(m, mod, n) for g in groups for m, mod in rt_modules(g) for n in list(vars(mod))
            if not (n.startswith("__") and n.endswith("__"))]


def rt_classes(groups):
    out, todo = [], [v for g in groups for m, mod in rt_modules(g) for v in vars(mod).values()
                     if isinstance(v, type) and v.__module__ == m]
    while todo:
        c = todo.pop(0)
        if c not in out:
            out.append(c)
            todo += [v for v in vars(c).values() if isinstance(v, type) and v.__module__ == c.__module__]
    return out


def rt_class_attrs(groups):
    """(class, attribute, label) of every attribute of the groups' classes, labels made first."""
    return [(c, k, f"{c.__module__}.{c.__qualname__}.{k}") for c in rt_classes(groups) for k in list(vars(c))
            if k not in ("__dict__", "__weakref__", "__slotnames__")]   # (copy's cache: not guarded)


def rt_label(f, via=None):
    return f"{f.__module__}.{f.__qualname__}" + (f" (inside {via})" if via else "")


def rt_functions(groups):
    """(label, function) of the functions defined in the groups' modules and classes (methods,
    properties), and of the functions found in their closure cells (a check's wrapped function)."""
    todo = []
    for g in groups:
        for m, mod in rt_modules(g):
            todo += [(v, None) for v in vars(mod).values() if isinstance(v, _rt_types.FunctionType) and v.__module__ == m]
    for c in rt_classes(groups):
        for v in vars(c).values():
            for f in ([v.__func__] if isinstance(v, (staticmethod, classmethod)) else
                      [v.fget, v.fset, v.fdel] if isinstance(v, property) else [v]):
                if isinstance(f, _rt_types.FunctionType) and f.__module__ == c.__module__:
                    todo.append((f, None))
    out, seen = [], set()
    while todo:
        f, via = todo.pop(0)
        if id(f) in seen:
            continue
        seen.add(id(f))
        label = rt_label(f, via)
        out.append((label, f))
        for cell in f.__closure__ or ():
            try:
                v = cell.cell_contents
            except ValueError:
                continue
            if isinstance(v, _rt_types.FunctionType):
                todo.append((v, label))
    return out


def rt_cells(groups):
    """(label of the function, cell) for every closure cell of those functions."""
    out = []
    for label, f in rt_functions(groups):
        for cell in f.__closure__ or ():
            try:
                cell.cell_contents
            except ValueError:
                continue
            out.append((label, cell))
    return out


def rt_objects(groups):
    """(labels, value) of the module-level lists, dicts, sets and llmcourse objects of the groups'
    modules, once each (an object imported into several modules has several labels)."""
    out, index = [], {}
    for m, mod, n in rt_names(groups):
        v = vars(mod)[n]
        if type(v) in (list, dict, set) or (type(v).__module__ or "").startswith("llmcourse") \
                and not isinstance(v, (type, _rt_types.FunctionType, _rt_types.ModuleType)) and hasattr(v, "__dict__"):
            suffix = "" if type(v) in (list, dict, set) else ".__dict__"
            if id(v) in index:
                index[id(v)][0].append(f"{m}.{n}{suffix}")
            else:
                index[id(v)] = ([f"{m}.{n}{suffix}"], v)
                out.append(index[id(v)])
    return out


def rt_record(label, kind, when, restored, prefixes=None, suffix=""):
    RT_RECORDS.append({"label": label, "kind": kind, "when": when, "restored": restored,
                       "prefixes": [p + ("" if suffix else " was ") for p in (prefixes or [label])],
                       "suffix": suffix})


def rt_noop_code(f):
    names = f.__code__.co_freevars
    if not names:
        return rt_fake.__code__
    src = ("def _outer():\n" + "".join(f"    {n} = None\n" for n in names) + "    def _inner(*a, **k):\n"
           + "        (" + ", ".join(names) + ",)\n        print('ok: faked')\n        return True\n    return _inner\n")
    ns = {}
    exec(src, ns)
    return ns["_outer"]().__code__


def rt_widen(v):
    return 1e9 if isinstance(v, float) else (not v) if isinstance(v, bool) else v


def rt_attack(method, groups, when):
    """Apply one attack to everything of ``groups``; remember how to check each change."""
    vd = _rt_builtins.vars
    if method in ("attr", "setattr", "dict"):
        class_attrs = rt_class_attrs(groups) if method != "dict" else []
        for m, mod, n in rt_names(groups):
            orig, d = vd(mod)[n], vd(mod)
            fake = rt_fake_for(n, orig)
            if method == "attr":
                exec(f"_m.{n} = _f", {"_m": mod, "_f": fake})
            elif method == "setattr":
                setattr(mod, n, fake)
            else:
                mod.__dict__[n] = fake
            rt_record(f"{m}.{n}", "name", when, lambda d=d, n=n, o=orig: d.get(n, RT_MISSING) is o)
        for c, k, label in class_attrs:
            proxy, orig = vd(c), vd(c)[k]
            try:
                if method == "attr" and k.isidentifier():
                    exec(f"_c.{k} = _f", {"_c": c, "_f": rt_fake_for(k, orig)})
                else:
                    setattr(c, k, rt_fake_for(k, orig))
            except (TypeError, AttributeError):
                continue
            rt_record(label, "class attribute", when, lambda p=proxy, k=k, o=orig: p.get(k, RT_MISSING) is o)
    elif method == "reload":
        mods = [(m, mod) for g in groups for m, mod in rt_modules(g)]
        saved = {m: dict(vd(mod)) for m, mod in mods}
        for m, mod in mods:
            _rt_importlib.reload(mod)
        for m, mod in mods:
            d = vd(mod)
            rt_record(m, "reloaded module", when,
                      lambda d=d, s=saved[m]: all(d.get(k, RT_MISSING) is v for k, v in s.items()),
                      prefixes=[m + "."], suffix=" was replaced")
    elif method == "inplace-funcs":
        for label, f in rt_functions(groups):
            code, dflt, kw, fd = f.__code__, f.__defaults__, f.__kwdefaults__, f.__dict__
            kw_items, fd_items = list((kw or {}).items()), list(fd.items())
            f.__code__ = rt_noop_code(f)
            if dflt is not None:
                f.__defaults__ = tuple(rt_widen(v) for v in dflt)
            if kw:
                for k in list(kw):
                    kw[k] = rt_widen(kw[k])
                kw["rt_extra"] = True
            fd["rt_tampered"] = True
            rt_record(label, "function in place", when,
                      lambda f=f, c=code, d=dflt, kw=kw, ki=kw_items, fd=fd, fi=fd_items:
                      f.__code__ is c and f.__defaults__ is d and f.__kwdefaults__ is kw and f.__dict__ is fd
                      and list((kw or {}).items()) == ki and list(fd.items()) == fi)
    elif method == "inplace-cells":
        for label, cell in rt_cells(groups):
            orig = cell.cell_contents
            cell.cell_contents = rt_fake_for("", orig)
            rt_record(label, "closure cell", when, lambda c=cell, o=orig: c.cell_contents is o,
                      suffix="(a variable of its closure)")
    elif method == "inplace-objects":
        class_attrs = rt_class_attrs(groups)
        for labels, v in rt_objects(groups):
            if type(v) in (list, dict, set):
                items = list(v.items()) if type(v) is dict else list(v)
                v.clear()
                rt_record(labels[0], "container", when,
                          lambda v=v, i=items: (list(v.items()) if type(v) is dict else list(v)) == i, prefixes=labels)
            else:
                d = vd(v)
                items = list(d.items())
                for k in list(d):
                    d[k] = rt_fake_for(k, d[k])
                rt_record(labels[0], "object", when, lambda d=d, i=items: list(d.items()) == i, prefixes=labels)
        for c, k, label in class_attrs:
            proxy, orig = vd(c), vd(c)[k]
            try:
                type.__setattr__(c, k, rt_fake_for(k, orig))
            except (TypeError, AttributeError):
                continue
            rt_record(label, "class attribute", when, lambda p=proxy, k=k, o=orig: p.get(k, RT_MISSING) is o)
    return len(RT_RECORDS)


def rt_plan(method, groups):
    """Everything one attack would touch (labels by kind), without touching it."""
    labels = {}
    add = lambda kind, label: labels.setdefault(kind, []).append(label)  # noqa: E731
    if method in ("attr", "setattr", "dict"):
        for m, mod, n in rt_names(groups):
            add("name", f"{m}.{n}")
        if method != "dict":
            for c, k, label in rt_class_attrs(groups):
                add("class attribute", label)
    elif method == "reload":
        for g in groups:
            for m, mod in rt_modules(g):
                add("reloaded module", m)
    elif method == "inplace-funcs":
        for label, f in rt_functions(groups):
            add("function in place", label)
    elif method == "inplace-cells":
        for label, cell in rt_cells(groups):
            add("closure cell", label)
    elif method == "inplace-objects":
        for labels_, v in rt_objects(groups):
            add("container" if type(v) in (list, dict, set) else "object", labels_[0])
        for c, k, label in rt_class_attrs(groups):
            add("class attribute", label)
    return labels


def rt_report():
    """Name by name: did the guard report the change (at the right moment) and put the original back?"""
    import llmcourse.grading.guard as g
    events = g.events()
    out = {"records": len(RT_RECORDS), "called": len(RT_CALLED), "unrestored": [], "undetected": [], "labels": {}}
    for r in RT_RECORDS:
        out["labels"].setdefault(r["kind"], []).append(r["label"])
        try:
            ok = r["restored"]()
        except Exception as e:
            ok = False
        if not ok:
            out["unrestored"].append(r["kind"] + " " + r["label"])
        seen = any(s.startswith(tuple(r["prefixes"])) and s.endswith(r["suffix"])
                   for where, found in events if (where in ("after a cell", "before a cell")) == (r["when"] == "before")
                   for s in found)
        if not seen:
            out["undetected"].append(r["kind"] + " " + r["label"])
    print("REDTEAM-REPORT " + _rt_json.dumps(out))
'''

#: student -> (method, groups, when)
GROUPS = ("guard", "common", "attention", "masking", "lora", "ppo", "packages", "llmcourse")
PLANS = {
    **{f"attr_{g}": ("attr", (g,), "before") for g in GROUPS},
    "setattr_all": ("setattr", GROUPS, "before"),
    "dict_all": ("dict", GROUPS, "before"),
    "reload_all": ("reload", GROUPS, "before"),
    "inplace_funcs": ("inplace-funcs", GROUPS, "before"),
    "inplace_cells": ("inplace-cells", GROUPS, "before"),
    "inplace_objects": ("inplace-objects", GROUPS, "before"),
    "during_attr": ("attr", GROUPS, "during"),
    "during_dict": ("dict", GROUPS, "during"),
    "during_reload": ("reload", GROUPS, "during"),
    "during_inplace": ("inplace-funcs+inplace-cells+inplace-objects", GROUPS, "during"),
}
CANARIES = ("canary_1", "canary_2")
REPORT_CELL = "rt_report()\n"


def _lora_wrong() -> str:
    src = solution_sources("lora")["lora_linear"]
    assert "self.scaling = alpha / r" in src
    return src.replace("self.scaling = alpha / r", "self.scaling = alpha")


# ----------------------------------------------------------------------------- the course


def build_assignment(root: Path, name: str = A) -> Path:
    """A course at ``root`` whose assignment ``name`` holds the solution and hidden test cells of
    all four assignments; returns the released notebook's path (generated in the course)."""
    os.environ.update(PATH=sandbox.env_with_venv()["PATH"])     # nbgrader calls `alembic` from PATH
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    cells, meta = [nbformat.v4.new_code_cell(SETUP)], None
    for a in SOURCES:
        nb = nbformat.read(REPO / "solutions" / a / f"{a}.ipynb", as_version=4)
        meta = meta or nb.metadata
        for c in nb.cells:
            m = c.metadata.get("nbgrader", {})
            if c.cell_type == "code" and (m.get("solution") or (m.get("grade") and m.get("points"))):
                cells.append(copy.deepcopy(c))
    (root / "solutions" / name).mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=meta), root / "solutions" / name / f"{name}.ipynb")
    batch.generate_assignment(root, name, root / "release")
    return root / "release" / name / f"{name}.ipynb"


def all_solutions() -> dict[str, str]:
    return {k: v for a in SOURCES for k, v in solution_sources(a).items()}


def submission(released: Path, sources: dict[str, str], extra_cells=()) -> nbformat.NotebookNode:
    nb = nbformat.read(released, as_version=4)
    known = {grade_id(c) for c in nb.cells}
    assert set(sources) <= known, set(sources) - known
    for cell in nb.cells:
        if grade_id(cell) in sources:
            cell.source = sources[grade_id(cell)]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in extra_cells]
    return nb


def write_submissions(root: Path, subs: dict[str, nbformat.NotebookNode], name: str = A) -> None:
    for student, nb in subs.items():
        folder = root / "submitted" / student / name
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{name}.ipynb")


def autograded_text(root: Path, student: str, name: str = A) -> str:
    nb = nbformat.read(root / "autograded" / student / name / f"{name}.ipynb", as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("output_type") == "stream")


def tamper_submission(released: Path, method: str, groups: tuple, when: str) -> nbformat.NotebookNode:
    wrong = dict(WRONG, lora_linear=_lora_wrong())
    attacks = "".join(f"rt_attack({m!r}, {groups!r}, {when!r})\n" for m in method.split("+"))
    if when == "before":
        first = RT_LIB + "\n" + attacks + "\n" + wrong["sdpa"]
        return submission(released, {**wrong, "sdpa": first}, [REPORT_CELL])
    sol = solution_sources("masking")["masks"]
    correct_causal = sol[:sol.index("def padding_mask")]
    tampering = correct_causal.replace('    """Boolean (T, T), True where j <= i."""\n',
                                       '    """Boolean (T, T), True where j <= i."""\n'
                                       '    RT_CALLED.append(T)\n'
                                       + "".join("    " + line + "\n" for line in attacks.splitlines()))
    assert "RT_CALLED" in tampering
    return submission(released, {**wrong, "sdpa": RT_LIB + "\n" + wrong["sdpa"], "masks": tampering}, [REPORT_CELL])


def expected_plan() -> dict:
    """What each attack must cover, from the same code run in a fresh interpreter after the
    guard's imports (so what a submission's kernel sees)."""
    code = (RT_LIB + "\nimport json\nimport llmcourse.grading.guard as g\ng._import_guarded()\n"
            "plans = {}\n"
            f"for student, (method, groups, when) in {PLANS!r}.items():\n"
            "    merged = {}\n"
            "    for m in method.split('+'):\n"
            "        for kind, labels in rt_plan(m, groups).items():\n"
            "            merged.setdefault(kind, []).extend(labels)\n"
            "    plans[student] = merged\n"
            "print(json.dumps(plans))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


LIMITS = sandbox.Limits(cpu_seconds=300, address_space_mb=4096, file_size_mb=64, processes=96, wall_seconds=600)


@pytest.fixture(scope="module")
def graded():
    root = Path(tempfile.mkdtemp(prefix="llmcourse_guard_redteam_"))
    try:
        released = build_assignment(root)
        subs = {student: tamper_submission(released, *plan) for student, plan in PLANS.items()}
        subs.update({c: submission(released, all_solutions()) for c in CANARIES})
        write_submissions(root, subs)
        t0 = time.perf_counter()
        results = {r.student: r for r in batch.grade(root, A, workers=2, limits=LIMITS, cell_timeout=60,
                                                     progress=False)}
        seconds = time.perf_counter() - t0
        print(f"\ngenerated red team: {len(subs)} submissions graded in {seconds:.0f} s")
        reports = {}
        for student in PLANS:
            line = next((ln for ln in autograded_text(root, student).splitlines()
                         if ln.startswith("REDTEAM-REPORT ")), None)
            reports[student] = json.loads(line.split(" ", 1)[1]) if line else None
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        export = subprocess.run([sys.executable, "-m", "nbgrader", "export"], cwd=root, env=env,
                                capture_output=True, text=True)
        exported = list(csv.DictReader(open(root / "grades.csv"))) if export.returncode == 0 else []
        yield dict(results=results, reports=reports, export=export, exported=exported, seconds=seconds,
                   full=results[CANARIES[0]].max_score)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def plan():
    return expected_plan()


def test_canaries_keep_full_marks(graded):
    for c in CANARIES:
        r = graded["results"][c]
        assert r.status == "graded" and r.score == r.max_score == graded["full"], (r.status, r.score, r.parts)
        assert not any("tampering" in n for n in r.notes), r.notes


def test_every_tampering_submission_earns_exactly_what_its_wrong_code_earns(graded):
    problems = []
    for student in PLANS:
        r = graded["results"][student]
        got = {p.grade_id: p.score for p in r.parts if p.score}
        if r.score != WRONG_SCORE or got != WRONG_PARTS:
            problems.append(f"{student}: {r.score} (expected {WRONG_SCORE}): {got}")
        if r.status != "tampered":
            problems.append(f"{student}: status {r.status}")
        text = " ".join([p.message for p in r.parts] + r.notes).lower()
        if "tampering detected" not in text:
            problems.append(f"{student}: no 'tampering detected' message")
    assert not problems, "\n".join(problems)


def test_during_a_call_the_part_gets_nothing_and_says_why(graded):
    for student, (_, _, when) in PLANS.items():
        if when != "during":
            continue
        part = next(p for p in graded["results"][student].parts if p.grade_id == "test_causal_mask")
        assert part.score == 0 and part.status == "tampered", (student, part)
        assert "tampering detected: while causal_mask ran" in part.message, (student, part.message)


def test_each_name_was_reported_and_put_back(graded):
    problems = []
    for student, report in graded["reports"].items():
        if report is None:
            problems.append(f"{student}: no report (its last cell did not run)")
            continue
        if PLANS[student][2] == "during" and not report["called"]:
            problems.append(f"{student}: causal_mask was never called")
        for what in ("unrestored", "undetected"):
            if report[what]:
                problems.append(f"{student}: {len(report[what])} {what}: {report[what][:8]}")
    assert not problems, "\n".join(problems)


def test_every_name_function_and_class_attribute_was_attacked(graded, plan):
    """The reports cover what the same enumeration finds in a fresh interpreter, and it is not small."""
    for student, expected in plan.items():
        got = graded["reports"][student]["labels"]
        for kind, labels in expected.items():
            assert sorted(got.get(kind, [])) == sorted(labels), (student, kind, set(labels) ^ set(got.get(kind, [])))
    every = {kind: set() for kind in ("name", "function in place", "closure cell", "class attribute")}
    for expected in plan.values():
        for kind in every:
            every[kind] |= set(expected.get(kind, []))
    print({k: len(v) for k, v in every.items()})
    assert len(every["name"]) > 300 and len(every["function in place"]) > 150
    assert len(every["class attribute"]) > 100 and len(every["closure cell"]) > 50
    assert any(n.startswith("llmcourse.grading.guard.") for n in every["name"])
    assert "llmcourse.grading.common.call_learner" in every["function in place"]


def test_nbgrader_export_still_works(graded):
    assert graded["export"].returncode == 0, graded["export"].stderr[-2000:]
    assert {r["student_id"] for r in graded["exported"]} >= set(PLANS) | set(CANARIES)
