"""Hidden tests of the `masking` assignment (solutions/masking/masking.ipynb).

Papers: Vaswani et al. (2017), "Attention Is All You Need", arXiv:1706.03762 (causal and
padding masks, section 3.2.3); Devlin et al. (2018), "BERT", arXiv:1810.04805 (the masked
language model's 80/10/10 corruption, section 3.1).
The learner writes ``causal_mask(T, device=None)``, ``padding_mask(lengths, max_len=None)``,
``attention_mask(lengths, max_len=None, causal=False)``, ``masked_softmax(scores, mask, dim=-1)``
and ``mlm_corrupt(tokens, mask_id, vocab_size, special_ids=(), p=0.15, generator=None)``.

References are explicit loops and closed forms, independent of ``llmcourse.attention``.
Deterministic behaviour is checked exactly; the random corruption is checked by rates on
large samples with 6-sigma bounds (a chi-square bound far in the tail for uniformity), so any
correct implementation passes whatever order it draws its random numbers in; seeds are fixed,
so a grade never changes between runs. A failing value is compared with a catalogue of
known-wrong variants and the message names the one it matches. Masks are boolean, ``True`` =
may attend.
"""
from __future__ import annotations

import math

import torch

from ..common import LLMCOURSE, TORCH_SDPA, call_learner, close, diagnose, graded, require_tensor

NO_LIBRARY = TORCH_SDPA | LLMCOURSE
SIGMAS = 6.0

# ----------------------------------------------------------------------------- helpers


def _bool_mask(got, name: str, shape: tuple) -> torch.Tensor:
    require_tensor(got, name, shape)
    assert got.dtype == torch.bool, (
        f"{name} has dtype {got.dtype}: masks in the course are boolean (torch.bool), True = may attend")
    return got


def _same(got, want) -> bool:
    return close(got.to(torch.float64), want.to(torch.float64), atol=0, rtol=0)


def _explain(got, variants: dict, default: str) -> str:
    return diagnose(got.to(torch.float64) if got.dtype == torch.bool else got,
                    {m: (lambda f=f: f().to(torch.float64)) for m, f in variants.items()}, default)


# ----------------------------------------------------------------------------- causal and padding masks


def _causal_ref(T: int) -> torch.Tensor:
    m = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            m[i, j] = j <= i
    return m


@graded("causal_mask(T) is True exactly where j <= i")
def check_causal_mask(causal_mask):
    for T in (1, 2, 5, 8):
        kwargs = {"device": torch.device("cpu")} if T == 5 else {}
        got = call_learner(causal_mask, T, what="causal_mask", forbid=NO_LIBRARY, **kwargs)
        _bool_mask(got, f"causal_mask({T})", (T, T))
        want = _causal_ref(T)
        if not _same(got, want):
            ones = torch.ones(T, T, dtype=torch.bool)
            why = _explain(got, {
                "the diagonal is excluded: query i may attend to itself (j <= i), use tril() not tril(-1)":
                    lambda: ones.tril(-1),
                "the mask is transposed: row i is the query, column j the key, so True below the diagonal (tril)":
                    lambda: ones.triu(),
                "the mask is transposed and excludes the diagonal": lambda: ones.triu(1),
                "the mask is inverted: True means 'may attend', so True where j <= i": lambda: ~ones.tril(),
            }, "entry (i, j) must be True exactly when j <= i")
            raise AssertionError(f"causal_mask({T}) is wrong: {why}")


def _padding_ref(lengths: list[int], max_len: int) -> torch.Tensor:
    m = torch.zeros(len(lengths), max_len, dtype=torch.bool)
    for b, n in enumerate(lengths):
        for t in range(max_len):
            m[b, t] = t < n
    return m


def _padding_variants(lengths, L):
    ln = torch.tensor(lengths)[:, None]
    t = torch.arange(L)
    return {
        "padding is off by one: position t is a real token when t < length (t <= length keeps one pad)":
            lambda: t <= ln,
        "padding is off by one: position t is a real token when t < length (t < length - 1 drops one)":
            lambda: t < ln - 1,
        "the mask is inverted: True marks the real tokens, False the padding": lambda: t >= ln,
    }


