"""Parameter-efficient fine-tuning (PEFT): LoRA, bottleneck adapters, prompt tuning, BitFit, (IA)^3.

Papers, one per method (the survey's taxonomy in brackets: Lialin, Deshpande, Rumshisky
2023, "Scaling Down to Scale Up: A Guide to Parameter-Efficient Fine-Tuning",
arXiv:2303.15647):

* LoRA [reparametrised]: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
  Models", arXiv:2106.09685, section 4.1: h = W0 x + (alpha / r) B A x, A Gaussian
  (here: ``nn.Linear``'s kaiming-uniform init, as the reference ``loralib`` and peft do),
  B = 0, so the update is zero at the start; merging W = W0 + (alpha / r) B A adds no
  latency. Section 7.2 / Fig. 3: subspace similarity of the A matrices learned at two ranks.
* Bottleneck adapters [additive]: Houlsby et al. 2019, "Parameter-Efficient Transfer
  Learning for NLP", arXiv:1902.00751, section 2.1 and Fig. 2: a down-projection, a
  nonlinearity, an up-projection and a skip connection after each sublayer's output
  projection, initialised near the identity (here exactly: the up-projection starts at 0);
  the layer norms train too.
* Prompt tuning [additive, soft prompts]: Lester, Al-Rfou, Constant 2021, "The Power of
  Scale for Parameter-Efficient Prompt Tuning", arXiv:2104.08691: k trainable embeddings
  prepended to the input embeddings (a simpler cousin of Li & Liang 2021's prefix tuning,
  arXiv:2101.00190, which prepends to the keys and values of every layer).
* BitFit [selective]: Ben Zaken, Ravfogel, Goldberg 2021, "BitFit: Simple
  Parameter-efficient Fine-tuning for Transformer-based Masked Language-models",
  arXiv:2106.10199: train the bias terms only.
* (IA)^3 [additive, rescaling]: Liu et al. 2022, "Few-Shot Parameter-Efficient
  Fine-Tuning is Better and Cheaper than In-Context Learning", arXiv:2205.05638,
  section 3.3: learned vectors l_k, l_v, l_ff, initialised to ones, rescale the keys, the
  values and the inner activation of the MLP.

The LoRA part follows huggingface/peft's ``tuners/lora/layer.py`` in forty lines: the same
initialisation, ``scaling = alpha / r``, forward ``base(x) + B(A(dropout(x))) * scaling``,
merge and unmerge, and peft's target rule (a module's qualified name equals the target or
ends with ``"." + target``). Checked by ``tests/test_peft.py``.
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------- helpers


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; a tied weight counts once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def freeze(model: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def matches(name: str, targets) -> bool:
    """peft's rule: ``name`` equals a target or ends with ``"." + target``."""
    return any(name == t or name.endswith("." + t) for t in targets)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state tensors (Adam: exp_avg and exp_avg_sq per parameter)."""
    return sum(v.numel() * v.element_size() for s in opt.state.values()
               for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0)


# ----------------------------------------------------------------------------- LoRA (Hu et al. 2021)


class LoRALinear(nn.Module):
    """``base(x) + dropout(x) Aᵀ Bᵀ · alpha / r`` around a frozen ``nn.Linear``; mergeable."""

    def __init__(self, base: nn.Linear, r: int, alpha: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"rank r must be >= 1, got {r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))    # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))   # (out, r): update starts at 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))           # like nn.Linear's weight
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update (alpha / r) B A, shape (out, in) like ``base.weight``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)                                                  # (..., out)
        if self.merged:
            return y
        return y + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha / r) B A, once: inference then costs what the base model costs."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - (alpha / r) B A: back to the base weight and the separate low-rank path."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def apply_lora(model: nn.Module, target_modules, r: int, alpha: float = 1.0,
               dropout: float = 0.0) -> nn.Module:
    """Wrap every targeted ``nn.Linear`` in a :class:`LoRALinear`; freeze everything else. In place."""
    freeze(model)
    targets = [name for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and matches(name, target_modules)]
    for name in targets:
        _replace(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Qualified name -> LoRALinear, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    for m in lora_layers(model).values():
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for m in lora_layers(model).values():
        m.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every LoRA update and put the plain ``nn.Linear`` back: the base architecture. In place."""
    for name, m in lora_layers(model).items():
        m.merge()
        _replace(model, name, m.base)
    return model


