"""The tamper guard and the source scan, without nbgrader (fast).

The guard is installed in a fresh interpreter (a subprocess: installing it here would
snapshot pytest's own state), which runs one attack after another and reports, as JSON,
what ``check_and_restore`` found and whether the original is back. ``call_learner`` and
``graded`` are tried there too, with the guard in place: tampering during a call, during a
check outside any call (a returned object's ``__iter__``), a temporary change that is
undone before the call returns, the profiler switched off, a torch function mode left
active, the grader's own helpers called. The scan's tests check that its findings are
notes that never say "tampering detected" and that honest settings get none.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmcourse.grading.scan import scan_notebook, scan_source

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import importlib, json, sys, types
import torch, torch.nn as nn, torch.nn.functional as F
from llmcourse.grading import guard
G = guard.install()
import llmcourse.grading.common as C
import llmcourse.grading.checks.attention as A
import llmcourse.grading.checks.lora as L
make, code_ = G[0], G[1]


def look(where):
    """What the cell hooks do: the comparison, run from G, which no attack can reach here."""
    return make(code_, {"__builtins__": {}})(G, where)


out = {"clean": look("start")}

def attack(name, do, restored):
    try:
        do()
    except Exception as e:
        out[name] = {"error": repr(e)}
        return
    found = look(name)
    out[name] = {"found": found, "restored": bool(restored()), "again": look(name)}

close, code, dflt = C.close, C.close.__code__, C.close.__defaults__
attack("rebind", lambda: setattr(C, "close", lambda *a, **k: True), lambda: C.close is close)
attack("code", lambda: setattr(close, "__code__", (lambda *a, **k: True).__code__), lambda: close.__code__ is code)
attack("defaults", lambda: setattr(close, "__defaults__", (1e9, 1e9)), lambda: close.__defaults__ is dflt)
kw = A._attention_variant.__kwdefaults__
kw_items = list(kw.items())
attack("kwdefaults", lambda: kw.update(scale=1.0), lambda: list(A._attention_variant.__kwdefaults__.items()) == kw_items)
wrapper = A.check_sdpa_values
cell = wrapper.__closure__[0]
inner = cell.cell_contents
inner_code = inner.__code__
attack("closure", lambda: setattr(cell, "cell_contents", lambda fn: None), lambda: cell.cell_contents is inner)
attack("inner code", lambda: setattr(inner, "__code__", (lambda fn: None).__code__), lambda: inner.__code__ is inner_code)
fwd = nn.Linear.forward
attack("torch class", lambda: setattr(nn.Linear, "forward", lambda self, x: x), lambda: nn.Linear.forward is fwd)
attack("class added", lambda: setattr(torch.Tensor, "rt_added", 1), lambda: not hasattr(torch.Tensor, "rt_added"))
toy_fwd = L.ToyLM.forward
attack("check class", lambda: setattr(L.ToyLM, "forward", lambda self, x: x), lambda: L.ToyLM.forward is toy_fwd)
batches = list(A.BATCHES)
attack("list", lambda: A.BATCHES.clear(), lambda: A.BATCHES == batches)
forbidden = dict(A.NO_LIBRARY.builtins)
attack("object dict", lambda: A.NO_LIBRARY.builtins.clear(), lambda: A.NO_LIBRARY.builtins == forbidden)
class Fake(type(A.NO_LIBRARY)):
    pass
attack("object class", lambda: setattr(A.NO_LIBRARY, "__class__", Fake), lambda: type(A.NO_LIBRARY) is not Fake)
class EvilModule(types.ModuleType):
    def __getattribute__(self, name):
        return lambda *a, **k: print("ok")
attack("module class", lambda: setattr(A, "__class__", EvilModule), lambda: type(A) is types.ModuleType)
attack("sys.modules", lambda: sys.modules.__setitem__("llmcourse.grading.checks.attention", types.ModuleType("x")),
       lambda: sys.modules["llmcourse.grading.checks.attention"] is A)
attack("shadowing", lambda: setattr(A, "isinstance", lambda *a: True), lambda: "isinstance" not in vars(A))
attack("builtin", lambda: setattr(__import__("builtins"), "len", lambda x: 0), lambda: len([1]) == 1)
attack("trace", lambda: sys.settrace(lambda *a: None), lambda: sys.gettrace() is None)
attack("reload", lambda: importlib.reload(C), lambda: C.close is close and C._GUARD is G)
attack("guard reload", lambda: importlib.reload(guard), lambda: guard._G is G)
attack("non-str key", lambda: vars(A).__setitem__(42, 1), lambda: 42 not in vars(A))
attack("hook slot", lambda: setattr(C, "_GUARD", None), lambda: C._GUARD is G)

def expect(name, fn, *args, **kw):
    try:
        fn(*args, **kw)
        out[name] = "passed"
    except AssertionError as e:
        out[name] = str(e)

q = torch.randn(2, 3, 4)

def during(q, k, v, mask=None):
    C.close.__code__ = (lambda *a, **k: True).__code__
    return q, q
expect("during call", C.call_learner, during, q, q, q, what="during")

def temporary(q, k, v, mask=None):
    saved = dict(A.NO_LIBRARY.builtins)
    A.NO_LIBRARY.builtins.clear()
    out = F.scaled_dot_product_attention(q, k, v)
    A.NO_LIBRARY.builtins.update(saved)
    return out
expect("temporary", C.call_learner, temporary, q, q, q, what="temporary", forbid=A.NO_LIBRARY)

def profiler_off(q, k, v, mask=None):
    sys.setprofile(None)
    return F.scaled_dot_product_attention(q, k, v)
expect("profiler off", C.call_learner, profiler_off, q, q, q, what="profiler off", forbid=A.NO_LIBRARY)

from torch.overrides import TorchFunctionMode
class Liar(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))
def leave_mode(q, k, v, mask=None):
    Liar().__enter__()
    return q
expect("mode left", C.call_learner, leave_mode, q, q, q, what="mode left")
out["modes after"] = torch._C._len_torch_function_stack()

def helper(q, k, v, mask=None):
    return A._reference_sdpa(q, k, v, mask)
expect("grader helper", C.call_learner, helper, q, q, q, what="helper")
expect("grader helper via map", C.call_learner, lambda: list(map(A._split_reference, [torch.randn(1, 2, 4)], [2])),
       what="map")
toy = L._toy(torch.Generator().manual_seed(0))
expect("grader model", C.call_learner, lambda m: m(torch.zeros(1, 3, dtype=torch.long)), toy, what="toy")

class Sneaky(list):
    def __iter__(self):
        C.close.__code__ = (lambda *a, **k: True).__code__
        return super().__iter__()
@C.graded("a check that unpacks what the learner returns")
def check_unpack(fn):
    out_, w = C.call_learner(fn, what="unpack")
    assert C.close(out_, w + 1), "wrong"
expect("dunder in check", check_unpack, lambda: Sneaky([torch.ones(2), torch.zeros(2)]))

torch.set_default_dtype(torch.float64)
torch.set_grad_enabled(False)
torch.set_default_device("cpu")
@C.graded("a check that needs float32 and gradients")
def check_state(fn):
    x = torch.randn(3, requires_grad=True)
    assert x.dtype == torch.float32 and torch.is_grad_enabled(), (x.dtype, torch.is_grad_enabled())
    assert torch._C._len_torch_function_stack() == 0
expect("honest state", check_state, None)
out["state after"] = [str(torch.get_default_dtype()), torch.is_grad_enabled(), torch._C._len_torch_function_stack()]
torch.use_deterministic_algorithms(True)       # imports torch._dynamo, which wraps torch.manual_seed
import copy, pickle
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.peft import LoRALinear
_model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))   # an honest deepcopy (a PPO's old policy) and a
copy.deepcopy(_model); copy.deepcopy(GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)))
pickle.dumps(GPTConfig()); copy.deepcopy(LoRALinear(nn.Linear(2, 2), r=1))   # pickle cache __slotnames__
out["honest found"] = look("honest")
out["manual_seed"] = torch.manual_seed is torch.random.manual_seed
print("GUARD-TEST " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def report():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("GUARD-TEST ")), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line.split(" ", 1)[1])


ATTACKS = {
    "rebind": "llmcourse.grading.common.close was replaced",
    "code": "llmcourse.grading.common.close was changed in place (its code)",
    "defaults": "llmcourse.grading.common.close was changed in place (its default arguments)",
    "kwdefaults": "the keyword defaults of llmcourse.grading.checks.attention._attention_variant was changed in place",
    "closure": "llmcourse.grading.checks.attention.check_sdpa_values was changed in place (a variable of its closure)",
    "inner code": "check_sdpa_values (inside llmcourse.grading.checks.attention.check_sdpa_values) was changed in place",
    "torch class": "torch.nn.modules.linear.Linear.forward was replaced",
    "class added": "torch.Tensor.rt_added was added",
    "check class": "llmcourse.grading.checks.lora.ToyLM.forward was replaced",
    "list": "llmcourse.grading.checks.attention.BATCHES was changed in place",
    "object dict": "NO_LIBRARY.builtins was changed in place",
    "object class": "the class of",
    "module class": "the type of module llmcourse.grading.checks.attention was changed",
    "sys.modules": "sys.modules['llmcourse.grading.checks.attention'] was replaced",
    "shadowing": "llmcourse.grading.checks.attention.isinstance was added",
    "builtin": "builtins.len was replaced",
    "trace": "a trace function was installed",
    "reload": "llmcourse.grading.common.call_learner was replaced",
    "guard reload": "llmcourse.grading.guard._G was replaced",
    "non-str key": "was given names that are not strings",
    "hook slot": "llmcourse.grading.common._GUARD was replaced",
}


def test_nothing_found_before_any_attack(report):
    assert report["clean"] == []


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attack_is_found_and_undone(report, name):
    r = report[name]
    assert "error" not in r, r
    assert any(ATTACKS[name] in f for f in r["found"]), r["found"]
    assert r["restored"], r
    assert r["again"] == [], r["again"]


def test_tampering_during_a_call_fails_the_call(report):
    assert report["during call"].startswith("tampering detected: while during ran"), report["during call"]
    assert "llmcourse.grading.common.close was changed in place" in report["during call"]


def test_a_temporary_change_does_not_blind_the_watcher(report):
    assert "gets no credit" in report["temporary"] and "scaled_dot_product_attention" in report["temporary"]


def test_switching_the_profiler_off_is_tampering(report):
    assert "tampering detected" in report["profiler off"] and "sys.setprofile" in report["profiler off"]


def test_a_torch_mode_left_active_is_tampering_and_removed(report):
    assert "tampering detected" in report["mode left"] and "mode" in report["mode left"]
    assert report["modes after"] == 0


def test_the_graders_own_helpers_get_no_credit(report):
    for key, name in (("grader helper", "_reference_sdpa"), ("grader helper via map", "_split_reference")):
        assert "gets no credit" in report[key] and f"llmcourse.grading.checks.attention.{name}" in report[key], \
            report[key]
    assert report["grader model"] == "passed"        # the models a check hands over may be called


def test_tampering_in_a_dunder_during_a_check_fails_the_check(report):
    assert report["dunder in check"].startswith("tampering detected: while the test ran"), report["dunder in check"]


def test_honest_global_state_is_set_aside_for_the_check_and_put_back(report):
    assert report["honest state"] == "passed"
    assert report["state after"] == ["torch.float64", False, 1]
    assert report["honest found"] == [] and report["manual_seed"]      # put back, without a note


# ----------------------------------------------------------------------------- the source scan

HONEST = """\
%matplotlib inline
import random, warnings
import numpy as np
import torch
import torch.nn.functional as F
torch.manual_seed(0); np.random.seed(0); random.seed(0)
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False
torch.set_num_threads(1)
warnings.filterwarnings("ignore")
torch.set_printoptions(precision=3)
np.set_printoptions(precision=3)
def softmax(x, dim=-1):
    return torch.softmax(x, dim)