PADDING_CASES = [([3, 1, 4], None), ([2, 5, 0], 7), ([4], None), ([1, 3, 3, 2], 3)]


@graded("padding_mask(lengths, max_len) is True at real tokens, max_len defaulting to max(lengths)")
def check_padding_mask(padding_mask):
    for i, (lengths, max_len) in enumerate(PADDING_CASES):
        L = max(lengths) if max_len is None else max_len
        arg = torch.tensor(lengths) if i % 2 else list(lengths)
        args = (arg,) if max_len is None else (arg, max_len)
        desc = f"padding_mask({lengths}{'' if max_len is None else f', max_len={max_len}'})"
        got = call_learner(padding_mask, *args, what="padding_mask", forbid=NO_LIBRARY)
        if max_len is None and isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape[1] != L:
            raise AssertionError(f"{desc} has {got.shape[1]} columns: without max_len the mask is as wide as the "
                                 f"longest sequence, max(lengths) = {L}")
        _bool_mask(got, desc, (len(lengths), L))
        want = _padding_ref(lengths, L)
        if not _same(got, want):
            why = _explain(got, _padding_variants(lengths, L), "entry (b, t) must be True exactly when t < lengths[b]")
            raise AssertionError(f"{desc} is wrong: {why}")


def _attention_ref(lengths: list[int], L: int, causal: bool) -> torch.Tensor:
    m = torch.zeros(len(lengths), 1, L, L, dtype=torch.bool)
    for b, n in enumerate(lengths):
        for i in range(L):
            for j in range(L):
                m[b, 0, i, j] = j < n and (j <= i or not causal)
    return m


def _attention_variants(lengths, L, causal):
    ln = torch.tensor(lengths).view(-1, 1, 1, 1)
    i = torch.arange(L).view(1, 1, L, 1)
    j = torch.arange(L).view(1, 1, 1, L)
    key, query = (j < ln).expand(-1, 1, L, L), (i < ln).expand(-1, 1, L, L)
    tri = (j <= i) if causal else torch.ones(1, 1, L, L, dtype=torch.bool)
    v = {
        "the padding is applied to the queries (rows) instead of the keys (columns): a query may not look at "
        "key j when j >= length, so mask[b, 0, i, j] = j < lengths[b]": lambda: query & tri,
        "the padding is applied to both queries and keys: only the keys are masked (padded queries still attend "
        "to the real keys, so no row is empty)": lambda: query & key & tri,
        "the key padding is off by one: key j is real when j < length": lambda: (j <= ln) & tri,
        "the mask is inverted: True means 'may attend'": lambda: ~(key & tri),
    }
    if causal:
        v.update({
            "the masks are combined with OR (|): a key must be both real and not in the future, combine with AND (&)":
                lambda: key | tri,
            "the causal part is transposed: query i may attend keys j <= i (lower triangle)":
                lambda: key & (j >= i),
            "the causal part excludes the diagonal: query i may attend to itself": lambda: key & (j < i),
            "the causal mask is missing: with causal=True, also require j <= i": lambda: key,
        })
    else:
        v["with causal=False there must be no causal mask, only key padding"] = lambda: key & (j <= i)
    return v


ATTENTION_CASES = [([4, 2, 5], None, False), ([4, 2, 5], None, True), ([3, 1], 5, True), ([2, 6, 1], 6, False),
                   ([1, 4], None, True)]


@graded("attention_mask(lengths, max_len, causal) masks padded keys (and the future), shape (B, 1, L, L)")
def check_attention_mask(attention_mask):
    for lengths, max_len, causal in ATTENTION_CASES:
        L = max(lengths) if max_len is None else max_len
        B = len(lengths)
        kwargs = {"causal": True} if causal else {}
        args = (list(lengths),) if max_len is None else (torch.tensor(lengths), max_len)
        desc = (f"attention_mask({lengths}" + ("" if max_len is None else f", max_len={max_len}")
                + (", causal=True" if causal else "") + ")")
        got = call_learner(attention_mask, *args, what="attention_mask", forbid=NO_LIBRARY, **kwargs)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (B, L, L):
            raise AssertionError(f"{desc} has shape {(B, L, L)}: add the head axis, shape (B, 1, L, L), so that the "
                                 f"mask broadcasts over the heads of scores (B, n_heads, L, L)")
        _bool_mask(got, desc, (B, 1, L, L))
        want = _attention_ref(lengths, L, causal)
        if not _same(got, want):
            why = _explain(got, _attention_variants(lengths, L, causal),
                           "mask[b, 0, i, j] must be True exactly when j < lengths[b]"
                           + (" and j <= i" if causal else ""))
            raise AssertionError(f"{desc} is wrong: {why}")


