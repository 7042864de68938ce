"""Hidden tests of the `lora` assignment (solutions/lora/lora.ipynb).

Paper: Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models",
arXiv:2106.09685, section 4.1. The learner writes ``LoRALinear(base, r, alpha=1.0,
dropout=0.0)`` (``base`` frozen, ``lora_A`` (r, in) random like ``nn.Linear``, ``lora_B``
(out, r) zeros, ``scaling = alpha / r``, ``merged``, ``merge()``, ``unmerge()``),
``apply_lora(model, target_modules, r, alpha=1.0, dropout=0.0)`` (peft's name rule,
everything else frozen) and ``count_parameters(model, trainable_only=True)``.

References are written out here, independent of ``llmcourse.peft``: the formula
``x Wᵀ + b + (alpha / r) x Aᵀ Bᵀ`` with the learner's own A and B, an explicit merge,
the rule ``name == t or name.endswith("." + t)`` on a toy model with traps in its names,
a count over unique parameters. A failed value check is compared with a catalogue of
known mistakes and the message names the one it matches. Calling ``llmcourse.peft``
gets no credit.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from ..common import Forbidden, _module_file, call_learner, close, diagnose, graded

NO_LIBRARY = Forbidden(files={p: "the course's own llmcourse.peft" for m in ("llmcourse.peft",)
                              if (p := _module_file(m))})

# (in_features, out_features, r, alpha): non-square and square layers, r = 1 and r > 1
SHAPES = [(10, 10, 2, 4.0), (12, 7, 3, 6.0), (64, 64, 16, 1.0), (5, 9, 1, 2.0)]


def _make(cls, d_in, d_out, r, alpha=None, dropout=None, g=None):
    base = nn.Linear(d_in, d_out)
    with torch.no_grad():
        base.weight.copy_(torch.randn(d_out, d_in, generator=g) * 0.3)
        base.bias.copy_(torch.randn(d_out, generator=g) * 0.3)
    args, kw = (base, r), {}
    if alpha is not None:
        kw["alpha"] = alpha
    if dropout is not None:
        kw["dropout"] = dropout
    desc = f"LoRALinear(nn.Linear({d_in}, {d_out}), r={r}" + "".join(f", {k}={v}" for k, v in kw.items()) + ")"
    m = call_learner(cls, *args, what=desc, forbid=NO_LIBRARY, **kw)
    assert isinstance(m, nn.Module), f"{desc} is not an nn.Module"
    for name, shape in (("lora_A", (r, d_in)), ("lora_B", (d_out, r))):
        p = getattr(m, name, None)
        assert isinstance(p, nn.Parameter), f"{desc} has no nn.Parameter attribute `{name}`"
        assert tuple(p.shape) == shape, (
            f"{desc}.{name} has shape {tuple(p.shape)}, expected {shape} "
            f"(A: (r, in_features), B: (out_features, r))")
    assert isinstance(getattr(m, "base", None), nn.Linear), f"{desc} has no nn.Linear attribute `base`"
    return m, base, desc


def _randomise_ab(m, g, std=0.5):
    with torch.no_grad():
        m.lora_A.copy_(torch.randn(m.lora_A.shape, generator=g) * std)
        m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * std)


def _forward(m, x, desc):
    return call_learner(m, x, what=f"{desc}.forward", forbid=NO_LIBRARY)


def _forward_variants(W, b, A, B, x, r, alpha):
    s = alpha / r
    v = {
        "the low-rank path is scaled by alpha; the scale is alpha / r": lambda: x @ W.T + b + alpha * (x @ A.T @ B.T),
        "the low-rank path is not scaled: multiply it by scaling = alpha / r": lambda: x @ W.T + b + x @ A.T @ B.T,
        "the low-rank path is scaled by r / alpha; the scale is alpha / r":
            lambda: x @ W.T + b + (r / alpha) * (x @ A.T @ B.T),
        "the base layer's output is missing: return base(x) + the low-rank path": lambda: s * (x @ A.T @ B.T),
        "the base layer's bias is missing: call base(x), which adds it": lambda: x @ W.T + s * (x @ A.T @ B.T),
        "A and B are swapped in the product: the low-rank path is x Aᵀ Bᵀ (A first: (r, in), then B: (out, r))":
            lambda: x @ W.T + b + s * (x @ B @ A),
        "the low-rank update is transposed: the path is x Aᵀ Bᵀ, i.e. (B A) x":
            lambda: x @ W.T + b + s * (x @ (B @ A)),
    }
    return v


def _init_problem(m, base, r, alpha, d_in) -> str | None:
    A, B = m.lora_A.detach(), m.lora_B.detach()
    a_zero, b_zero = bool((A == 0).all()), bool((B == 0).all())
    if a_zero and not b_zero:
        return ("A is zero and B random: the initialisations are swapped. The paper starts A random and B at "
                "zero, so BA = 0 at the start and the gradient still reaches B (it is (∂L/∂h) (A x)ᵀ)")
    if a_zero and b_zero:
        return ("A and B are both zero: then the gradients of A and B are both zero and LoRA never trains; "
                "initialise A like nn.Linear's weight (nn.init.kaiming_uniform_(A, a=math.sqrt(5))) and B at zero")
    if not b_zero:
        return "B must start at zero (nn.init.zeros_), so that the LoRA layer equals the base layer at initialisation"
    bound = 1 / math.sqrt(d_in)
    if A.abs().max() > bound * (1 + 1e-4) or A.numel() >= 64 and A.std() < 0.35 * bound:
        return (f"A does not look like nn.Linear's initialisation (uniform in ±1/√in_features = ±{bound:.3f}, "
                f"got values up to {A.abs().max():.3f}, std {A.std():.3f}): use "
                f"nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5)) (the paper draws A from a Gaussian; this "
                f"assignment, like huggingface peft, asks for nn.Linear's init)")
    if A.numel() > 1 and torch.unique(A).numel() == 1:
        return "every entry of A is the same number: A must be random"
    scaling = getattr(m, "scaling", None)
    if not isinstance(scaling, (int, float, torch.Tensor)):
        return "there is no attribute `scaling` (a number: alpha / r)"
    scaling = float(scaling)
    if not math.isclose(scaling, alpha / r, rel_tol=1e-6):
        if r != 1 and math.isclose(scaling, alpha, rel_tol=1e-6):
            return f"scaling is alpha = {alpha}; it must be alpha / r = {alpha / r}"
        if math.isclose(scaling, r / alpha, rel_tol=1e-6):
            return f"scaling is r / alpha = {r / alpha}; it must be alpha / r = {alpha / r}"
        return f"scaling is {scaling}; it must be alpha / r = {alpha / r}"
    if getattr(m, "merged", None) is not False:
        return f"`merged` should be False after construction, got {getattr(m, 'merged', None)!r}"
    if base.weight.requires_grad:
        return "the base layer's weight is trainable: freeze every parameter of base (p.requires_grad_(False))"
    if base.bias.requires_grad:
        return "the base layer's bias is still trainable: freeze every parameter of base, the bias too"
    if not (m.lora_A.requires_grad and m.lora_B.requires_grad):
        return "lora_A and lora_B must be trainable (requires_grad=True)"
    trainable = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    if trainable != ["lora_A", "lora_B"]:
        return f"the trainable parameters are {trainable}; they should be exactly lora_A and lora_B"
    if m.base is not base:
        return "`base` should be the nn.Linear that was passed in, not a copy"
    return None


@graded("LoRALinear: A random like nn.Linear, B zero, scaling = alpha / r, base frozen")
def check_lora_init(cls):
    g = torch.Generator().manual_seed(1)
    for d_in, d_out, r, alpha in SHAPES:
        for a in (alpha, None):
            m, base, desc = _make(cls, d_in, d_out, r, a, g=g)
            problem = _init_problem(m, base, r, 1.0 if a is None else a, d_in)
            assert problem is None, f"{desc}: {problem}"


@graded("LoRALinear.forward = base(x) + (alpha / r) x Aᵀ Bᵀ; identical to base at initialisation")
def check_lora_forward(cls):
    g = torch.Generator().manual_seed(2)
    for d_in, d_out, r, alpha in SHAPES:
        m, base, desc = _make(cls, d_in, d_out, r, alpha, g=g)
        m.eval()
        for lead in ((4,), (2, 3)):
            x = torch.randn(*lead, d_in, generator=g)
            got = _forward(m, x, desc)
            want = x @ base.weight.T + base.bias
            assert close(got, want), (f"{desc}: at initialisation (B = 0) the output must equal base(x) "
                                      f"(input of shape {tuple(x.shape)})")
        _randomise_ab(m, g)
        W, b, A, B = (t.detach().clone() for t in (base.weight, base.bias, m.lora_A, m.lora_B))
        for lead in ((4,), (2, 3)):
            x = torch.randn(*lead, d_in, generator=g)
            got = _forward(m, x, desc)
            want = x @ W.T + b + (alpha / r) * (x @ A.T @ B.T)
            if not close(got, want):
                why = diagnose(got, _forward_variants(W, b, A, B, x, r, alpha),
                               "it matches none of the usual mistakes: compute base(x) + (x @ A.T @ B.T) * alpha / r")
                raise AssertionError(f"{desc}: with random A and B the output is wrong "
                                     f"(input of shape {tuple(x.shape)}): {why}")


@graded("LoRALinear: dropout acts on the input of the low-rank path only, and only in training")
def check_lora_dropout(cls):
    g = torch.Generator().manual_seed(3)
    d_in, d_out = 16, 12
    m, base, desc = _make(cls, d_in, d_out, 1, 2.0, dropout=0.5, g=g)
    x = torch.randn(64, d_in, generator=g)
    want0 = x @ base.weight.T + base.bias
    m.train()
    assert close(_forward(m, x, desc + ".train()"), want0), (
        f"{desc} in training mode, at initialisation (B = 0): the output must equal base(x) exactly. It does "
        f"not, so the dropout touches the base path: apply it to the input of the low-rank path only, "
        f"base(x) + (dropout(x) @ A.T @ B.T) * scaling")
    _randomise_ab(m, g)
    A, B = m.lora_A.detach().clone(), m.lora_B.detach().clone()
    m.eval()
    full = x @ base.weight.T + base.bias + 2.0 * (x @ A.T @ B.T)
    assert close(_forward(m, x, desc + ".eval()"), full), (
        f"{desc} in eval mode must not drop anything (output = base(x) + (x @ A.T @ B.T) * scaling): "
        f"use nn.Dropout (or F.dropout(x, p, training=self.training)), which is off after .eval()")
    m.train()
    got = _forward(m, x, desc + ".train()").detach()
    d = got - want0                                             # (N, out): must be multiples of B[:, 0] (r = 1)
    bhat = B[:, 0] / B[:, 0].norm()
    resid = d - (d @ bhat)[:, None] * bhat[None, :]
    assert resid.abs().max() < 1e-4 * max(1.0, d.abs().max().item()), (
        f"{desc} in training mode: the low-rank part of the output is not of the form (dropout(x) Aᵀ) Bᵀ. "
        f"The dropout must act on the input x of the low-rank path, not on its output or on the whole output")
    assert not close(got, full), (
        f"{desc} in training mode gives the same output as in eval mode: the dropout is never applied "
        f"(pass dropout=p to nn.Dropout and use it on x in the low-rank path)")


def _merge_variants(W0, A, B, s):
    return {
        "merge adds B A without the scaling: add scaling * (B @ A)": lambda: W0 + B @ A,
        "merge adds the update transposed or with A and B swapped: add scaling * (B @ A), shape (out, in)":
            lambda: W0 + s * (B @ A).T if (B @ A).shape[0] == (B @ A).shape[1] else None,
        "merge subtracts the update: W <- W + scaling * B @ A": lambda: W0 - s * B @ A,
        "merge does not change base.weight: it must add scaling * (B @ A) to it": lambda: W0,
        "merge adds the update twice": lambda: W0 + 2 * s * B @ A,
    }


@graded("merge() adds (alpha / r) B A into base.weight once, unmerge() takes it out; outputs unchanged")
def check_lora_merge(cls):
    g = torch.Generator().manual_seed(4)
    for d_in, d_out, r, alpha in SHAPES[:3]:
        m, base, desc = _make(cls, d_in, d_out, r, alpha, g=g)
        m.eval()
        _randomise_ab(m, g)
        s = alpha / r
        W0, A, B = base.weight.detach().clone(), m.lora_A.detach().clone(), m.lora_B.detach().clone()
        x = torch.randn(5, d_in, generator=g)
        y = _forward(m, x, desc).detach()
        merged_w = W0 + s * B @ A
        call_learner(m.merge, what=f"{desc}.merge()", forbid=NO_LIBRARY)
        w = m.base.weight.detach()
        if not close(w, merged_w):
            why = diagnose(w, _merge_variants(W0, A, B, s), "base.weight should be W + scaling * (B @ A)")
            raise AssertionError(f"{desc}: after merge(), base.weight is wrong: {why}")
        assert getattr(m, "merged", None) is True, f"{desc}: after merge(), `merged` should be True"
        got = _forward(m, x, desc + " (merged)")
        if not close(got, y, atol=1e-4, rtol=1e-4):
            why = diagnose(got, {"the low-rank path is still added after merging, so the update counts twice: "
                                 "when merged, forward must return base(x) only":
                                 lambda: y + s * (x @ A.T @ B.T)},
                           "merged and unmerged outputs must be the same")
            raise AssertionError(f"{desc}: the output after merge() differs from the output before: {why}")
        call_learner(m.merge, what=f"{desc}.merge() a second time", forbid=NO_LIBRARY)
        assert close(m.base.weight, merged_w), (
            f"{desc}: calling merge() twice added the update twice: merge must do nothing when already merged "
            f"(check self.merged)")
        call_learner(m.unmerge, what=f"{desc}.unmerge()", forbid=NO_LIBRARY)
        w = m.base.weight.detach()
        if not close(w, W0):
            why = diagnose(w, {"unmerge adds the update instead of subtracting it": lambda: W0 + 2 * s * B @ A,
                               "unmerge does not change base.weight: subtract scaling * (B @ A)": lambda: merged_w,
                               "unmerge subtracts B A without the scaling": lambda: merged_w - B @ A},
                           "unmerge() must give the original weight back: W - scaling * (B @ A)")
            raise AssertionError(f"{desc}: after unmerge(), base.weight is wrong: {why}")
        assert getattr(m, "merged", None) is False, f"{desc}: after unmerge(), `merged` should be False"
        assert close(_forward(m, x, desc + " (unmerged)"), y, atol=1e-4, rtol=1e-4), (
            f"{desc}: after merge() then unmerge() the output changed")
        call_learner(m.unmerge, what=f"{desc}.unmerge() a second time", forbid=NO_LIBRARY)
        assert close(m.base.weight, W0), (
            f"{desc}: calling unmerge() twice changed base.weight again: unmerge must do nothing when not merged")


@graded("gradients reach lora_A and lora_B, and not the frozen base layer")
def check_lora_grad(cls):
    g = torch.Generator().manual_seed(5)
    for d_in, d_out, r, alpha in SHAPES[:2]:
        m, base, desc = _make(cls, d_in, d_out, r, alpha, g=g)
        m.train()
        x = torch.randn(6, d_in, generator=g)
        w = torch.randn(6, d_out, generator=g)
        loss = (_forward(m, x, desc) * w).sum()
        call_learner(loss.backward, what="backpropagating through your LoRALinear")
        assert m.lora_B.grad is not None and m.lora_B.grad.abs().max() > 0, (
            f"{desc}: at initialisation no gradient reaches lora_B. With B = 0 the gradient of B is "
            f"(∂L/∂h)(A x)ᵀ: it needs A random (not zero) and the low-rank path computed from lora_A and lora_B")
        assert base.weight.grad is None and base.bias.grad is None, (
            f"{desc}: a gradient reached the frozen base layer: freeze its parameters")
        _randomise_ab(m, g)
        m.lora_A.grad = m.lora_B.grad = None
        loss = (_forward(m, x, desc) * w).sum()
        call_learner(loss.backward, what="backpropagating through your LoRALinear")
        assert m.lora_A.grad is not None and m.lora_A.grad.abs().max() > 0, (
            f"{desc}: with B non-zero no gradient reaches lora_A")


# ----------------------------------------------------------------------------- apply_lora


class _Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_attn_gate = nn.Linear(d, d)        # trap: contains "c_attn", is not "...c_attn"
        self.c_proj = nn.Linear(d, d)

    def forward(self, x):
        q, k, v = self.c_attn(x).chunk(3, -1)
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), -1)
        return self.c_proj(w @ v) * torch.sigmoid(self.c_attn_gate(x))


class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = _Attn(d)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(d, 2 * d), "c_proj": nn.Linear(2 * d, d)})

    def forward(self, x):
        x = x + self.attn(self.ln(x))
        return x + self.mlp["c_proj"](torch.relu(self.mlp["c_fc"](x)))


class ToyLM(nn.Module):
    """Names with traps: blocks.i.attn.c_attn / c_attn_gate / c_proj, blocks.i.mlp.c_fc / c_proj,
    blocks.i.ln (a LayerNorm), emb, head (tied to emb)."""

    def __init__(self, vocab=11, d=8, n=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(_Block(d) for _ in range(n))
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _toy(g):
    m = ToyLM()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    return m


def _wrapped(model) -> set[str]:
    return {n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "lora_B")}


# targets -> names that must be wrapped (in ToyLM with 2 blocks)
TARGET_CASES = [
    (["c_attn"], {"blocks.0.attn.c_attn", "blocks.1.attn.c_attn"}),
    (["attn.c_proj"], {"blocks.0.attn.c_proj", "blocks.1.attn.c_proj"}),
    (["c_proj", "head"], {f"blocks.{i}.{s}.c_proj" for i in range(2) for s in ("attn", "mlp")} | {"head"}),
    (["blocks.1.mlp.c_fc"], {"blocks.1.mlp.c_fc"}),
    (["proj", "attn", "ln"], set()),
]


def _target_variants(names, targets):
    linear = [n for n in names]
    return {
        "a module is matched when a target appears anywhere in its name; peft's rule is: the name equals the "
        "target or ends with '.' + target":
            {n for n in linear if any(t in n for t in targets)},
        "a module is matched when its name ends with the target without the '.' before it (so 'proj' would "
        "match 'c_proj'): the name must equal the target or end with '.' + target":
            {n for n in linear if any(n.endswith(t) for t in targets)},
        "only the last part of the name is compared with the targets, so a target with a dot such as "
        "'attn.c_proj' never matches: the name must equal the target or end with '.' + target":
            {n for n in linear if n.rsplit(".", 1)[-1] in targets},
        "only exact names are matched: a name that ends with '.' + target matches too (peft's rule)":
            {n for n in linear if n in targets},
    }


@graded("apply_lora wraps exactly the nn.Linear layers named by peft's rule")
def check_apply_lora_targets(apply_lora):
    g = torch.Generator().manual_seed(6)
    linear_names = [n for n, m in ToyLM().named_modules() if isinstance(m, nn.Linear)]
    for targets, want in TARGET_CASES:
        model = _toy(g)
        out = call_learner(apply_lora, model, list(targets), 2, what=f"apply_lora(model, {targets}, r=2)",
                           forbid=NO_LIBRARY)
        assert out is model, "apply_lora must change the model in place and return it"
        got = _wrapped(model)
        if got != want:
            why = next((msg for msg, names in _target_variants(linear_names, targets).items() if names == got),
                       f"wrapped {sorted(got)}, expected {sorted(want)}")
            raise AssertionError(f"apply_lora(model, {targets}, r=2) wraps the wrong layers: {why}")
        for n in want:
            base = model.get_submodule(n).base
            assert isinstance(base, nn.Linear), f"{n}.base should be the original nn.Linear"


@graded("apply_lora freezes everything but A and B, passes r, alpha and dropout on, keeps the output at init")
def check_apply_lora_model(apply_lora):
    g = torch.Generator().manual_seed(7)
    model = _toy(g)
    ref = copy.deepcopy(model).eval()
    idx = torch.randint(11, (3, 5), generator=g)
    targets = ["c_attn", "c_proj"]
    call_learner(apply_lora, model, targets, 4, 2.0, what="apply_lora(model, ['c_attn', 'c_proj'], r=4, alpha=2.0)",
                 forbid=NO_LIBRARY)
    wrapped = _wrapped(model)
    want_train = {f"{n}.lora_{ab}" for n in wrapped for ab in "AB"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert wrapped, "apply_lora(model, ['c_attn', 'c_proj'], ...) wrapped nothing"
    if trainable != want_train:
        extra, missing = sorted(trainable - want_train), sorted(want_train - trainable)
        if missing:
            raise AssertionError(f"apply_lora froze the LoRA parameters too ({missing[:3]} ...): freeze the model "
                                 f"first, then wrap (or freeze only what is not lora_A / lora_B)")
        kinds = [k for k, key in (("embeddings", "emb."), ("layer norms", ".ln."), ("biases", ".bias"),
                                  ("untargeted linear layers", ".weight")) if any(key in n for n in extra)]
        raise AssertionError(f"apply_lora leaves parameters trainable that are not LoRA's: {extra[:4]} "
                             f"({', '.join(kinds)}): freeze every parameter of the model except lora_A and lora_B, "
                             f"biases, embeddings and norms included")
    for n in wrapped:
        m = model.get_submodule(n)
        assert tuple(m.lora_A.shape)[0] == 4, f"{n}: lora_A has shape {tuple(m.lora_A.shape)}: r=4 was not passed on"
        assert math.isclose(float(m.scaling), 2.0 / 4), (
            f"{n}: scaling is {float(m.scaling)}, expected alpha / r = 0.5: pass alpha on to LoRALinear")
    model.eval()
    got = call_learner(model, idx, what="the model after apply_lora", forbid=NO_LIBRARY)
    assert close(got, ref(idx)), "after apply_lora, at initialisation, the model's output must not change"
    # dropout reaches the layers: with B random, two forward passes in training mode differ
    model2 = _toy(g)
    call_learner(apply_lora, model2, ["c_fc"], 2, 1.0, 0.5, what="apply_lora(model, ['c_fc'], r=2, alpha=1.0, "
                 "dropout=0.5)", forbid=NO_LIBRARY)
    for n in _wrapped(model2):
        _randomise_ab(model2.get_submodule(n), g)
    model2.train()
    a = call_learner(model2, idx, what="the model after apply_lora", forbid=NO_LIBRARY)
    b = call_learner(model2, idx, what="the model after apply_lora", forbid=NO_LIBRARY)
    assert not close(a, b), "apply_lora(..., dropout=0.5): no dropout in training mode: pass dropout on to LoRALinear"


# ----------------------------------------------------------------------------- count_parameters


@graded("count_parameters counts (trainable) parameters, a tied weight once")
def check_count_parameters(count_parameters):
    g = torch.Generator().manual_seed(8)
    model = _toy(g)
    for p in model.blocks[0].parameters():
        p.requires_grad_(False)
    model.blocks[1].attn.c_attn.bias.requires_grad_(False)
    unique = list(model.parameters())                            # tied emb/head once
    total = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    calls = {"count_parameters(model)": lambda: count_parameters(model),
             "count_parameters(model, trainable_only=True)": lambda: count_parameters(model, trainable_only=True),
             "count_parameters(model, trainable_only=False)": lambda: count_parameters(model, trainable_only=False)}
    wants = [trainable, trainable, total]
    for (desc, call), want in zip(calls.items(), wants):
        got = call_learner(call, what=desc, forbid=NO_LIBRARY)
        assert isinstance(got, int) or (hasattr(got, "item") and float(got) == int(got)), (
            f"{desc} should return an int, got {type(got).__name__}")
        got = int(got)
        if got != want:
            known = {total: "it counts every parameter: with trainable_only=True (the default) count only those "
                            "with requires_grad",
                     total - trainable: "it counts the frozen parameters: count those with requires_grad=True",
                     want + model.emb.weight.numel(): "the tied weight (emb and head share one tensor) is counted twice: iterate over "
                                 "model.parameters(), which lists each tensor once",
                     len(unique): "it counts tensors, not numbers: sum p.numel()",
                     sum(p.requires_grad for p in unique): "it counts tensors, not numbers: sum p.numel()"}
            raise AssertionError(f"{desc} returned {got}, expected {want}: "
                                 f"{known.get(got, 'count p.numel() over model.parameters()')}")
