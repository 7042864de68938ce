"""The `lora` assignment's autograder: its catalogue, proven in-process and by nbgrader.

The catalogue: the solution, the untouched release, wrong implementations (each must lose
the points of the named test cells, with a message naming the mistake, and nothing in the
parts it does not touch), several correct ones (full marks), parts that call
``llmcourse.peft`` (no credit for that part), and broken submissions. Every entry is proven
in-process in the fast tier (``test_catalogue_in_process``, see
:class:`nbgrader_harness.Catalogue`); one real ``nbgrader autograde`` batch (slow) grades the
solution (run whole, with its ungraded fine-tuning cell), the release, one wrong entry per
part, one library call and the broken submissions, and checks that nbgrader's verdicts
equal the in-process ones. Every submission but the solution drops the ungraded
fine-tuning cell (it earns no points, and it would cost a pretrained-model load and 40
training steps per submission).
"""
from __future__ import annotations

import textwrap

import pytest

from nbgrader_harness import Catalogue, solution_sources

ASSIGNMENT = "lora"
SOL = solution_sources(ASSIGNMENT)
LORA_TESTS = ["test_lora_init", "test_lora_forward", "test_lora_dropout", "test_lora_merge", "test_lora_grad"]
APPLY_TESTS = ["test_apply_lora_targets", "test_apply_lora_model"]
COUNT_TESTS = ["test_count_parameters"]