print(softmax(torch.zeros(3)))
"""


def test_honest_settings_get_no_note():
    assert scan_source(HONEST) == []


@pytest.mark.parametrize("source, words", [
    ("import sys\nfor name in list(sys.modules):\n    pass\n", "touches sys.modules"),
    ("import sys\nsys.modules['torch'] = None\n", "writes into sys.modules"),
    ("import llmcourse.grading.common as C\nC.close = lambda *a, **k: True\n",
     "rebinds C.close, an attribute of a llmcourse module"),
    ("from llmcourse.grading.checks import attention as G\nsetattr(G, 'check_sdpa_values', print)\n",
     "setattr(G, ...)"),
    ("from llmcourse.grading import common\ncommon.close.__code__ = (lambda: 1).__code__\n",
     "changes common.close.__code__ in place"),
    ("import llmcourse.grading.common as C\nC.__dict__['close'] = 1\n", "writes into C.__dict__"),
    ("import importlib, llmcourse.grading.common as C\nimportlib.reload(C)\n", "calls importlib.reload"),
    ("import torch\ntorch.allclose = lambda *a, **k: True\n", "rebinds torch.allclose"),
    ("import gc\ngc.get_objects()\n", "calls gc.get_objects"),
])
def test_the_scan_notes_what_reaches_for_the_grader(source, words):
    found = scan_source(source)
    assert any(words in f for f in found), found
    assert all(f.startswith("source scan: ") and "tampering detected" not in f for f in found), found


def test_the_scan_follows_imports_across_cells():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import llmcourse.grading.checks.attention as G"),
        nbformat.v4.new_code_cell("G.BATCHES = []")])
    found = scan_notebook(nb)
    assert found and "rebinds G.BATCHES, an attribute of a llmcourse module" in found[0], found