# ----------------------------------------------------------------------------- masked softmax


def _softmax_ref(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Closed form in float64, slice by slice: exp(s - max) over the allowed entries, normalised."""
    mask = torch.broadcast_to(mask, scores.shape)
    s = scores.detach().double().movedim(dim, -1).contiguous()
    m = mask.movedim(dim, -1).contiguous()
    out = torch.zeros(s.shape, dtype=torch.float64)
    flat_s, flat_m, flat_o = s.reshape(-1, s.shape[-1]), m.reshape(-1, m.shape[-1]), out.view(-1, s.shape[-1])
    for r in range(flat_s.shape[0]):
        keep = flat_m[r]
        if keep.any():
            e = torch.exp(flat_s[r][keep] - flat_s[r][keep].max())
            flat_o[r][keep] = e / e.sum()
    return out.movedim(-1, dim).to(scores.dtype)


def _softmax_variants(scores, mask, dim):
    s = scores.detach()
    return {
        "you applied the softmax first and zeroed the masked entries after it, without renormalising: the allowed "
        "entries no longer sum to one; fill the masked scores with -inf before the softmax":
            lambda: torch.softmax(s, dim) * mask,
        "the mask is inverted: True means 'allowed'": lambda: torch.softmax(s.masked_fill(mask, -math.inf), dim),
        "the mask is ignored": lambda: torch.softmax(s, dim),
        "the masked scores were filled with 0, which still gets weight: fill them with -inf":
            lambda: torch.softmax(s.masked_fill(~mask, 0.0), dim),
        "the softmax is taken over the wrong dimension: use the `dim` argument":
            lambda: _softmax_ref(s, mask, -2 if dim in (-1, s.dim() - 1) else -1),
    }


def _softmax_cases(g, empty: bool):
    """(description, scores, mask, dim); with ``empty``, some slices have no allowed entry."""
    def rmask(shape, along):
        m = torch.rand(shape, generator=g) < 0.6
        idx = [slice(None)] * len(shape)
        idx[along] = 0
        m[tuple(idx)] = True                                   # at least one allowed entry per slice
        return m
    cases = [
        ("scores (2, 3, 4, 6), full random mask, dim=-1", torch.randn(2, 3, 4, 6, generator=g),
         rmask((2, 3, 4, 6), -1), -1),
        ("scores (2, 3, 5, 5), mask (2, 1, 1, 5) broadcast over heads and queries",
         torch.randn(2, 3, 5, 5, generator=g), torch.arange(5) < torch.tensor([3, 5]).view(2, 1, 1, 1), -1),
        ("scores (4, 7), mask (4, 7), dim=0", torch.randn(4, 7, generator=g) * 3, rmask((4, 7), 0), 0),
        ("scores (2, 6, 3), mask (2, 6, 3), dim=1", torch.randn(2, 6, 3, generator=g), rmask((2, 6, 3), 1), 1),
    ]
    if empty:
        m = rmask((3, 4, 5), -1)
        m[0, 1] = False
        m[2, 3] = False
        pad = torch.arange(4) < torch.tensor([4, 2]).view(2, 1)
        q_and_k = (pad[:, :, None] & pad[:, None, :])[:, None]          # (2, 1, 4, 4): padded queries too
        m0 = rmask((5, 3), 0)
        m0[:, 1] = False
        cases = [
            ("scores (3, 4, 5) with two fully masked rows, dim=-1", torch.randn(3, 4, 5, generator=g), m, -1),
            ("scores (2, 2, 4, 4), padded queries and keys masked (rows of padded queries are empty)",
             torch.randn(2, 2, 4, 4, generator=g), q_and_k, -1),
            ("scores (5, 3) with an empty column, dim=0", torch.randn(5, 3, generator=g), m0, 0),
            ("scores (2, 3), nothing allowed", torch.randn(2, 3, generator=g), torch.zeros(2, 3, dtype=torch.bool), -1),
        ]
    return cases


def _call_softmax(fn, scores, mask, dim, desc):
    args = (scores, mask) if dim == -1 else (scores, mask, dim)
    got = call_learner(fn, *args, what="masked_softmax", forbid=NO_LIBRARY)
    return require_tensor(got, f"masked_softmax ({desc})", tuple(scores.shape))


def _compare_softmax(fn, desc, scores, mask, dim):
    got = _call_softmax(fn, scores, mask, dim, desc)
    if torch.isnan(got).any():
        raise AssertionError(f"masked_softmax returns NaN ({desc}): a softmax over a slice whose scores are all -inf "
                             f"is 0/0; a slice with no allowed entry must come out as all zeros")
    want = _softmax_ref(scores, mask, dim)
    if not close(got, want):
        empty = ~torch.broadcast_to(mask, scores.shape).any(dim, keepdim=True).expand(scores.shape)
        rest_ok = close(got.masked_fill(empty, 0), want.masked_fill(empty, 0))
        if empty.any() and rest_ok:
            uniform = (got[empty] - 1.0 / scores.shape[dim]).abs().max() < 1e-4
            raise AssertionError(
                f"masked_softmax is wrong on slices with no allowed entry ({desc}): "
                + ("they come out uniform (1/n each): filling with a large negative number (like -1e9) instead of "
                   "-inf does that; such slices must be all zeros" if uniform else "they must be all zeros"))
        why = _explain(got, _softmax_variants(scores, mask, dim),
                       "compare with exp(s) / sum(exp(s)) over the allowed entries only")
        raise AssertionError(f"masked_softmax is wrong ({desc}): {why}")
    masked = ~torch.broadcast_to(mask, scores.shape)
    assert (got[masked] == 0).all(), (
        f"masked entries are not exactly 0 ({desc}): fill masked scores with -inf (not a large negative number) "
        f"or zero them after the softmax")


@graded("masked_softmax equals the softmax over the allowed entries, masked entries exactly 0")
def check_masked_softmax_values(fn):
    g = torch.Generator().manual_seed(21)
    for case in _softmax_cases(g, empty=False):
        _compare_softmax(fn, *case)


@graded("masked_softmax gives all zeros, never NaN, on a slice with no allowed entry")
def check_masked_softmax_empty(fn):
    g = torch.Generator().manual_seed(22)
    for case in _softmax_cases(g, empty=True):
        _compare_softmax(fn, *case)


@graded("masked_softmax has finite, correct gradients, also through fully masked slices")
def check_masked_softmax_grad(fn):
    g = torch.Generator().manual_seed(23)
    for desc, scores, mask, dim in _softmax_cases(g, empty=False)[:1] + _softmax_cases(g, empty=True)[:3]:
        scores = scores.clone().requires_grad_(True)
        r = torch.randn(scores.shape, generator=g)
        got = _call_softmax(fn, scores, mask, dim, desc)
        assert got.requires_grad, (
            f"the result does not require grad ({desc}): compute it from scores with differentiable tensor "
            f"operations (no .detach(), .item(), torch.tensor(...), torch.no_grad())")
        (grad,) = call_learner(torch.autograd.grad, (got * r).sum(), scores, allow_unused=True,
                               what="backpropagating through masked_softmax")
        assert grad is not None, f"no gradient reaches the scores ({desc})"
        if not torch.isfinite(grad).all():
            raise AssertionError(
                f"the gradient with respect to the scores has NaN or inf entries ({desc}): the forward pass may look "
                f"right, but a softmax over all -inf followed by torch.where / nan_to_num still backpropagates NaN; "
                f"make the scores of empty slices finite before the softmax and zero the result after it")
        ref_scores = scores.detach().double().requires_grad_(True)
        ref = _softmax_ref_diff(ref_scores, mask, dim)
        (want,) = torch.autograd.grad((ref * r.double()).sum(), ref_scores)
        assert close(grad, want), (
            f"the gradient with respect to the scores is wrong ({desc}): masked entries and empty slices should get "
            f"zero gradient, allowed ones the softmax's")


def _softmax_ref_diff(scores, mask, dim):
    """A differentiable reference: exp over allowed entries only (shifted by a constant), normalised."""
    mask = torch.broadcast_to(mask, scores.shape)
    shift = scores.detach().masked_fill(~mask, -math.inf).amax(dim, keepdim=True).nan_to_num(0.0, 0.0, 0.0)
    e = torch.exp(torch.where(mask, scores - shift, torch.zeros_like(scores))) * mask
    return e / e.sum(dim, keepdim=True).clamp_min(1e-300)


# ----------------------------------------------------------------------------- MLM corruption

VOCAB, MASK_ID, SPECIALS = 12, 3, (0, 1, 2)
EXCLUDED = (0, 1, 2, 3)
ALLOWED = tuple(t for t in range(VOCAB) if t not in EXCLUDED)           # 8 ordinary tokens
ROWS, ELIGIBLE_PER_ROW, EXCLUDED_PER_ROW = 4000, 48, 16


def _mlm_tokens(g, rows=ROWS):
    """(rows, 64) tokens: per row 48 ordinary tokens and 16 special or mask_id tokens, shuffled."""
    ordinary = torch.tensor(ALLOWED)[torch.randint(len(ALLOWED), (rows, ELIGIBLE_PER_ROW), generator=g)]
    special = torch.tensor(EXCLUDED)[torch.randint(len(EXCLUDED), (rows, EXCLUDED_PER_ROW), generator=g)]
    x = torch.cat([ordinary, special], 1)
    perm = torch.argsort(torch.rand(x.shape, generator=g), dim=1)
    return torch.gather(x, 1, perm)


def _call_mlm(fn, tokens, p, seed, desc, **kwargs):
    before = tokens.clone()
    gen = torch.Generator().manual_seed(seed)
    result = call_learner(fn, tokens, MASK_ID, VOCAB, special_ids=SPECIALS, p=p, generator=gen,
                          what="mlm_corrupt", forbid=NO_LIBRARY, **kwargs)
    assert torch.equal(tokens, before), (
        f"mlm_corrupt modified its input tokens in place ({desc}): work on a copy (tokens.clone()) or build new "
        f"tensors (torch.where); the caller still needs the original tokens")
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"mlm_corrupt should return a pair (inputs, labels), got {type(result).__name__}")
    inputs, labels = result
    require_tensor(inputs, f"inputs ({desc})", tuple(tokens.shape))
    require_tensor(labels, f"labels ({desc})", tuple(tokens.shape))
    assert not inputs.dtype.is_floating_point and not labels.dtype.is_floating_point, (
        f"inputs and labels should be integer token tensors ({desc}), got {inputs.dtype} and {labels.dtype}")
    return inputs.long(), labels.long()


def _check_consistency(tokens, inputs, labels, desc):
    """What holds for every draw: labels are -100 or the original; only selected positions change."""
    excluded = torch.isin(tokens, torch.tensor(EXCLUDED))
    selected = labels != -100
    if selected.all() and tokens.numel() > 20:
        raise AssertionError(f"every position has a label other than -100 ({desc}): labels keep the original token "
                             f"ONLY at the selected positions and are -100 at all the others (and at special tokens)")
    bad = selected & (labels != tokens)
    if bad.any():
        if (selected & (labels == inputs) & (inputs != tokens)).any():
            raise AssertionError(f"the labels hold the corrupted inputs ({desc}): they must hold the ORIGINAL token at "
                                 f"the selected positions")
        raise AssertionError(f"some labels are neither -100 nor the original token ({desc}): labels = original token "
                             f"at selected positions, -100 elsewhere")
    if (selected & excluded).any():
        if (tokens[selected & excluded] == MASK_ID).all():
            raise AssertionError(f"positions holding mask_id were selected ({desc}): exclude mask_id as well as the "
                                 f"special ids")
        raise AssertionError(f"special tokens were selected ({desc}): positions whose token is in special_ids (or is "
                             f"mask_id) are never selected, never changed, and get label -100")
    changed = inputs != tokens
    if (changed & ~selected).any():
        if (changed & excluded).any():
            raise AssertionError(f"special tokens were changed ({desc}): positions holding a special id or mask_id "
                                 f"must stay as they are")
        raise AssertionError(f"some positions changed but have label -100 ({desc}): every position you corrupt is a "
                             f"selected one, and its label must be the original token")


@graded("mlm_corrupt: shapes, labels (-100 or the original), special tokens untouched, input not modified")
def check_mlm_contract(fn):
    g = torch.Generator().manual_seed(31)
    tokens = _mlm_tokens(g, rows=300)
    for p, desc in [(0.15, "p=0.15"), (0.5, "p=0.5")]:
        inputs, labels = _call_mlm(fn, tokens, p, 1, desc)
        _check_consistency(tokens, inputs, labels, desc)
    one_d = tokens[0].clone()
    inputs, labels = _call_mlm(fn, one_d, 0.5, 2, "1-D tokens of length 64")
    _check_consistency(one_d, inputs, labels, "1-D tokens of length 64")
    tokens = tokens[:20]                          # small: `u <= p` with u == 0 exactly stays vanishingly rare
    inputs, labels = _call_mlm(fn, tokens, 0.0, 3, "p=0")
    if (labels != -100).any():
        if torch.equal(labels, tokens):
            raise AssertionError("with p=0 the labels equal the tokens: positions that are not selected must get "
                                 "label -100 (the loss ignores them), not their original token")
        raise AssertionError("with p=0 nothing is selected, so every label must be -100")
    assert torch.equal(inputs, tokens), "with p=0 nothing is selected, so the inputs must equal the tokens"
    inputs, labels = _call_mlm(fn, tokens, 1.0, 4, "p=1")
    _check_consistency(tokens, inputs, labels, "p=1")
    eligible = ~torch.isin(tokens, torch.tensor(EXCLUDED))
    assert torch.equal(labels != -100, eligible), (
        "with p=1 every position whose token is neither special nor mask_id must be selected (label = original token)")
    # the default special_ids=() still excludes mask_id
    t = torch.tensor([[MASK_ID, 5, MASK_ID, 7, 0, 1]] * 50)
    gen = torch.Generator().manual_seed(5)
    inputs, labels = call_learner(fn, t, MASK_ID, VOCAB, p=1.0, generator=gen, what="mlm_corrupt", forbid=NO_LIBRARY)
    assert torch.equal(labels != -100, t != MASK_ID), (
        "with special_ids=() (the default) and p=1, every position except those holding mask_id must be selected")


def _rate_bound(k: int, n: int, p: float, what: str, desc: str, hint: str = "") -> None:
    rate, sd = k / n, math.sqrt(p * (1 - p) / n)
    if abs(rate - p) > SIGMAS * sd:
        raise AssertionError(f"{what} is {rate:.4f} over {n} positions ({desc}), expected {p:.4f} "
                             f"(a correct implementation is within ±{SIGMAS * sd:.4f}){hint}")


@graded("mlm_corrupt selects each ordinary position independently with probability p")
def check_mlm_selection(fn):
    g = torch.Generator().manual_seed(32)
    tokens = _mlm_tokens(g)
    eligible = ~torch.isin(tokens, torch.tensor(EXCLUDED))
    for p, seed in [(0.15, 11), (0.4, 12)]:
        desc = f"p={p}, {ROWS} rows of {ELIGIBLE_PER_ROW} ordinary and {EXCLUDED_PER_ROW} special tokens"
        inputs, labels = _call_mlm(fn, tokens, p, seed, desc)
        _check_consistency(tokens, inputs, labels, desc)
        selected = labels != -100
        k, n = int(selected.sum()), int(eligible.sum())
        overall = k / tokens.numel()
        hint = ""
        if abs(overall - p) < 0.01 and abs(k / n - p) > 0.02:
            hint = (": you selected a fraction p of ALL positions; the rate p applies to the ordinary positions "
                    "only (special tokens are excluded first, then each remaining one is selected with probability p)")
        _rate_bound(k, n, p, "the fraction of ordinary positions selected", desc, hint)
        # independence: per-row counts of selected positions are Binomial(48, p)
        counts = selected.sum(1).double()
        var, want = float(counts.var()), ELIGIBLE_PER_ROW * p * (1 - p)
        mu4 = 3 * want ** 2 + want * (1 - 6 * p * (1 - p))
        sd = math.sqrt((mu4 - want ** 2) / ROWS)
        if abs(var - want) > SIGMAS * sd:
            raise AssertionError(
                f"the number of selected positions per sequence has variance {var:.3f} ({desc}), expected {want:.3f} "
                f"for independent selections"
                + (": it looks like you select a fixed number of positions (e.g. round(p * n)); select each position "
                   "independently with probability p" if var < want / 4 else ""))


@graded("mlm_corrupt: of the selected, 80% become mask_id, 10% a uniform ordinary token, 10% stay")
def check_mlm_replacements(fn):
    g = torch.Generator().manual_seed(33)
    tokens = _mlm_tokens(g)
    desc = f"p=0.5, {ROWS} rows of 64 tokens, vocab_size={VOCAB}, mask_id={MASK_ID}, special_ids={SPECIALS}"
    inputs, labels = _call_mlm(fn, tokens, 0.5, 13, desc)
    _check_consistency(tokens, inputs, labels, desc)
    selected = labels != -100
    n = int(selected.sum())
    assert n > 1000, f"only {n} positions were selected ({desc}): with p=0.5 about half the ordinary ones should be"
    sel_in, sel_orig = inputs[selected], tokens[selected]
    masked, kept = sel_in == MASK_ID, sel_in == sel_orig
    other = ~masked & ~kept
    if torch.isin(sel_in[other], torch.tensor(SPECIALS)).any() or (sel_in[other] >= VOCAB).any() \
            or (sel_in[other] < 0).any():
        raise AssertionError(f"some random replacements are special tokens or outside the vocabulary ({desc}): draw "
                             f"them uniformly from the vocabulary WITHOUT the special ids and mask_id")
    n_ok = len(ALLOWED)
    if int(masked.sum()) == n:
        raise AssertionError(f"every selected position became mask_id ({desc}): only 80% should; 10% get a random "
                             f"ordinary token and 10% keep their token")
    _rate_bound(int(masked.sum()), n, 0.8, "the fraction of selected positions replaced by mask_id", desc)
    p_keep = 0.1 + 0.1 / n_ok                    # the random branch draws the original back 1 time in 8
    hint = ""
    if int(other.sum()) == 0:
        hint = ": no selected position got a random ordinary token; 10% of them should"
    elif abs(int(kept.sum()) / n - 0.1) < 0.004:
        hint = (": the random replacement never equals the original token; draw it uniformly from all ordinary "
                "tokens (the original included), as the contract says")
    _rate_bound(int(kept.sum()), n, p_keep, "the fraction of selected positions left unchanged", desc, hint)
    _rate_bound(int(other.sum()), n, 0.1 - 0.1 / n_ok, "the fraction of selected positions given another token",
                desc, hint)
    # uniformity of the random replacements over the 8 ordinary tokens (chi-square, 7 degrees of freedom)
    counts = torch.bincount(sel_in[other], minlength=VOCAB)[list(ALLOWED)].double()
    expected = counts.sum() / n_ok
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    if chi2 > 60.0:                                # P(chi2_7 > 60) is about 1.5e-10
        raise AssertionError(f"the random replacements are not uniform over the ordinary tokens ({desc}): counts "
                             f"{counts.long().tolist()} for tokens {list(ALLOWED)} (chi-square {chi2:.0f}); draw "
                             f"uniformly from the vocabulary without the special ids and mask_id")


@graded("mlm_corrupt draws all its randomness from `generator` (same seed, same result)")
def check_mlm_generator(fn):
    g = torch.Generator().manual_seed(34)
    tokens = _mlm_tokens(g, rows=200)
    first = _call_mlm(fn, tokens, 0.3, 99, "generator seeded with 99")
    torch.manual_seed(12345)                      # the global RNG must not matter
    again = _call_mlm(fn, tokens, 0.3, 99, "generator seeded with 99 again")
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1]), (
        "two calls with generators seeded the same gave different results: pass `generator=generator` to every "
        "random draw (torch.rand, torch.randint, torch.bernoulli, torch.multinomial, ...)")
    other = _call_mlm(fn, tokens, 0.3, 100, "generator seeded with 100")
    assert not torch.equal(first[1], other[1]), (
        "generators with different seeds gave the same selection: the selection must be random, drawn from "
        "`generator`")