def subspace_similarity(A1: torch.Tensor, A2: torch.Tensor) -> torch.Tensor:
    """phi(i, j) = ||U1[:, :i]ᵀ U2[:, :j]||_F² / min(i, j) for i <= r1, j <= r2 (LoRA, eq. 4, Fig. 3).

    U1, U2: the right-singular vectors of A1 (r1, d) and A2 (r2, d), i.e. the directions of
    the input space each A reads, by decreasing singular value. 1 = one subspace contains
    the other, 0 = orthogonal. Returns a (r1, r2) tensor; entry [i-1, j-1] is phi(i, j).
    """
    U1 = torch.linalg.svd(A1.detach().double(), full_matrices=False).Vh.T   # (d, r1)
    U2 = torch.linalg.svd(A2.detach().double(), full_matrices=False).Vh.T   # (d, r2)
    overlap = (U1.T @ U2) ** 2                                              # (r1, r2)
    cum = overlap.cumsum(0).cumsum(1)                                       # ||U1[:, :i]ᵀ U2[:, :j]||²
    i = torch.arange(1, U1.size(1) + 1, dtype=cum.dtype)[:, None]
    j = torch.arange(1, U2.size(1) + 1, dtype=cum.dtype)[None, :]
    return cum / torch.minimum(i, j)


# ----------------------------------------------------------------------------- bottleneck adapters (Houlsby et al. 2019)


class Adapter(nn.Module):
    """h + up(gelu(down(h))): a bottleneck with a skip connection; the identity at initialisation."""

    def __init__(self, d: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(d, bottleneck)
        self.up = nn.Linear(bottleneck, d)
        nn.init.normal_(self.down.weight, std=0.02)                      # "near-identity" (section 3.6)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)                                   # here exactly the identity
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(h)))


class Adapted(nn.Module):
    """A frozen module followed by an :class:`Adapter` on its output."""

    def __init__(self, base: nn.Module, d: int, bottleneck: int):
        super().__init__()
        self.base = base
        self.adapter = Adapter(d, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def apply_adapters(model: nn.Module, bottleneck: int, target_modules=("attn.c_proj", "mlp.c_proj"),
                   train_norms: bool = True) -> nn.Module:
    """Houlsby adapters after each targeted ``nn.Linear`` (by default both sublayers' output
    projections, before the residual addition, as in the paper's Fig. 2); the layer norms
    train too unless ``train_norms=False``. Everything else is frozen. In place."""
    freeze(model)
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and matches(n, target_modules)]
    for name, lin in targets:
        _replace(model, name, Adapted(lin, lin.out_features, bottleneck))
    if train_norms:
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                for p in m.parameters():
                    p.requires_grad_(True)
    return model


# ----------------------------------------------------------------------------- BitFit (Ben Zaken et al. 2021)


