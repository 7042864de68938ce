"""Fair and complete grading (issue 12, part 3), graded by ``llmcourse grade`` in one batch.

One synthetic assignment holds the solution and hidden test cells of all four assignments
(see ``test_guard_redteam.build_assignment``), so one batch proves for each of them:

- **no credit for the grader's own helpers**: a submission that calls one of the checks'
  private reference functions (``_reference_sdpa``, ``_causal_ref``, ``_forward_variants``,
  ``_gae_ref``) loses exactly the parts whose code reaches it, with "gets no credit" and the
  helper's name in the message, and keeps every other point;
- **honest code is never marked tampered**: the solutions with a corpus of honest idioms
  (seeding, ``torch.backends.cudnn.deterministic``, thread counts, warning filters, print
  options, a default dtype left at float64 or set and restored, ``%matplotlib inline``,
  ``%autoreload 2``, a progress bar,
  printing and warning inside the graded functions, local helpers named like library
  functions, ...) keep full marks, status ``graded``, and no "tampering detected" anywhere;
  the source scan's notes are notes;
- **a rerun regrades what changed**: the fingerprint covers the grader's code (every source
  file of ``llmcourse.grading``), ``nbgrader_config.py`` and the limits; a rerun after
  editing the config, or with a changed grader, regrades; an unchanged rerun does not.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest

import test_guard_redteam as RT
from nbgrader_harness import solution_sources

from llmcourse.grading import batch, sandbox

pytestmark = pytest.mark.slow
A = "fair"

TOP_IDIOMS = '''\
%load_ext autoreload
%autoreload 2
%matplotlib inline
import random
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import llmcourse.plots                      # the course's own helpers, imported but unused here
torch.manual_seed(0)
np.random.seed(0)
random.seed(0)
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
warnings.filterwarnings("ignore")
warnings.simplefilter("ignore", UserWarning)
torch.set_printoptions(precision=4, sci_mode=False)
np.set_printoptions(precision=4, suppress=True)
torch.set_default_dtype(torch.float64)      # left on: the checks run in float32 all the same
torch.autograd.set_detect_anomaly(False)
torch.set_grad_enabled(False)               # left off: the checks switch gradients on for themselves
print("set-up done")
from tqdm.auto import tqdm
for _ in tqdm(range(3), desc="warming up"):
    pass


def softmax(x, dim=-1):                     # a local helper named like a library function
    return torch.softmax(x, dim)


def allclose(a, b):
    return torch.allclose(a, b)

'''

INSIDE_IDIOMS = '''\
    import warnings
    print("computing", tuple(q.shape))
    warnings.warn("a learner's warning")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.set_default_dtype(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
    with torch.no_grad():
        _ = q.sum()
    np.random.seed(1)
'''

#: student -> ({grade_id: source}, parts that must get nothing, words in their message)
HELPERS = {
    "helper_attention": (
        {"sdpa": "from llmcourse.grading.checks.attention import _reference_sdpa\n\n"
                 "def scaled_dot_product_attention(q, k, v, mask=None):\n"
                 "    return _reference_sdpa(q, k, v, mask)\n"},
        # multi-head attention calls the learner's attention: it reaches the helper too
        ("test_sdpa_shapes", "test_sdpa_values", "test_sdpa_masks", "test_sdpa_weights_sum", "test_sdpa_grad",
         "test_mha_shapes", "test_mha_values", "test_mha_masks"),
        "llmcourse.grading.checks.attention._reference_sdpa"),
    "helper_masking": (
        {"masks": "import llmcourse.grading.checks.masking as grader\n\n"
                  "def causal_mask(T, device=None):\n"
                  "    return grader._causal_ref(T)\n\n"
                  + solution_sources("masking")["masks"].split("def causal_mask", 1)[1].split("\n\n\n", 1)[1]},
        ("test_causal_mask", "test_attention_mask"),             # attention_mask calls causal_mask
        "llmcourse.grading.checks.masking._causal_ref"),
    "helper_lora": (
        {"lora_linear": solution_sources("lora")["lora_linear"].replace(
            "    def forward(self, x):\n",
            "    def forward(self, x):\n"
            "        from llmcourse.grading.checks.lora import _forward_variants\n"
            "        if not self.merged:\n"
            "            v = _forward_variants(self.base.weight, self.base.bias, self.lora_A, self.lora_B,\n"
            "                                  self.dropout(x), 1, self.scaling)\n"
            "            return next(iter(v.values()))()\n")},
        ("test_lora_forward", "test_lora_dropout", "test_lora_merge", "test_lora_grad", "test_apply_lora_model"),
        "llmcourse.grading.checks.lora._forward_variants"),
    "helper_ppo": (
        {"gae": "from llmcourse.grading.checks.ppo import _gae_ref\n\n"
                "def compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.99, lam=0.95):\n"
                "    adv, ret = _gae_ref(rewards, values, next_values, terminated, truncated, gamma, lam)\n"
                "    return adv.to(rewards.dtype), ret.to(rewards.dtype)\n"},
        ("test_gae_no_boundaries", "test_gae_termination", "test_gae_truncation", "test_gae_returns",
         "test_gae_defaults"),
        "llmcourse.grading.checks.ppo._gae_ref"),
}


def honest_sources() -> dict:
    sol = RT.all_solutions()
    inside = sol["sdpa"].replace('    dk = q.size(-1)\n', INSIDE_IDIOMS + '    dk = q.size(-1)\n')
    assert inside != sol["sdpa"]
    return {
        "honest_top": {**sol, "sdpa": TOP_IDIOMS + sol["sdpa"]},
        "honest_inside": {**sol, "sdpa": "import numpy as np\n" + inside,
                          "mlm": "import random\nrandom.seed(3)\n" + sol["mlm"]},
    }


LIMITS = sandbox.Limits(cpu_seconds=300, address_space_mb=4096, file_size_mb=64, processes=96, wall_seconds=600)


def run(root, **kw):
    return {r.student: r for r in batch.grade(root, A, workers=2, limits=LIMITS, cell_timeout=60,
                                              progress=False, **kw)}


@pytest.fixture(scope="module")
def graded():
    root = Path(tempfile.mkdtemp(prefix="llmcourse_fairness_"))
    # As in the full test run, where an earlier test has made torch set this in pytest's own
    # environment (a path in the real /tmp): the kernels must not inherit it. Before the box's
    # environment replaced it, the top-level idioms' first cell failed with a PermissionError
    # there (torch.use_deterministic_algorithms creating that folder in the box's private /tmp)
    # and lost 22 points in the full run only.
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir(), "torchinductor_grader")))
    try:
        released = RT.build_assignment(root, A)
        sol = RT.all_solutions()
        subs = {"solution": RT.submission(released, sol)}
        subs.update({s: RT.submission(released, src) for s, src in honest_sources().items()})
        subs.update({s: RT.submission(released, {**sol, **src}) for s, (src, _, _) in HELPERS.items()})
        RT.write_submissions(root, subs, A)
        first = run(root)
        yield dict(root=root, first=first, full=first["solution"].max_score)
    finally:
        mp.undo()
        shutil.rmtree(root, ignore_errors=True)


def cell_errors(root: Path, student: str) -> list[str]:
    """The errors and stderr in a student's graded notebooks (what a failing assertion should show)."""
    import nbformat
    out = []
    for nb_path in sorted((root / "autograded" / student).rglob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(nb_path, as_version=4).cells):
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    out.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}"[:500])
                elif o.get("name") == "stderr":
                    out.append(f"cell {i} stderr: {o.get('text', '')}"[:500])
    return out


