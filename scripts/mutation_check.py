"""Mutation check: plant plausible one-line bugs in ``llmcourse/``, one at a time, and see the tests catch them.

Each mutant is named and defined as (file, exact original snippet, replacement): the
kind of slip a contributor makes (a flipped sign, a dropped shift, the wrong axis, a
mask inverted, a term forgotten). For each, in a temporary copy of the repository (the
checkout is never modified, whatever happens), the snippet is replaced and the fast tests
of the files that cover that module run (``pytest -m "not slow" -x``). A mutant is *killed*
when a test fails (or the run hangs past the time limit), *survives* when every test
passes. The script prints each verdict, the survivors with the reason they are expected
to survive (``EQUIVALENT``: mutants that do not change what the code computes, or do so
only where no test of reasonable cost can see it), and the mutation score.

A snippet that no longer occurs exactly once in the checkout is an ERROR: after a change
to the code, update its mutant (``tests/test_mutation_check.py`` checks the list in the
fast tier, so a stale entry fails ``make test``).

    .venv/bin/python scripts/mutation_check.py --list        # the mutants, checked against the code
    .venv/bin/python scripts/mutation_check.py            # all (about 25 minutes on 1 core)
    .venv/bin/python scripts/mutation_check.py --only ppo_policy_gradient_sign_flipped

Why not a mutation-testing package (mutmut 3.8, cosmic-ray 8.7, mutatest, poodle on PyPI).
They generate operator-level mutants (``+`` to ``-``, ``<`` to ``<=``, a constant changed)
for every line they reach: ``cosmic-ray init`` counts 14,685 in ``llmcourse/`` (493 in
``rl/core.py`` alone), most of them in plotting, the CLI and the grading engine; at the
10 to 60 s a relevant test run takes here, that is days of CPU on a 2-core machine, and
most of the equivalent mutants among them would need reading one by one. And the bugs
that matter are rarely operator swaps: a target shift removed, a ``.detach()`` missing,
``self.dropout(x)`` replaced by ``x``, the softmax over the wrong axis. A curated, named
list runs in half an hour and says what each survivor means; its cost is upkeep, which
the exact-snippet rule makes visible.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The fast test files that cover each module (the grader's in-process proofs included where
# the package implements an assignment). Quick unit tests first: -x stops at the first failure.
COVERS = {
    "attention.py": ["test_attention.py", "test_masks.py", "test_package_meets_graders.py"],
    "transformer.py": ["test_transformer.py", "test_prenorm.py", "test_learning.py"],
    "rnn.py": ["test_rnn.py", "test_learning.py"],
    "seq2seq_train.py": ["test_tasks.py", "test_transformer.py", "test_learning.py"],
    "tasks.py": ["test_tasks.py", "test_transformer.py", "test_rnn.py"],
    "rl/core.py": ["test_rl.py", "test_package_meets_graders.py"],
    "rl/ppo.py": ["test_rl.py", "test_learning.py"],
    "rl/a2c.py": ["test_rl.py", "test_learning.py"],
    "rl/rollout.py": ["test_rl.py", "test_learning.py"],
    "peft.py": ["test_peft.py", "test_package_meets_graders.py"],
    "fastweights.py": ["test_fastweights.py"],
    "prenorm.py": ["test_prenorm.py"],
    "data.py": ["test_data.py"],
    "tokenizer.py": ["test_data.py"],
    "gpt.py": ["test_gpt.py", "test_generation.py", "test_peft.py"],
    "train.py": ["test_train.py"],
    "rlhf/core.py": ["test_rlhf_core.py", "test_autograder_rlhf.py"],
    "rlhf/sft.py": ["test_rlhf.py"],
    "rlhf/ppo.py": ["test_rlhf_ppo.py"],
}


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str            # relative to llmcourse/
    original: str        # must occur exactly once in the file
    replacement: str

    @property
    def tests(self) -> list[str]:
        return COVERS[self.file]


M = Mutant
MUTANTS = [
    # -- attention and masks (llmcourse/attention.py)
    M("causal_mask_transposed", "attention.py",
      "dtype=torch.bool, device=device).tril()", "dtype=torch.bool, device=device).triu()"),
    M("padding_mask_off_by_one", "attention.py",
      "device=lengths.device) < lengths[:, None]", "device=lengths.device) <= lengths[:, None]"),
    M("masked_softmax_nan_on_empty_rows", "attention.py",
      "    scores = scores.masked_fill(~anything, 0.0)", "    scores = scores"),
    M("masked_softmax_uniform_on_empty_rows", "attention.py",
      "return torch.softmax(scores, dim=dim).masked_fill(~mask, 0.0)", "return torch.softmax(scores, dim=dim)"),
    M("mlm_70_percent_masked", "attention.py",
      "selected & (action < 0.8), torch.full_like", "selected & (action < 0.7), torch.full_like"),
    M("mlm_90_percent_masked", "attention.py",
      "selected & (action < 0.8), torch.full_like", "selected & (action < 0.9), torch.full_like"),
    M("mlm_labels_are_corrupted_inputs", "attention.py",
      "labels = torch.where(selected, tokens,", "labels = torch.where(selected, inputs,"),
    M("mlm_random_tokens_include_specials", "attention.py",
      "allowed = allowed[~torch.isin(allowed, excluded)]", "allowed = allowed"),
    M("sdpa_divides_by_dk", "attention.py", "/ math.sqrt(dk)", "/ dk"),
    M("sdpa_softmax_over_queries", "attention.py",
      "weights = torch.softmax(scores, dim=-1)", "weights = torch.softmax(scores, dim=-2)"),
    M("sdpa_mask_inverted", "attention.py",
      "        scores = scores.masked_fill(~mask, float(\"-inf\"))\n    weights",
      "        scores = scores.masked_fill(mask, float(\"-inf\"))\n    weights"),
    M("split_heads_without_transpose", "attention.py",
      "return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)", "return x.view(B, n_heads, L, D // n_heads)"),
    M("mha_values_projected_with_w_k", "attention.py",
      "v = split_heads(self.w_v(value)", "v = split_heads(self.w_k(value)"),
    M("mha_no_output_projection", "attention.py",
      "return self.w_o(merge_heads(out)), weights", "return merge_heads(out), weights"),
    # -- the encoder-decoder Transformer (llmcourse/transformer.py)
    M("embedding_not_scaled", "transformer.py", "self.tok(ids) * self.scale", "self.tok(ids)"),
    M("positional_sin_cos_swapped", "transformer.py",
      "pe[:, 0::2] = torch.sin(pos * inv_freq)", "pe[:, 0::2] = torch.cos(pos * inv_freq)"),
    M("pre_ln_attention_reads_unnormalised_x", "transformer.py",
      "a, w = self.self_attn(h, h, h, src_mask)", "a, w = self.self_attn(x, x, x, src_mask)"),
    M("pre_ln_encoder_ffn_unnormalised", "transformer.py",
      "return x + self.drop(self.ff(self.norm2(x))), w", "return x + self.drop(self.ff(x)), w"),
    M("pre_ln_cross_attention_query_unnormalised", "transformer.py",
      "self.cross_attn(self.norm2(y), memory, memory, src_mask)", "self.cross_attn(y, memory, memory, src_mask)"),
    M("pre_ln_decoder_ffn_uses_norm2", "transformer.py",
      "self.ff(self.norm3(y))), w_self, w_cross", "self.ff(self.norm2(y))), w_self, w_cross"),
    M("post_ln_cross_attention_ignores_padding", "transformer.py",
      "a, w_cross = self.cross_attn(y, memory, memory, src_mask)", "a, w_cross = self.cross_attn(y, memory, memory)"),
    M("encoder_final_norm_missing", "transformer.py", "return self.enc_norm(x)", "return x"),
    M("decoder_final_norm_missing", "transformer.py", "return self.out(self.dec_norm(y))", "return self.out(y)"),
    M("decoder_without_causal_mask", "transformer.py",
      "layer(y, memory, tgt_mask, src_mask)", "layer(y, memory, None, src_mask)"),
    M("src_mask_inverted", "transformer.py",
      "return (src != self.cfg.pad_id)[:, None, None, :]", "return (src == self.cfg.pad_id)[:, None, None, :]"),
    M("greedy_keeps_tokens_after_eos", "transformer.py",
      "nxt = nxt.masked_fill(done, self.cfg.pad_id)", "nxt = nxt"),
    M("greedy_returns_bos", "transformer.py", "return ys[:, 1:]", "return ys"),
    M("noam_max_instead_of_min", "transformer.py",
      "min(step ** -0.5, step * warmup ** -1.5)", "max(step ** -0.5, step * warmup ** -1.5)"),
    M("label_smoothing_keeps_full_weight_on_target", "transformer.py",
      "((1 - eps) * nll + eps * uniform)", "(nll + eps * uniform)"),
    # -- the GRU encoder-decoder (llmcourse/rnn.py)
    M("additive_attention_attends_padding", "rnn.py",
      "torch.softmax(e.masked_fill(~mask, float(\"-inf\")), dim=-1)", "torch.softmax(e, dim=-1)"),
    M("rnn_greedy_keeps_tokens_after_eos", "rnn.py",
      "y = lg.argmax(-1).masked_fill(done, self.cfg.pad_id)", "y = lg.argmax(-1)"),
    M("rnn_decoder_ignores_context", "rnn.py",
      "self.cell(torch.cat([e, c], dim=-1), s)", "self.cell(torch.cat([e, torch.zeros_like(c)], dim=-1), s)"),
    M("rnn_summary_forward_state_twice", "rnn.py",
      "torch.cat([last[0], last[1]], dim=-1)", "torch.cat([last[0], last[0]], dim=-1)"),
    # -- sequence-to-sequence training and the task (seq2seq_train.py, tasks.py)
    M("seq2seq_loss_without_shift", "seq2seq_train.py",
      "batch.tgt[:, :-1], batch.tgt[:, 1:]", "batch.tgt[:, :-1], batch.tgt[:, :-1]"),
    M("score_ignores_eos", "seq2seq_train.py", "hyp = p + [EOS]", "hyp = p"),
    M("predict_keeps_eos", "seq2seq_train.py", "row[: row.index(EOS)]", "row[: row.index(EOS) + 1]"),
    M("validation_set_is_the_training_prefix", "tasks.py", "seed + 10_000))", "seed))"),
    M("vocab_decode_reads_past_eos", "tasks.py", "            if i == EOS:\n                break",
      "            if i == EOS:\n                continue"),
    M("translation_without_reordering", "tasks.py",
      "out += [DICTIONARY[src[i + 1]], DICTIONARY[w]]", "out += [DICTIONARY[w], DICTIONARY[src[i + 1]]]"),
    # -- reinforcement learning (rl/core.py, rl/ppo.py, rl/a2c.py, rl/rollout.py)
    M("returns_no_bootstrap_at_rollout_end", "rl/core.py",
      "    boot[T - 1] = True", "    boot[T - 1] = False"),
    M("gae_carried_across_truncation", "rl/core.py",
      "carry = not_term * (1.0 - truncated.to(rewards.dtype))", "carry = not_term"),
    M("gae_bootstraps_terminal_states", "rl/core.py",
      "deltas = rewards + gamma * next_values * not_term - values", "deltas = rewards + gamma * next_values - values"),
    M("advantages_not_centred", "rl/core.py",
      "return (adv - adv.mean()) / (adv.std() + eps)", "return adv / (adv.std() + eps)"),
    M("ppo_policy_gradient_sign_flipped", "rl/core.py", "loss = -surrogate.mean()", "loss = surrogate.mean()"),
    M("ppo_max_instead_of_min", "rl/core.py",
      "surrogate = torch.min(surrogate, clipped)", "surrogate = torch.max(surrogate, clipped)"),
    M("value_clip_min_instead_of_max", "rl/core.py",
      "torch.max(unclipped, (v_clipped - returns) ** 2)", "torch.min(unclipped, (v_clipped - returns) ** 2)"),
    M("entropy_sign_flipped", "rl/core.py",
      "return -(logp.exp() * logp).sum(-1)", "return (logp.exp() * logp).sum(-1)"),
    M("ppo_entropy_bonus_becomes_penalty", "rl/ppo.py",
      "loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy",
      "loss = pg_loss + cfg.vf_coef * v_loss + cfg.ent_coef * entropy"),
    M("ppo_old_and_new_log_probs_swapped", "rl/ppo.py",
      "ppo_clip_loss(logp, batch[\"logp\"][idx], adv, cfg.clip_eps)",
      "ppo_clip_loss(batch[\"logp\"][idx], logp, adv, cfg.clip_eps)"),
    M("ppo_advantage_normalisation_never_applied", "rl/ppo.py",
      "adv = normalize_advantages(adv)", "adv = adv"),
    M("ppo_value_clipping_ignored", "rl/ppo.py",
      "batch[\"values\"][idx],\n                                cfg.clip_eps if cfg.clip_vloss else None)",
      "batch[\"values\"][idx],\n                                None)"),
    M("a2c_policy_gradient_sign_flipped", "rl/a2c.py",
      "pg_loss = -(logp * advantages).mean()", "pg_loss = (logp * advantages).mean()"),
    M("a2c_entropy_bonus_becomes_penalty", "rl/a2c.py",
      "loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy",
      "loss = pg_loss + cfg.vf_coef * v_loss + cfg.ent_coef * entropy"),
    M("a2c_advantage_not_detached", "rl/a2c.py",
      "advantages = (returns - v).detach()", "advantages = (returns - v)"),
    M("evaluate_counts_later_episodes", "rl/rollout.py", "total += reward * alive", "total += reward"),
    M("collector_returns_not_reset", "rl/rollout.py", "                self.running[i] = 0.0\n",
      "                pass\n"),
    M("collector_bootstraps_from_reset_observation", "rl/rollout.py",
      "next_values = torch.where(done, r.pop(\"final_values\"), next_values)",
      "r.pop(\"final_values\")"),
    # -- LoRA and the other PEFT methods (peft.py)
    M("lora_dropout_never_applied", "peft.py",
      "(self.dropout(x) @ self.lora_A.T @ self.lora_B.T)", "(x @ self.lora_A.T @ self.lora_B.T)"),
    M("lora_scaling_alpha_not_over_r", "peft.py",
      "self.r, self.alpha, self.scaling = r, alpha, alpha / r", "self.r, self.alpha, self.scaling = r, alpha, alpha"),
    M("lora_b_random_at_init", "peft.py",
      "nn.Parameter(torch.zeros(base.out_features, r))", "nn.Parameter(torch.randn(base.out_features, r))"),
    M("lora_unmerge_adds", "peft.py",
      "self.base.weight -= self.delta_weight()", "self.base.weight += self.delta_weight()"),
    M("lora_merge_twice_adds_twice", "peft.py",
      "        if not self.merged:\n            self.base.weight += self.delta_weight()",
      "        if True:\n            self.base.weight += self.delta_weight()"),
    M("peft_target_rule_suffix_without_dot", "peft.py",
      "name == t or name.endswith(\".\" + t)", "name == t or name.endswith(t)"),
    M("adapter_up_projection_not_zero", "peft.py", "        nn.init.zeros_(self.up.weight)", "        pass"),
    M("bitfit_trains_everything_but_biases", "peft.py",
      "p.requires_grad_(name.rsplit(\".\", 1)[-1] == \"bias\")", "p.requires_grad_(name.rsplit(\".\", 1)[-1] != \"bias\")"),
    M("ia3_rescales_queries_and_keys", "peft.py",
      "IA3Linear(m, \"out\", start=C, size=2 * C)", "IA3Linear(m, \"out\", start=0, size=2 * C)"),
    M("prompt_tuning_reads_prompt_positions", "peft.py",
      "g.lm_head(g.ln_f(x[:, P:]))", "g.lm_head(g.ln_f(x[:, :T]))"),
    # -- fast weights (fastweights.py)
    M("delta_rule_ignores_initial_state", "fastweights.py",
      "W = v.new_zeros(B, d_v, fk.size(-1)) if W0 is None else W0", "W = v.new_zeros(B, d_v, fk.size(-1))"),
    M("delta_rule_without_read_before_write", "fastweights.py",
      "delta = beta[:, t, None] * (v[:, t] - v_old)", "delta = beta[:, t, None] * v[:, t]"),
    M("linear_attention_mask_transposed", "fastweights.py",
      "keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()",
      "keep = torch.ones(T, T, dtype=torch.bool, device=q.device).triu()"),
    M("fast_weights_normaliser_not_accumulated", "fastweights.py", "z = z + fk[:, t]", "z = fk[:, t]"),
    # -- Pre-LN language model (prenorm.py), data, GPT and the training loop
    M("norm_lm_final_norm_missing", "prenorm.py",
      "nn.LayerNorm(cfg.d_model) if cfg.norm_position == \"pre\" else nn.Identity()", "nn.Identity()"),
    M("get_batch_targets_not_shifted", "data.py",
      "y = ids[starts[:, None] + offsets + 1]", "y = ids[starts[:, None] + offsets]"),
    M("tokenizer_vocabulary_unsorted", "tokenizer.py", 'cls("".join(sorted(set(text))))', 'cls("".join(set(text)))'),
    M("shakespeare_validation_overlaps_training", "data.py", "return tok, ids[:n], ids[n:]",
      "return tok, ids[:n], ids[n - len(ids) // 10:]"),
    M("gpt_attention_residual_missing", "gpt.py", "x = x + self.attn(self.ln_1(x), mask, kv)",
      "x = self.attn(self.ln_1(x), mask, kv)"),
    M("gpt_attention_not_causal", "gpt.py", "causal = mask is None", "causal = False"),
    # -- RLHF (rlhf/core.py, rlhf/sft.py, rlhf/ppo.py)
    M("rlhf_logprobs_wrong_shift", "rlhf/core.py",
      "logp = F.log_softmax(logits[:, :-1], dim=-1)", "logp = F.log_softmax(logits[:, 1:], dim=-1)"),
    M("rlhf_kwise_ranks_backwards", "rlhf/core.py",
      "better = ranks[:, :, None] < ranks[:, None, :]", "better = ranks[:, :, None] > ranks[:, None, :]"),
    M("rlhf_score_at_first_response_token", "rlhf/core.py",
      "return T - 1 - mask.flip(-1).to(torch.uint8).argmax(-1)", "return mask.to(torch.uint8).argmax(-1)"),
    M("rlhf_kl_controller_unclipped", "rlhf/core.py",
      "error = min(max(float(current_kl) / self.target_kl - 1.0, -0.2), 0.2)",
      "error = float(current_kl) / self.target_kl - 1.0"),
    M("rlhf_sft_trains_on_the_prompt", "rlhf/sft.py",
      "targets[: len(p) - 1] = IGNORE", "targets[: len(p) - 1] = targets[: len(p) - 1]"),
    M("rlhf_ppo_reference_at_another_temperature", "rlhf/ppo.py",
      "ref_logp = response_logprobs(ref_logits[:, P - 1:] / cfg.temperature, seq[:, P - 1:])",
      "ref_logp = response_logprobs(ref_logits[:, P - 1:], seq[:, P - 1:])"),
    M("gpt_final_norm_skipped", "gpt.py", "return self.ln_f(x)", "return x"),
    M("cosine_warmup_starts_at_zero_and_ends_early", "train.py",
      "return max_lr * (step + 1) / warmup", "return max_lr * step / warmup"),
    M("weight_decay_on_biases_and_norms", "train.py", "decay = [p for p in params if p.dim() >= 2]",
      "decay = [p for p in params if p.dim() >= 1]"),
]

# Mutants expected to survive, and why. Each must really survive (the check reports an
# "equivalent" mutant that is killed, so this list cannot go stale either).
EQUIVALENT: dict[str, str] = {
    "mlm_90_percent_masked": "the random-token band (0.8 <= action < 0.9) is applied after the mask band and "
                             "overwrites it, so masking below 0.9 instead of 0.8 produces the same inputs",
}


def check_snippets(root: Path = REPO) -> list[str]:
    """Problems with the list against the code at ``root``: '' when every snippet occurs exactly once."""
    problems = []
    names = [m.name for m in MUTANTS]
    problems += [f"duplicate mutant name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    problems += [f"EQUIVALENT names no mutant: {n}" for n in EQUIVALENT if n not in names]
    for m in MUTANTS:
        path = root / "llmcourse" / m.file
        if not path.exists():
            problems.append(f"{m.name}: llmcourse/{m.file} does not exist")
            continue
        n = path.read_text().count(m.original)
        if n != 1:
            problems.append(f"{m.name}: the snippet occurs {n} times in llmcourse/{m.file} (must be once): "
                            f"{m.original!r}")
        if m.original == m.replacement:
            problems.append(f"{m.name}: the replacement is the original")
        for t in m.tests:
            if not (root / "tests" / t).exists():
                problems.append(f"{m.name}: tests/{t} does not exist")
    return problems


def copy_repo(dst: Path) -> None:
    """The checkout's tracked files (as they are on disk, uncommitted edits included) into ``dst``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def env_for(root: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", TQDM_DISABLE="1", MPLBACKEND="Agg")
    return env


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout' | 'error', seconds, last lines of the output)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider",
           "--no-header", "-rfE", *[f"tests/{t}" for t in tests]]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)                  # the test run and anything it started
        proc.communicate()
        return "timeout", time.perf_counter() - t0, ""
    finally:
        if proc.poll() is None:                              # interrupted: leave nothing running
            os.killpg(proc.pid, signal.SIGKILL)
    status = {0: "passed", 1: "failed"}.get(proc.returncode, "error")
    tail = "\n".join(out.strip().splitlines()[-6:])
    return status, time.perf_counter() - t0, tail


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("FAILED") or line.startswith("ERROR"):
            return line[:150]
    return output.splitlines()[-1][:150] if output.strip() else ""


