"""The `masking` assignment's autograder: its catalogue, proven in-process and by nbgrader.

The catalogue: the solution, the untouched release, wrong implementations (each must lose
the points of the named test cells, with a message naming the mistake, and nothing in the
parts it does not touch), several correct ones written differently (loops, log-sum-exp,
other RNG call orders: full marks), parts that call ``llmcourse.attention`` or PyTorch's
fused attention (no credit for that part), and broken submissions. Every entry is proven
in-process in the fast tier (``test_catalogue_in_process``, see
:class:`nbgrader_harness.Catalogue`); one real ``nbgrader autograde`` batch (slow) grades the
solution, the release, one wrong entry per part, one library call and the broken
submissions, and checks that nbgrader's verdicts equal the in-process ones.
``tests/test_grading_masking.py`` tests the statistical checks themselves.
"""
from __future__ import annotations

import textwrap

import pytest

from nbgrader_harness import Catalogue, grade_id, solution_sources

ASSIGNMENT = "masking"
SOL = solution_sources(ASSIGNMENT)
PART_TESTS = {
    "masks": ["test_causal_mask", "test_padding_mask", "test_attention_mask"],
    "softmax": ["test_masked_softmax_values", "test_masked_softmax_empty", "test_masked_softmax_grad"],
    "mlm": ["test_mlm_contract", "test_mlm_selection", "test_mlm_replacements", "test_mlm_generator"],
}