def code(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


INIT = """
self.base = base
for p in base.parameters():
    p.requires_grad_(False)
self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
self.scaling = alpha / r
self.dropout = nn.Dropout(dropout)
self.merged = False
"""
FORWARD = """
y = self.base(x)
if self.merged:
    return y
return y + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling
"""
MERGE = """
if not self.merged:
    with torch.no_grad():
        self.base.weight += self.scaling * self.lora_B @ self.lora_A
    self.merged = True
"""
UNMERGE = """
if self.merged:
    with torch.no_grad():
        self.base.weight -= self.scaling * self.lora_B @ self.lora_A
    self.merged = False
"""


def lora(init=INIT, forward=FORWARD, merge=MERGE, unmerge=UNMERGE) -> str:
    """A LoRALinear built from four method bodies (the solution's by default)."""
    def ind(s):
        return textwrap.indent(code(s), "        ")
    return ("class LoRALinear(nn.Module):\n"
            "    def __init__(self, base, r, alpha=1.0, dropout=0.0):\n        super().__init__()\n" + ind(init) +
            "\n\n    def forward(self, x):\n" + ind(forward) +
            "\n\n    def merge(self):\n" + ind(merge) +
            "\n\n    def unmerge(self):\n" + ind(unmerge) + "\n")


def apply(match: str, freeze: str = "for p in model.parameters():\n    p.requires_grad_(False)") -> str:
    """An apply_lora with the given match expression (over ``name`` and ``t``) and freezing code."""
    return ("def apply_lora(model, target_modules, r, alpha=1.0, dropout=0.0):\n"
            + textwrap.indent(code(freeze), "    ") + "\n"
            "    names = [n for n, m in model.named_modules()\n"
            f"             if isinstance(m, nn.Linear) and any({match} for t in target_modules)]\n"
            "    for name in names:\n"
            "        parent_name, _, child = name.rpartition('.')\n"
            "        parent = model.get_submodule(parent_name) if parent_name else model\n"
            "        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))\n"
            "    return model\n")


PEFT_RULE = "n == t or n.endswith('.' + t)"

# name -> (cell sources replacing the solution's, test cells that must lose points, words of the message)
WRONG = {
    "b_random_a_zero": ({"lora_linear": lora(init=INIT.replace(
        "self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))\nnn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
        "self.lora_B = nn.Parameter(torch.empty(base.out_features, r))\nnn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))"
    ).replace("torch.empty(r, base.in_features)", "torch.zeros(r, base.in_features)"))},
        ["test_lora_init", "test_lora_grad"], "initialisations are swapped"),
    "both_zero": ({"lora_linear": lora(init=INIT.replace("nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))", "")
                                       .replace("torch.empty(r", "torch.zeros(r"))},
                  ["test_lora_init", "test_lora_grad"], "both zero"),
    "a_gaussian_std_one": ({"lora_linear": lora(init=INIT.replace(
        "nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))", "nn.init.normal_(self.lora_A)"))},
        ["test_lora_init"], "nn.Linear's initialisation"),
    "scale_alpha": ({"lora_linear": lora(init=INIT.replace("alpha / r", "alpha"))},
                    ["test_lora_init", "test_lora_forward"], "scaling is alpha"),
    "scale_in_forward_missing": ({"lora_linear": lora(forward=FORWARD.replace(" * self.scaling", ""))},
                                 ["test_lora_forward", "test_lora_merge"], "not scaled"),
    "base_not_frozen": ({"lora_linear": lora(init=INIT.replace(
        "for p in base.parameters():\n    p.requires_grad_(False)\n", ""))},
        ["test_lora_init", "test_lora_grad"], "weight is trainable"),
    "base_bias_left_trainable": ({"lora_linear": lora(init=INIT.replace(
        "for p in base.parameters():\n    p.requires_grad_(False)", "base.weight.requires_grad_(False)"))},
        ["test_lora_init", "test_lora_grad"], "bias is still trainable"),
    "dropout_on_whole_output": ({"lora_linear": lora(forward="""
        y = self.base(x)
        if self.merged:
            return y
        return self.dropout(y + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling)""")},
        ["test_lora_dropout"], "touches the base path"),
    "dropout_on_lowrank_output": ({"lora_linear": lora(forward="""
        y = self.base(x)
        if self.merged:
            return y
        return y + self.dropout(x @ self.lora_A.T @ self.lora_B.T) * self.scaling""")},
        ["test_lora_dropout"], "not on its output"),
    "f_dropout_always_on": ({"lora_linear": lora(forward="""
        y = self.base(x)
        if self.merged:
            return y
        p = self.dropout.p
        return y + (torch.nn.functional.dropout(x, p) @ self.lora_A.T @ self.lora_B.T) * self.scaling""")},
        ["test_lora_dropout"], "eval mode"),
    "a_b_swapped_in_product": ({"lora_linear": lora(forward=FORWARD.replace(
        "self.lora_A.T @ self.lora_B.T", "self.lora_B @ self.lora_A"))},
        ["test_lora_forward"], "A and B are swapped"),
    "merge_without_scale": ({"lora_linear": lora(merge=MERGE.replace("self.scaling * ", ""))},
                            ["test_lora_merge"], "without the scaling"),
    "merge_applied_twice": ({"lora_linear": lora(merge="""
        with torch.no_grad():
            self.base.weight += self.scaling * self.lora_B @ self.lora_A
        self.merged = True""")}, ["test_lora_merge"], "twice"),
    "unmerge_adds": ({"lora_linear": lora(unmerge=UNMERGE.replace("-=", "+="))},
                     ["test_lora_merge"], "adds the update instead of subtracting"),
    "lowrank_added_after_merge": ({"lora_linear": lora(forward="""
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling""")},
        ["test_lora_merge"], "still added after merging"),
    "merge_transposed": ({"lora_linear": lora(merge=MERGE.replace("self.lora_B @ self.lora_A",
                                                                  "(self.lora_B @ self.lora_A).T"))},
                         ["test_lora_merge"], "transposed"),
    "match_anywhere": ({"apply_lora": apply("t in n")}, ["test_apply_lora_targets"], "anywhere in its name"),
    "match_suffix_without_dot": ({"apply_lora": apply("n.endswith(t)")}, ["test_apply_lora_targets"],
                                 "without the '.'"),
    "match_last_component": ({"apply_lora": apply("n.rsplit('.', 1)[-1] == t")}, ["test_apply_lora_targets"],
                             "only the last part"),
    "others_not_frozen": ({"apply_lora": apply(PEFT_RULE, freeze="pass")}, ["test_apply_lora_model"],
                          "leaves parameters trainable"),
    "biases_left_trainable": ({"apply_lora": apply(PEFT_RULE, freeze="""
        for n, p in model.named_parameters():
            if not n.endswith('bias'):
                p.requires_grad_(False)""")}, ["test_apply_lora_model"], "biases"),
    "lora_params_frozen_too": ({"apply_lora": apply(PEFT_RULE, freeze="pass") .replace(
        "    return model\n", "    for p in model.parameters():\n        p.requires_grad_(False)\n    return model\n")},
        ["test_apply_lora_model"], "froze the LoRA parameters too"),
    "alpha_not_passed": ({"apply_lora": apply(PEFT_RULE).replace("r, alpha, dropout))", "r))")},
                         ["test_apply_lora_model"], "pass alpha on"),
    "count_all": ({"count_parameters": "def count_parameters(model, trainable_only=True):\n"
                                       "    return sum(p.numel() for p in model.parameters())"},
                  COUNT_TESTS, "counts every parameter"),
    "count_tied_twice": ({"count_parameters": "def count_parameters(model, trainable_only=True):\n"
                          "    return sum(p.numel() for n, p in model.named_parameters(remove_duplicate=False)\n"
                          "               if p.requires_grad or not trainable_only)"},
                         COUNT_TESTS, "counted twice"),
    "count_tensors": ({"count_parameters": "def count_parameters(model, trainable_only=True):\n"
                       "    return sum(1 for p in model.parameters() if p.requires_grad or not trainable_only)"},
                      COUNT_TESTS, "counts tensors"),
}

CORRECT = {
    "functional_and_linear_init": {
        "lora_linear": lora(init="""
            self.base = base.requires_grad_(False)
            self.scaling = float(alpha) / float(r)
            self.lora_A = nn.Parameter(nn.Linear(base.in_features, r, bias=False).weight.detach().clone())
            self.lora_B = nn.Parameter(base.weight.new_zeros(base.out_features, r))
            self.drop = nn.Dropout(p=dropout)
            self.merged = False""", forward="""
            import torch.nn.functional as F
            out = F.linear(x, self.base.weight, self.base.bias)
            if not self.merged:
                out = out + F.linear(F.linear(self.drop(x), self.lora_A), self.lora_B) * self.scaling
            return out""", merge="""
            if self.merged:
                return
            self.base.weight.data.add_(self.lora_B.data @ self.lora_A.data, alpha=self.scaling)
            self.merged = True""", unmerge="""
            if not self.merged:
                return
            self.base.weight.data.sub_(self.lora_B.data @ self.lora_A.data, alpha=self.scaling)
            self.merged = False"""),
        "apply_lora": code("""
            def apply_lora(model, target_modules, r, alpha=1.0, dropout=0.0):
                model.requires_grad_(False)
                def visit(module, prefix):
                    for child_name, child in list(module.named_children()):
                        full = f"{prefix}.{child_name}" if prefix else child_name
                        if isinstance(child, nn.Linear) and any(full == t or full.endswith("." + t)
                                                                for t in target_modules):
                            setattr(module, child_name, LoRALinear(child, r, alpha, dropout))
                        else:
                            visit(child, full)
                visit(model, "")
                return model"""),
        "count_parameters": code("""
            def count_parameters(model, trainable_only=True):
                seen, total = set(), 0
                for p in model.parameters():
                    if id(p) in seen or (trainable_only and not p.requires_grad):
                        continue
                    seen.add(id(p))
                    total += p.numel()
                return total"""),
    },
    "einsum_uniform_init": {
        "lora_linear": lora(init="""
            self.base = base
            self.base.weight.requires_grad = False
            if self.base.bias is not None:
                self.base.bias.requires_grad = False
            bound = 1 / math.sqrt(base.in_features)
            self.lora_A = nn.Parameter(torch.empty(r, base.in_features).uniform_(-bound, bound))
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
            self.scaling = alpha / r
            self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.merged = False""", forward="""
            h = self.base(x)
            if not self.merged:
                z = torch.einsum("...i,ri->...r", self.dropout(x), self.lora_A)
                h = h + self.scaling * torch.einsum("...r,or->...o", z, self.lora_B)
            return h""", merge="""
            if not self.merged:
                with torch.no_grad():
                    self.base.weight.copy_(self.base.weight + self.scaling * torch.einsum("or,ri->oi", self.lora_B, self.lora_A))
                self.merged = True""", unmerge="""
            if self.merged:
                with torch.no_grad():
                    self.base.weight.copy_(self.base.weight - self.scaling * torch.einsum("or,ri->oi", self.lora_B, self.lora_A))
                self.merged = False"""),
        "apply_lora": code("""
            def apply_lora(model, target_modules, r, alpha=1.0, dropout=0.0):
                for p in model.parameters():
                    p.requires_grad = False
                todo = []
                for name, module in model.named_modules():
                    parts = name.split(".")
                    suffixes = {".".join(parts[i:]) for i in range(len(parts))}
                    if isinstance(module, nn.Linear) and suffixes & set(target_modules):
                        todo.append(name)
                for name in todo:
                    *path, last = name.split(".")
                    parent = model
                    for part in path:
                        parent = getattr(parent, part) if not part.isdigit() else parent[int(part)]
                    setattr(parent, last, LoRALinear(getattr(parent, last), r, alpha, dropout))
                return model"""),
    },
    "delta_weight_helper": {
        "lora_linear": code('''
            class LoRALinear(nn.Module):
                def __init__(self, base, r, alpha=1.0, dropout=0.0):
                    super().__init__()
                    self.base, self.r, self.alpha = base, r, alpha
                    self.scaling = self.alpha / self.r
                    base.weight.requires_grad_(False)
                    if base.bias is not None:
                        base.bias.requires_grad_(False)
                    A = torch.empty(r, base.in_features)
                    torch.nn.init.kaiming_uniform_(A, a=5 ** 0.5)
                    self.lora_A = nn.Parameter(A)
                    self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
                    self.lora_dropout = nn.Dropout(dropout)
                    self.merged = False

                def delta(self):
                    return self.lora_B @ self.lora_A * self.scaling

                def forward(self, x):
                    if self.merged:
                        return self.base(x)
                    return self.base(x) + self.lora_dropout(x) @ self.delta().T

                @torch.no_grad()
                def merge(self):
                    if not self.merged:
                        self.base.weight.add_(self.delta())
                    self.merged = True

                @torch.no_grad()
                def unmerge(self):
                    if self.merged:
                        self.base.weight.sub_(self.delta())
                    self.merged = False'''),
        "count_parameters": "def count_parameters(model, trainable_only=True):\n"
                            "    ps = [p for p in model.parameters() if p.requires_grad] if trainable_only "
                            "else list(model.parameters())\n    return int(sum(p.numel() for p in ps))",
    },
    "stores_original_weight": {
        "lora_linear": lora(merge="""
            if not self.merged:
                self._w0 = self.base.weight.detach().clone()
                with torch.no_grad():
                    self.base.weight.copy_(self._w0 + self.scaling * (self.lora_B @ self.lora_A))
                self.merged = True""", unmerge="""
            if self.merged:
                with torch.no_grad():
                    self.base.weight.copy_(self.base.weight - self.scaling * (self.lora_B @ self.lora_A))
                self.merged = False"""),
        "apply_lora": code("""
            def apply_lora(model, target_modules, r, alpha=1.0, dropout=0.0):
                import warnings
                print("applying LoRA to", list(target_modules))
                warnings.warn("a harmless learner warning")
                targets = tuple(target_modules)
                found = {}
                for name, module in model.named_modules():
                    if type(module) is nn.Linear and (name in targets or name.endswith(tuple("." + t for t in targets))):
                        found[name] = module
                for p in model.parameters():
                    p.requires_grad_(False)
                for name, module in found.items():
                    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                    setattr(parent, name.rsplit(".", 1)[-1], LoRALinear(module, r, alpha=alpha, dropout=dropout))
                return model"""),
    },
}

FORBIDDEN = {
    "imports_peft_lora_linear": ({"lora_linear": "from llmcourse.peft import LoRALinear"},
                                 LORA_TESTS + APPLY_TESTS, "llmcourse.peft"),
    "imports_peft_apply_lora": ({"apply_lora": "from llmcourse import peft\n"
                                               "def apply_lora(model, target_modules, r, alpha=1.0, dropout=0.0):\n"
                                               "    return peft.apply_lora(model, target_modules, r, alpha, dropout)"},
                                APPLY_TESTS, "llmcourse.peft"),
    "imports_peft_count": ({"count_parameters": "from llmcourse.peft import count_parameters"},
                           COUNT_TESTS, "llmcourse.peft"),
}

EDITED_TEST = "# I edited this test\nprint('all tests passed')"
# name -> (cell sources, cells to delete); graded by nbgrader only (the infinite loop is proven once, in ppo)
BAD = {
    "syntax_error": ({**SOL, "count_parameters": "def count_parameters(model, trainable_only=True)\n    return 0"}, ()),
    "edited_test_cells": ({**SOL, **WRONG["scale_alpha"][0], "test_lora_init": EDITED_TEST,
                           "test_lora_forward": EDITED_TEST}, ()),
    "deleted_test_cells": ({**SOL, **WRONG["scale_alpha"][0]}, ("test_lora_init", "test_lora_forward")),
}
TIMEOUT = 60        # seconds per cell: the solution's ungraded fine-tuning cell, the slowest, takes about 10 s


def _drop_fine_tuning(subs) -> None:
    for student, nb in subs.items():                    # the ungraded fine-tuning run: in the solution only
        if student != "solution":
            nb.cells = [c for c in nb.cells if "load_pretrained()" not in c.source]


CAT = Catalogue(ASSIGNMENT, {"lora_linear": LORA_TESTS, "apply_lora": APPLY_TESTS, "count_parameters": COUNT_TESTS},
                wrong=WRONG, correct=CORRECT, forbidden=FORBIDDEN, bad=BAD, uses={"lora_linear": ["apply_lora"]},
                timeout=TIMEOUT, prepare=_drop_fine_tuning, nbgrader_wrong=["scale_alpha"] + [
                    next(n for n, (src, _, _) in WRONG.items() if set(src) == {part})
                    for part in ("apply_lora", "count_parameters")], total=21)


# ----------------------------------------------------------------------------- fast: the catalogue in-process


@pytest.mark.parametrize("kind,name", CAT.entries())
def test_catalogue_in_process(kind, name):
    CAT.prove(kind, name)


# ----------------------------------------------------------------------------- slow: one nbgrader batch


@pytest.fixture(scope="module")
def graded():
    """The solution, the release, one wrong entry per part, a library call and the broken submissions,
    graded by ONE nbgrader autograde run."""
    return CAT.grade()


@pytest.mark.slow
def test_nbgrader_grades_as_in_process(graded):
    CAT.assert_graded(graded)
    assert "NotImplementedError" in graded["release"].errors["test_lora_init"]
    assert "visible checks passed" in graded["solution"].text      # the ungraded cells ran too


@pytest.mark.slow
def test_bad_submissions_are_graded_without_extra_credit(graded):
    pts = {k: m for k, (_, m) in graded["solution"].scores.items()}
    lora_pts, apply_pts = (sum(pts[k] for k in ks) for ks in (LORA_TESTS, APPLY_TESTS))

    r = graded["bad_syntax_error"]                    # count_parameters undefined: its part lost
    assert r.total == lora_pts + apply_pts, r.scores
    assert "NameError" in r.errors["test_count_parameters"]

    for student in ("bad_edited_test_cells", "bad_deleted_test_cells"):   # restored / re-added, graded
        r = graded[student]
        assert r.scores["test_lora_init"][0] == 0 and "scaling is alpha" in r.errors["test_lora_init"]
        assert r.scores["test_lora_forward"][0] == 0
        assert r.total == graded["wrong_scale_alpha"].total