def worker(base: Path, mutants: list[Mutant], timeout: float, results: dict, log) -> None:
    """Mutate a private copy of ``base``, one mutant at a time, restoring each file after."""
    root = Path(tempfile.mkdtemp(prefix="llmcourse_mutants_"))
    try:
        shutil.copytree(base, root, dirs_exist_ok=True)
        for m in mutants:
            path = root / "llmcourse" / m.file
            original = path.read_text()
            try:
                path.write_text(original.replace(m.original, m.replacement, 1))
                status, secs, tail = run_tests(root, m.tests, timeout)
            finally:
                path.write_text(original)
            results[m.name] = (status, secs, tail)
            log(m, status, secs, tail)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and check their snippets, run nothing")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested at once, each in its own copy")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run (then: killed)")
    args = ap.parse_args(argv)

    problems = check_snippets()
    for p in problems:
        print(f"ERROR {p}")
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:48s} llmcourse/{m.file:18s} {', '.join(m.tests)}")
        print(f"{len(MUTANTS)} mutants, {len(problems)} errors")
        return 1 if problems else 0
    if problems:
        print("fix the mutant list first (a snippet must occur exactly once)")
        return 2
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutants: {sorted(unknown)}")
        return 2

    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="llmcourse_mutants_base_"))   # one snapshot of the checkout for all
    try:
        return run_all(base, chosen, args, t0)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_all(base: Path, chosen: list[Mutant], args, t0: float) -> int:
    # the unmutated code must pass every test file used, from the copy, importing the copy
    copy_repo(base)
    where = subprocess.run([sys.executable, "-c", "import llmcourse; print(llmcourse.__file__)"], cwd=base,
                           env=env_for(base), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(base.resolve()):
        print(f"ERROR the copy imports llmcourse from {where}, not from the copy")
        return 2
    files = sorted({t for m in chosen for t in m.tests})
    status, secs, tail = run_tests(base, files, args.timeout * 3)
    print(f"baseline: the unmutated code, {len(files)} test files: {status} in {secs:.0f} s", flush=True)
    if status != "passed":
        print(tail)
        return 2

    results: dict[str, tuple] = {}

    def log(m, status, secs, tail):
        verdict = "SURVIVED" if status == "passed" else "killed"
        detail = "" if status == "passed" else f"({status}) {first_failure(tail)}"
        print(f"{verdict:8s} {m.name:48s} {secs:5.0f} s  {detail}", flush=True)

    jobs = max(1, min(args.jobs, len(chosen)))
    shares = [chosen[i::jobs] for i in range(jobs)]
    with ThreadPoolExecutor(jobs) as pool:
        for f in [pool.submit(worker, base, share, args.timeout, results, log) for share in shares]:
            f.result()

    killed = [n for n, (s, _, _) in results.items() if s != "passed"]
    survived = [m.name for m in chosen if results[m.name][0] == "passed"]
    print(f"\n{len(killed)} of {len(chosen)} mutants killed: mutation score {len(killed) / len(chosen):.1%} "
          f"({time.perf_counter() - t0:.0f} s)")
    bad = 0
    for name in survived:
        reason = EQUIVALENT.get(name)
        print(f"  survived: {name}: {reason or 'NOT EXPLAINED: add a test that kills it, or explain it in EQUIVALENT'}")
        bad += reason is None
    for name in sorted(set(EQUIVALENT) & set(killed)):
        print(f"  {name} is listed in EQUIVALENT but was killed: remove it from the list")
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