def code(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


CAUSAL = """
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()
"""
PADDING = """
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return torch.arange(max_len) < lengths[:, None]
"""
ATTENTION = """
def attention_mask(lengths, max_len=None, causal=False):
    keys = padding_mask(lengths, max_len)
    L = keys.shape[1]
    mask = keys[:, None, None, :].expand(-1, 1, L, L)
    if causal:
        mask = mask & causal_mask(L)
    return mask
"""


def masks(causal: str = CAUSAL, padding: str = PADDING, attention: str = ATTENTION) -> dict[str, str]:
    return {"masks": "\n\n".join(code(s) for s in (causal, padding, attention))}


def softmax(body: str) -> dict[str, str]:
    return {"softmax": "def masked_softmax(scores, mask, dim=-1):\n" + textwrap.indent(code(body), "    ")}


def mlm(body: str, pre: str = "") -> dict[str, str]:
    return {"mlm": code(pre) + ("\n\n" if pre else "")
            + "def mlm_corrupt(tokens, mask_id, vocab_size, special_ids=(), p=0.15, generator=None):\n"
            + textwrap.indent(code(body), "    ")}


def mlm_standard(select: str = "eligible & (torch.rand(tokens.shape, generator=generator) < p)",
                 excluded: str = "torch.tensor(sorted({mask_id, *special_ids}))",
                 allowed: str = "allowed[~torch.isin(allowed, excluded)]",
                 mask_band: str = "action < 0.8", random_band: str = "(action >= 0.8) & (action < 0.9)",
                 labels: str = "torch.where(selected, tokens, torch.full_like(tokens, -100))",
                 pre: str = "") -> dict[str, str]:
    """The solution's mlm_corrupt with one piece replaced."""
    return mlm(f"""
        excluded = {excluded}
        eligible = ~torch.isin(tokens, excluded)
        selected = {select}
        action = torch.rand(tokens.shape, generator=generator)
        allowed = torch.arange(vocab_size)
        allowed = {allowed}
        random_tokens = allowed[torch.randint(len(allowed), tokens.shape, generator=generator)]
        inputs = torch.where(selected & ({mask_band}), torch.full_like(tokens, mask_id), tokens)
        inputs = torch.where(selected & ({random_band}), random_tokens, inputs)
        labels = {labels}
        return inputs, labels""", pre)


# name -> (cell sources replacing the solution's, test cells that must lose points, words the
# message of the first of them must contain)
WRONG = {
    # -- masks
    "causal_without_diagonal": (masks(causal="""
        def causal_mask(T, device=None):
            return torch.ones(T, T, dtype=torch.bool, device=device).tril(-1)"""),
        ["test_causal_mask", "test_attention_mask"], "diagonal is excluded"),
    "causal_transposed": (masks(causal="""
        def causal_mask(T, device=None):
            return torch.ones(T, T, dtype=torch.bool, device=device).triu()"""),
        ["test_causal_mask", "test_attention_mask"], "transposed"),
    "causal_float": (masks(causal="""
        def causal_mask(T, device=None):
            return torch.tril(torch.ones(T, T, device=device))"""),
        ["test_causal_mask"], "dtype"),
    "padding_off_by_one": (masks(padding="""
        def padding_mask(lengths, max_len=None):
            lengths = torch.as_tensor(lengths)
            if max_len is None:
                max_len = int(lengths.max())
            return torch.arange(max_len) <= lengths[:, None]"""),
        ["test_padding_mask", "test_attention_mask"], "off by one"),
    "padding_default_width": (masks(padding="""
        def padding_mask(lengths, max_len=None):
            lengths = torch.as_tensor(lengths)
            if max_len is None:
                max_len = len(lengths)
            return torch.arange(max_len) < lengths[:, None]"""),
        ["test_padding_mask"], "max(lengths)"),
    "padding_on_queries": (masks(attention="""
        def attention_mask(lengths, max_len=None, causal=False):
            real = padding_mask(lengths, max_len)
            L = real.shape[1]
            mask = real[:, None, :, None].expand(-1, 1, L, L)
            if causal:
                mask = mask & causal_mask(L)
            return mask"""),
        ["test_attention_mask"], "queries (rows) instead of the keys"),
    "padding_on_queries_and_keys": (masks(attention="""
        def attention_mask(lengths, max_len=None, causal=False):
            real = padding_mask(lengths, max_len)
            mask = (real[:, None, :, None] & real[:, None, None, :])
            if causal:
                mask = mask & causal_mask(real.shape[1])
            return mask"""),
        ["test_attention_mask"], "both queries and keys"),
    "masks_combined_with_or": (masks(attention="""
        def attention_mask(lengths, max_len=None, causal=False):
            keys = padding_mask(lengths, max_len)
            L = keys.shape[1]
            mask = keys[:, None, None, :].expand(-1, 1, L, L)
            if causal:
                mask = mask | causal_mask(L)
            return mask"""),
        ["test_attention_mask"], "combined with OR"),
    "attention_mask_without_head_axis": (masks(attention="""
        def attention_mask(lengths, max_len=None, causal=False):
            keys = padding_mask(lengths, max_len)
            L = keys.shape[1]
            mask = keys[:, None, :].expand(-1, L, L)
            if causal:
                mask = mask & causal_mask(L)
            return mask"""),
        ["test_attention_mask"], "head axis"),
    "attention_mask_ignores_causal": (masks(attention="""
        def attention_mask(lengths, max_len=None, causal=False):
            keys = padding_mask(lengths, max_len)
            L = keys.shape[1]
            return keys[:, None, None, :].expand(-1, 1, L, L)"""),
        ["test_attention_mask"], "causal mask is missing"),
    # -- masked softmax
    "softmax_nan_on_empty_rows": (softmax("""
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)"""),
        ["test_masked_softmax_empty"], "NaN"),
    "softmax_then_mask_without_renormalising": (softmax("""
        return torch.softmax(scores, dim=dim) * mask"""),
        ["test_masked_softmax_values", "test_masked_softmax_empty"], "without renormalising"),
    "softmax_large_negative_fill": (softmax("""
        return torch.softmax(scores.masked_fill(~mask, -1e9), dim=dim)"""),
        ["test_masked_softmax_empty"], "uniform"),
    "softmax_nan_gradient": (softmax("""
        s = scores + torch.zeros_like(scores).masked_fill(~mask, float("-inf"))   # additive mask
        p = torch.softmax(s, dim=dim)
        return torch.where(mask, p, torch.zeros_like(p))"""),
        ["test_masked_softmax_grad"], "NaN or inf"),
    "softmax_ignores_dim": (softmax("""
        mask = torch.broadcast_to(mask, scores.shape)
        anything = mask.any(-1, keepdim=True)
        s = scores.masked_fill(~mask, float("-inf")).masked_fill(~anything, 0.0)
        return torch.softmax(s, dim=-1).masked_fill(~mask, 0.0)"""),
        ["test_masked_softmax_values"], "wrong dimension"),
    "softmax_mask_inverted": (softmax("""
        mask = ~torch.broadcast_to(mask, scores.shape)
        anything = mask.any(dim, keepdim=True)
        s = scores.masked_fill(~mask, float("-inf")).masked_fill(~anything, 0.0)
        return torch.softmax(s, dim=dim).masked_fill(~mask, 0.0)"""),
        ["test_masked_softmax_values"], "inverted"),
    # -- MLM corruption
    "mlm_all_selected_masked": (mlm_standard(mask_band="action < 1.0", random_band="action > 2.0"),
                                ["test_mlm_replacements"], "every selected position became mask_id"),
    "mlm_special_tokens_selected": (mlm_standard(excluded="torch.tensor([mask_id])"),
                                    ["test_mlm_contract", "test_mlm_selection"], "special tokens were selected"),
    "mlm_mask_id_selected": (mlm_standard(
        excluded="torch.tensor(sorted(set(special_ids)) or [-1])",
        allowed="allowed[~torch.isin(allowed, torch.tensor([mask_id, *special_ids]))]"),
                             ["test_mlm_contract"], "mask_id"),
    "mlm_labels_at_every_position": (mlm_standard(labels="tokens.clone()"),
                                     ["test_mlm_contract", "test_mlm_selection"], "-100 at all the others"),
    "mlm_labels_hold_corrupted_inputs": (mlm_standard(
        labels="torch.where(selected, inputs, torch.full_like(tokens, -100))"),
                                         ["test_mlm_contract"], "ORIGINAL"),
    "mlm_modifies_input_in_place": (mlm("""
        excluded = torch.tensor(sorted({mask_id, *special_ids}))
        selected = ~torch.isin(tokens, excluded) & (torch.rand(tokens.shape, generator=generator) < p)
        action = torch.rand(tokens.shape, generator=generator)
        allowed = torch.arange(vocab_size)
        allowed = allowed[~torch.isin(allowed, excluded)]
        random_tokens = allowed[torch.randint(len(allowed), tokens.shape, generator=generator)]
        labels = torch.where(selected, tokens, torch.full_like(tokens, -100))
        tokens[selected & (action < 0.8)] = mask_id
        swap = selected & (action >= 0.8) & (action < 0.9)
        tokens[swap] = random_tokens[swap]
        return tokens, labels"""), PART_TESTS["mlm"], "in place"),
    "mlm_random_from_whole_vocabulary": (mlm_standard(allowed="allowed"),
                                         ["test_mlm_replacements"], "WITHOUT the special ids"),
    "mlm_random_off_by_one": (mlm_standard(allowed="allowed[~torch.isin(allowed, excluded)][:-1]"),
                              ["test_mlm_replacements"], "not uniform"),
    "mlm_rate_p_over_all_positions": (mlm_standard(
        select="eligible & (torch.rand(tokens.shape, generator=generator) < p * tokens.numel() / eligible.sum())"),
        ["test_mlm_selection"], "fraction p of ALL positions"),
    "mlm_fixed_number_per_sequence": (mlm_standard(select="fixed(eligible, p, generator)", pre="""
        def fixed(eligible, p, generator):
            # exactly round(p * n) ordinary positions per sequence
            e = eligible.reshape(-1, eligible.shape[-1])
            r = torch.rand(e.shape, generator=generator).masked_fill(~e, 2.0)
            k = (e.sum(-1, keepdim=True) * p).round().long()
            rank = r.argsort(-1).argsort(-1)
            return (rank < k).reshape(eligible.shape)"""), ["test_mlm_selection"], "fixed number"),
    "mlm_ignores_generator": (mlm_standard(select="eligible & (torch.rand(tokens.shape) < p)"),
                              ["test_mlm_generator"], "seeded the same"),
    "mlm_no_random_tokens": (mlm_standard(random_band="action > 2.0"),
                             ["test_mlm_replacements"], "no selected position got a random"),
    "mlm_p_ignored": (mlm_standard(select="eligible & (torch.rand(tokens.shape, generator=generator) < 0.15)"),
                      ["test_mlm_contract", "test_mlm_selection"], "p=0"),
}

NOISY_SOFTMAX = softmax("""
    import warnings
    print("masked_softmax on", tuple(scores.shape))
    warnings.warn("a harmless learner warning")
    mask = torch.broadcast_to(mask, scores.shape)
    anything = mask.any(dim, keepdim=True)
    s = scores.masked_fill(~mask, float("-inf")).masked_fill(~anything, 0.0)
    return torch.softmax(s, dim=dim).masked_fill(~mask, 0.0)""")

CORRECT = {
    # loops everywhere, log-sum-exp softmax, sequential Bernoulli draws
    "loops_logsumexp_bernoulli": {
        "masks": code("""
            def causal_mask(T, device=None):
                m = torch.zeros(T, T, dtype=torch.bool, device=device)
                for i in range(T):
                    for j in range(i + 1):
                        m[i, j] = True
                return m


            def padding_mask(lengths, max_len=None):
                lengths = [int(n) for n in lengths]
                max_len = max(lengths) if max_len is None else max_len
                m = torch.zeros(len(lengths), max_len, dtype=torch.bool)
                for b, n in enumerate(lengths):
                    m[b, :n] = True
                return m


            def attention_mask(lengths, max_len=None, causal=False):
                pad = padding_mask(lengths, max_len)
                B, L = pad.shape
                m = torch.zeros(B, 1, L, L, dtype=torch.bool)
                for b in range(B):
                    for i in range(L):
                        for j in range(L):
                            m[b, 0, i, j] = bool(pad[b, j]) and (not causal or j <= i)
                return m"""),
        **softmax("""
            mask = torch.broadcast_to(mask, scores.shape)
            s = scores.masked_fill(~mask, float("-inf"))
            lse = torch.logsumexp(s, dim=dim, keepdim=True)
            lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
            s = torch.where(mask, s - lse, torch.full_like(s, float("-inf")))
            return torch.exp(s)"""),
        **mlm("""
            excluded = set(special_ids) | {mask_id}
            eligible = torch.ones_like(tokens, dtype=torch.bool)
            for t in excluded:
                eligible &= tokens != t
            selected = torch.bernoulli(torch.full(tokens.shape, float(p)), generator=generator).bool() & eligible
            to_mask = selected & torch.bernoulli(torch.full(tokens.shape, 0.8), generator=generator).bool()
            rest = selected & ~to_mask
            to_random = rest & torch.bernoulli(torch.full(tokens.shape, 0.5), generator=generator).bool()
            ordinary = torch.tensor([t for t in range(vocab_size) if t not in excluded])
            inputs = tokens.clone()
            inputs[to_mask] = mask_id
            n = int(to_random.sum())
            inputs[to_random] = ordinary[torch.randint(0, len(ordinary), (n,), generator=generator)]
            labels = torch.full_like(tokens, -100)
            labels[selected] = tokens[selected]
            return inputs, labels""")},
    # one uniform draw split into bands; softmax by exp / sum with a guarded denominator
    "uniform_bands_manual_softmax": {
        **masks(causal="""
            def causal_mask(T, device=None):
                i = torch.arange(T, device=device)
                return i[None, :] <= i[:, None]""", attention="""
            def attention_mask(lengths, max_len=None, causal=False):
                keys = padding_mask(lengths, max_len)
                L = keys.shape[-1]
                m = keys.view(-1, 1, 1, L).repeat(1, 1, L, 1)
                return m & causal_mask(L) if causal else m"""),
        **softmax("""
            mask = torch.broadcast_to(mask, scores.shape)
            shift = scores.masked_fill(~mask, float("-inf")).amax(dim, keepdim=True)
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift)).detach()
            e = torch.exp((scores - shift).masked_fill(~mask, 0.0)) * mask
            total = e.sum(dim, keepdim=True)
            return e / torch.where(total > 0, total, torch.ones_like(total))"""),
        **mlm("""
            bad = torch.tensor([mask_id, *special_ids])
            ordinary = (tokens[..., None] != bad).all(-1)
            u = torch.rand(tokens.shape, generator=generator)
            selected = ordinary & (u < p)
            to_mask = selected & (u < 0.8 * p)
            to_random = selected & (u >= 0.8 * p) & (u < 0.9 * p)
            keep = torch.ones(vocab_size, dtype=torch.bool)
            keep[bad] = False
            pool = keep.nonzero().squeeze(1)
            draw = pool[torch.randint(pool.numel(), tokens.shape, generator=generator)]
            inputs = tokens.masked_fill(to_mask, mask_id)
            inputs = torch.where(to_random, draw, inputs)
            labels = tokens.masked_fill(~selected, -100)
            return inputs, labels""")},
    # categorical draw of the action with multinomial, only for the selected positions; float64 softmax
    "multinomial_float64": {
        **softmax("""
            m = torch.broadcast_to(mask, scores.shape)
            s = scores.double().masked_fill(~m, float("-inf"))
            empty = ~m.any(dim, keepdim=True)
            w = torch.softmax(s.masked_fill(empty, 0.0), dim=dim).masked_fill(~m, 0.0)
            return w.to(scores.dtype)"""),
        **mlm("""
            excluded = torch.tensor([mask_id, *special_ids])
            flat = tokens.reshape(-1)
            candidates = (~torch.isin(flat, excluded)).nonzero().squeeze(1)
            coin = torch.rand(candidates.numel(), generator=generator) < p
            chosen = candidates[coin]
            action = torch.multinomial(torch.tensor([0.8, 0.1, 0.1]), chosen.numel(), replacement=True,
                                       generator=generator) if chosen.numel() else torch.zeros(0, dtype=torch.long)
            vocab = torch.arange(vocab_size)
            vocab = vocab[~torch.isin(vocab, excluded)]
            inputs = flat.clone()
            inputs[chosen[action == 0]] = mask_id
            rnd = chosen[action == 1]
            inputs[rnd] = vocab[torch.randint(len(vocab), (rnd.numel(),), generator=generator)]
            labels = torch.full_like(flat, -100)
            labels[chosen] = flat[chosen]
            return inputs.view_as(tokens), labels.view_as(tokens)""")},
    # a loop over sequences, with its own draw order; prints and warnings in the softmax
    "row_loop_noisy": {
        **NOISY_SOFTMAX,
        **mlm("""
            excluded = torch.tensor([mask_id, *special_ids])
            pool = torch.tensor([t for t in range(vocab_size) if t not in set(excluded.tolist())])
            rows = tokens.reshape(-1, tokens.shape[-1]) if tokens.dim() else tokens.reshape(1, 1)
            ins, labs = [], []
            for row in rows:
                ok = ~torch.isin(row, excluded)
                a = torch.rand(row.shape, generator=generator)
                sel = ok & (torch.rand(row.shape, generator=generator) < p)
                rnd = pool[torch.randint(len(pool), row.shape, generator=generator)]
                new = torch.where(sel & (a < 0.1), rnd, row)
                new = torch.where(sel & (a >= 0.2), torch.full_like(row, mask_id), new)
                ins.append(new)
                labs.append(torch.where(sel, row, torch.full_like(row, -100)))
            return torch.stack(ins).view_as(tokens), torch.stack(labs).view_as(tokens)""")},
}

FORBIDDEN = {
    "calls_llmcourse": ({
        "masks": code("""
            from llmcourse.attention import causal_mask, padding_mask


            def attention_mask(lengths, max_len=None, causal=False):
                keys = padding_mask(lengths, max_len)
                L = keys.shape[1]
                mask = keys[:, None, None, :].expand(-1, 1, L, L)
                return mask & causal_mask(L) if causal else mask"""),
        "softmax": "from llmcourse import attention as A\nmasked_softmax = A.masked_softmax",
        "mlm": "import llmcourse\nmlm_corrupt = llmcourse.mlm_corrupt"},
        PART_TESTS["masks"] + PART_TESTS["softmax"] + PART_TESTS["mlm"], "llmcourse.attention"),
    "softmax_via_torch_sdpa": (softmax("""
        import torch.nn.functional as F
        mask = torch.broadcast_to(mask, scores.shape)
        s, m = scores.movedim(dim, -1), mask.movedim(dim, -1)
        n = s.shape[-1]
        eye = torch.eye(n).expand(*s.shape[:-2], n, n)
        w = F.scaled_dot_product_attention(s * math.sqrt(n), eye, eye, attn_mask=m)
        return w.nan_to_num(0.0).movedim(-1, dim)"""), PART_TESTS["softmax"],
        "torch.nn.functional.scaled_dot_product_attention"),
}

BROKEN_MLM = "def mlm_corrupt(tokens, mask_id, vocab_size, special_ids=(), p=0.15, generator=None)\n    return tokens"
EDITED_TEST = "# I edited this test\nprint('all tests passed')"
# name -> (cell sources, cells to delete, test cells that must lose points)
BAD = {
    "syntax_error": ({**SOL, "mlm": BROKEN_MLM}, (), PART_TESTS["mlm"]),
    "edited_test_cells": ({**SOL, **WRONG["softmax_nan_on_empty_rows"][0], "test_masked_softmax_empty": EDITED_TEST,
                           "test_causal_mask": "pass"}, (), ["test_masked_softmax_empty"]),
    "deleted_test_cells": ({**SOL, **WRONG["softmax_nan_on_empty_rows"][0]},
                           ("test_masked_softmax_empty", "test_causal_mask"), ["test_masked_softmax_empty"]),
}

TIMEOUT = 30        # seconds per cell (the slowest honest cell, a statistical check, takes about 1 s)

CAT = Catalogue(ASSIGNMENT, PART_TESTS, wrong=WRONG, correct=CORRECT, forbidden=FORBIDDEN,
                bad={n: (src, delete) for n, (src, delete, _) in BAD.items()}, timeout=TIMEOUT, total=23)


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
    assert "replace it with your code" in graded["release"].errors["test_mlm_contract"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD))
def test_bad_submissions_lose_only_their_part(graded, name):
    _, _, must_fail = BAD[name]
    r = graded[f"bad_{name}"]
    assert set(r.lost()) == set(must_fail), r.lost()
    if name != "syntax_error":                       # the locked test cell is restored / re-added and graded
        assert "NaN" in r.errors["test_masked_softmax_empty"], r.errors["test_masked_softmax_empty"]
        src = {grade_id(c): c.source for c in r.notebook.cells}
        assert "G.check_masked_softmax_empty" in src["test_masked_softmax_empty"]
        assert "G.check_causal_mask" in src["test_causal_mask"]