def apply_bitfit(model: nn.Module) -> nn.Module:
    """Train every bias term (linear layers and layer norms) and nothing else. In place."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.rsplit(".", 1)[-1] == "bias")
    return model


# ----------------------------------------------------------------------------- (IA)^3 (Liu et al. 2022)


class IA3Linear(nn.Module):
    """A frozen ``nn.Linear`` whose input (``where="in"``) or output slice
    ``[start, start + size)`` (``where="out"``) is multiplied by a learned vector of ones."""

    def __init__(self, base: nn.Linear, where: str = "out", start: int = 0, size: int | None = None):
        super().__init__()
        if where not in ("in", "out"):
            raise ValueError(f"where must be 'in' or 'out', got {where!r}")
        self.base, self.where, self.start = base, where, start
        n = base.in_features if where == "in" else (size or base.out_features - start)
        self.ia3 = nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.where == "in":
            return self.base(x * self.ia3)
        y = self.base(x)
        s, e = self.start, self.start + self.ia3.numel()
        return torch.cat([y[..., :s], y[..., s:e] * self.ia3, y[..., e:]], dim=-1)


def apply_ia3(model: nn.Module) -> nn.Module:
    """(IA)^3 on a :class:`~llmcourse.gpt.GPT`: l_k and l_v rescale the key and value thirds of
    each ``attn.c_attn`` output, l_ff the GELU output that feeds ``mlp.c_proj``. In place."""
    freeze(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Linear) and matches(name, ["attn.c_attn"]):
            C = m.out_features // 3
            _replace(model, name, IA3Linear(m, "out", start=C, size=2 * C))      # keys and values
        elif isinstance(m, nn.Linear) and matches(name, ["mlp.c_proj"]):
            _replace(model, name, IA3Linear(m, "in"))                           # l_ff ⊙ gelu(W1 x)
    return model


# ----------------------------------------------------------------------------- prompt tuning (Lester et al. 2021)


class PromptTuning(nn.Module):
    """A frozen GPT behind ``n_prompt`` trainable input embeddings: ``forward(idx, targets)`` like GPT's.

    The soft prompt takes positions 0..n_prompt-1, the text the positions after it, so the
    text may be at most ``block_size - n_prompt`` tokens long. ``init_ids`` starts the prompt
    from the embeddings of real tokens (the paper's best initialisation, from vocabulary).
    """

    def __init__(self, gpt: nn.Module, n_prompt: int, init_ids: torch.Tensor | None = None):
        super().__init__()
        self.gpt = freeze(gpt)
        if init_ids is None:
            init_ids = torch.randint(gpt.config.vocab_size, (n_prompt,))
        self.prompt = nn.Parameter(gpt.wte.weight[init_ids[:n_prompt]].detach().clone())   # (P, C)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        g, (B, T), P = self.gpt, idx.shape, self.prompt.size(0)
        if P + T > g.config.block_size:
            raise ValueError(f"{P} prompt + {T} text tokens exceed block_size={g.config.block_size}")
        x = torch.cat([self.prompt.expand(B, P, -1), g.wte(idx)], dim=1)    # (B, P+T, C)
        x = g.drop(x + g.wpe(torch.arange(P + T, device=idx.device)))
        for block in g.blocks:
            x = block(x)
        logits = g.lm_head(g.ln_f(x[:, P:]))                                 # (B, T, vocab): text only
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss


# ----------------------------------------------------------------------------- one fine-tuning run, measured


def finetune(model: nn.Module, train_ids: torch.Tensor, val_ids: torch.Tensor, cfg) -> dict:
    """Train ``model``'s trainable parameters with :func:`llmcourse.train.train_lm`; measure.

    Returns trainable and total parameters, the final validation loss, the run's wall-clock
    seconds (periodic evaluations included: time a step alone with :func:`step_times`),
    the bytes of AdamW's state (read from the optimizer after one step on a copy of the
    model: exp_avg and exp_avg_sq, 8 bytes per trainable float32 parameter), and the
    :class:`~llmcourse.train.History`.
    """
    from .data import get_batch
    from .train import make_optimizer, train_lm

    probe = copy.deepcopy(model).train()
    opt = make_optimizer(probe, cfg)
    probe(*get_batch(train_ids, 2, cfg.block_size))[1].backward()
    opt.step()
    state = optimizer_state_bytes(opt)
    del probe, opt
    hist = train_lm(model, train_ids, val_ids, cfg, progress=False)
    return {"trainable": count_parameters(model), "total": count_parameters(model, trainable_only=False),
            "val_loss": hist.val_loss[-1], "seconds": hist.seconds, "adam_bytes": state, "history": hist}


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y, grad_clip: float) -> None:
    """One step as :func:`llmcourse.train.train_lm` takes it: forward, backward, clip, AdamW."""
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()


def step_times(models: dict, train_ids: torch.Tensor, cfg, rounds: int = 5, steps: int = 4,
               warmup: int = 2) -> dict:
    """Milliseconds per training step of each model, the step alone (no evaluation).

    Each model trains a copy of itself on the same ``steps`` batches of ``cfg``'s shape
    per round; the models take turns within each round, so a change in the machine's load
    hits all of them alike. Returns ``{name: [ms per step, one value per round]}``.
    """
    from .data import get_batch
    from .train import make_optimizer

    gen = torch.Generator().manual_seed(cfg.seed)
    batches = [get_batch(train_ids, cfg.batch_size, cfg.block_size, gen) for _ in range(steps)]
    runs = {}
    for name, m in models.items():
        m = copy.deepcopy(m).train()
        runs[name] = (m, make_optimizer(m, cfg))
        for x, y in batches[:warmup]:
            _train_step(m, runs[name][1], x, y, cfg.grad_clip)
    out = {name: [] for name in models}
    for _ in range(rounds):
        for name, (m, opt) in runs.items():
            t0 = time.perf_counter()
            for x, y in batches:
                _train_step(m, opt, x, y, cfg.grad_clip)
            out[name].append(1000 * (time.perf_counter() - t0) / steps)
    return out


def training_memory(model: nn.Module, train_ids: torch.Tensor, cfg) -> dict:
    """Bytes a training step of ``model`` holds, by kind (counted, not sampled; deterministic).

    ``weights``: every parameter, frozen or not; ``gradients``: one per trainable parameter;
    ``optimizer``: AdamW's state; ``activations``: the tensors autograd saves in the
    forward pass for the backward pass (once per storage; parameters and buffers
    excluded), which is what frozen weights can save beyond gradients and optimizer state.
    ``total`` is their sum: what is held at the end of a forward pass (the previous step's
    gradients are still there, as in ``train_lm``), a lower bound of the step's peak (the
    temporaries of single operations are not counted). Measured on a copy, one batch.
    """
    from .data import get_batch
    from .train import make_optimizer

    m = copy.deepcopy(model).train()
    opt = make_optimizer(m, cfg)
    x, y = get_batch(train_ids, cfg.batch_size, cfg.block_size, torch.Generator().manual_seed(cfg.seed))
    _train_step(m, opt, x, y, cfg.grad_clip)                          # creates gradients and AdamW state
    own = {t.untyped_storage().data_ptr() for t in [*m.parameters(), *m.buffers()]}
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = m(x, y)
    del loss
    params = list(m.parameters())
    out = {"weights": sum(p.numel() * p.element_size() for p in params),
           "gradients": sum(p.numel() * p.element_size() for p in params if p.requires_grad),
           "optimizer": optimizer_state_bytes(opt), "activations": sum(saved.values())}
    out["total"] = sum(out.values())
    return out