def test_solution_gets_full_marks(graded):
    r = graded["first"]["solution"]
    assert r.status == "graded" and r.score == r.max_score, r.parts


@pytest.mark.parametrize("student", list(HELPERS))
def test_calling_the_graders_helpers_gets_no_credit(graded, student):
    _, lost, helper = HELPERS[student]
    r = graded["first"][student]
    zero = {p.grade_id for p in r.parts if p.score == 0}
    assert zero == set(lost), (sorted(zero), r.parts)
    for p in r.parts:
        if p.grade_id in lost:
            assert "gets no credit" in p.message and helper in p.message and "grader's own" in p.message, p.message
    assert r.score == r.max_score - sum(p.max_score for p in r.parts if p.grade_id in lost)
    assert r.status == "graded", r.status


@pytest.mark.parametrize("student", ["honest_top", "honest_inside"])
def test_honest_idioms_are_never_tampering(graded, student):
    r = graded["first"][student]
    detail = "\n".join(cell_errors(graded["root"], student) + r.notes
                       + [f"{p.grade_id}: {p.message}" for p in r.parts if p.score < p.max_score])
    assert r.score == r.max_score == graded["full"], detail        # a string: pytest shows it whole
    assert r.status == "graded", r.status
    assert all(p.status == "ok" for p in r.parts), [(p.grade_id, p.status, p.message) for p in r.parts]
    assert not any("tampering" in n.lower() for n in r.notes), r.notes


def test_fingerprint_covers_grader_config_and_limits(graded):
    root = graded["root"]
    course = batch.Course(root)
    settings = {"limits": dataclasses.asdict(LIMITS), "cell_timeout": 60, "use_bwrap": None}
    base = batch.fingerprint(course, A, "solution", settings, "grader-1")
    assert base == batch.fingerprint(course, A, "solution", settings, "grader-1")
    assert base != batch.fingerprint(course, A, "solution", settings, "grader-2")
    assert base != batch.fingerprint(course, A, "solution", {**settings, "cell_timeout": 61}, "grader-1")
    other = dataclasses.asdict(dataclasses.replace(LIMITS, cpu_seconds=301))
    assert base != batch.fingerprint(course, A, "solution", {**settings, "limits": other}, "grader-1")
    config = root / "nbgrader_config.py"
    text = config.read_text()
    try:
        config.write_text(text + "\n# edited\n")
        assert base != batch.fingerprint(course, A, "solution", settings, "grader-1")
    finally:
        config.write_text(text)
    # the grader's code: every source file of llmcourse.grading, subpackages included
    copy = Path(tempfile.mkdtemp(prefix="llmcourse_grader_copy_"))
    try:
        pkg = copy / "grading"
        shutil.copytree(Path(batch.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
        before = batch.grader_digest(pkg)
        assert before == batch.grader_digest(Path(batch.__file__).parent)
        check = pkg / "checks" / "attention.py"
        check.write_text(check.read_text() + "\n")
        assert batch.grader_digest(pkg) != before
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_a_rerun_regrades_only_after_a_change(graded, monkeypatch):
    root = graded["root"]
    again = run(root)
    assert {r.status for r in again.values()} == {"unchanged"}
    config = root / "nbgrader_config.py"
    text = config.read_text()
    try:
        config.write_text(text + "\n# an instructor's edit\n")
        edited = run(root, students=["solution"])
        assert edited["solution"].status == "graded" and edited["solution"].score == graded["full"]
    finally:
        config.write_text(text)
    monkeypatch.setattr(batch, "grader_digest", lambda folder=None: "a grader that changed")
    regraded = run(root, students=["helper_ppo"])
    assert regraded["helper_ppo"].status == "graded"
    assert regraded["helper_ppo"].score == graded["first"]["helper_ppo"].score
