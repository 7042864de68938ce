"""llmcourse.peft: the papers' invariants, on a tiny seeded GPT (tolerances stated per check)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from llmcourse import peft
from llmcourse.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=8)
ATTN = ("attn.c_attn", "attn.c_proj")


@pytest.fixture
def gpt():
    torch.manual_seed(0)
    m = GPT(CFG)
    with torch.no_grad():                        # non-zero biases so BitFit and freezing matter
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    return m.eval()


def _idx(B=3, T=7, seed=1):
    return torch.randint(CFG.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _randomise(params, seed=2, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * std)


# ----------------------------------------------------------------------------- LoRALinear


def test_lora_linear_init_scale_and_shapes():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    m = peft.LoRALinear(base, r=3, alpha=12.0)
    assert m.lora_A.shape == (3, 6) and m.lora_B.shape == (5, 3)
    assert torch.count_nonzero(m.lora_B) == 0 and torch.count_nonzero(m.lora_A) == m.lora_A.numel()
    bound = 1 / math.sqrt(6)                      # kaiming_uniform(a=sqrt(5)) on fan_in 6
    assert m.lora_A.abs().max() <= bound
    assert m.scaling == 12.0 / 3 and m.merged is False
    assert not any(p.requires_grad for p in base.parameters())
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}


def test_lora_linear_forward_is_base_plus_scaled_low_rank():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    m = peft.LoRALinear(base, r=2, alpha=3.0)
    x = torch.randn(4, 3, 6)
    torch.testing.assert_close(m(x), base(x))                              # B = 0: identity at init
    _randomise([m.lora_B])
    want = x @ base.weight.T + base.bias + 1.5 * (x @ m.lora_A.T @ m.lora_B.T)   # naive formula
    torch.testing.assert_close(m(x), want)


def test_lora_merge_unmerge_roundtrip():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    w0 = base.weight.detach().clone()
    m = peft.LoRALinear(base, r=2, alpha=4.0)
    _randomise([m.lora_B])
    x = torch.randn(4, 6)
    y = m(x)
    m.merge()
    assert m.merged
    torch.testing.assert_close(base.weight, w0 + 2.0 * m.lora_B @ m.lora_A)
    torch.testing.assert_close(m(x), y, atol=1e-6, rtol=1e-5)
    m.merge()                                                              # idempotent
    torch.testing.assert_close(base.weight, w0 + 2.0 * m.lora_B @ m.lora_A)
    m.unmerge()
    assert not m.merged
    torch.testing.assert_close(base.weight, w0, atol=1e-6, rtol=0)
    m.unmerge()
    torch.testing.assert_close(base.weight, w0, atol=1e-6, rtol=0)
    torch.testing.assert_close(m(x), y, atol=1e-6, rtol=1e-5)


def test_lora_dropout_acts_on_the_low_rank_input_only():
    torch.manual_seed(0)
    m = peft.LoRALinear(nn.Linear(6, 5), r=2, dropout=0.5).train()
    x = torch.randn(8, 6)
    torch.testing.assert_close(m(x), m.base(x))                            # B = 0: no dropout visible
    _randomise([m.lora_B])
    m.eval()
    torch.testing.assert_close(m(x), m.base(x) + x @ m.lora_A.T @ m.lora_B.T * m.scaling)


def test_lora_rejects_rank_zero():
    with pytest.raises(ValueError):
        peft.LoRALinear(nn.Linear(3, 3), r=0)


# ----------------------------------------------------------------------------- apply_lora on a GPT


def test_apply_lora_identity_at_init_and_exact_trainable_set(gpt):
    idx = _idx()
    want, _ = gpt(idx)
    model = peft.apply_lora(copy.deepcopy(gpt), ATTN, r=2, alpha=4.0)
    got, _ = model(idx)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    expected = {f"blocks.{i}.attn.{m}.lora_{ab}" for i in range(CFG.n_layer) for m in ("c_attn", "c_proj")
                for ab in "AB"}
    assert _trainable(model) == expected
    C = CFG.n_embd
    per_layer = 2 * (C + 3 * C) + 2 * (C + C)
    assert peft.count_parameters(model) == CFG.n_layer * per_layer
    assert peft.count_parameters(model, trainable_only=False) == peft.count_parameters(gpt, False) + CFG.n_layer * per_layer


def test_apply_lora_uses_peft_name_rule(gpt):
    model = peft.apply_lora(copy.deepcopy(gpt), ["c_proj"], r=1)         # attn.c_proj and mlp.c_proj
    assert set(peft.lora_layers(model)) == {f"blocks.{i}.{s}.c_proj" for i in range(2) for s in ("attn", "mlp")}
    model = peft.apply_lora(copy.deepcopy(gpt), ["proj"], r=1)           # a suffix, not a component
    assert peft.lora_layers(model) == {}
    model = peft.apply_lora(copy.deepcopy(gpt), ["blocks.1.mlp.c_fc"], r=1)
    assert set(peft.lora_layers(model)) == {"blocks.1.mlp.c_fc"}


def test_lora_gpt_gradients_reach_A_and_B_and_merge_agrees(gpt):
    model = peft.apply_lora(copy.deepcopy(gpt), ATTN, r=2, alpha=2.0)
    idx = _idx()
    _, loss = model(idx, idx)
    loss.backward()
    for name, m in peft.lora_layers(model).items():
        assert m.lora_B.grad.abs().max() > 0, name                         # dL/dB = (..) (A x)ᵀ ≠ 0
        assert m.lora_A.grad is not None                                   # zero at init (B = 0), but present
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    _randomise([m.lora_B for m in peft.lora_layers(model).values()], std=0.2)
    _, loss = model(idx, idx)
    loss.backward()
    assert all(m.lora_A.grad.abs().max() > 0 for m in peft.lora_layers(model).values())
    unmerged, _ = model(idx)
    peft.merge_lora(model)
    merged, _ = model(idx)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(merged, gpt(idx)[0], atol=1e-3)             # the update did something
    peft.unmerge_lora(model)
    for n, m in peft.lora_layers(model).items():
        torch.testing.assert_close(m.base.weight, gpt.get_submodule(n).weight, atol=1e-6, rtol=0)


def test_optimizer_state_bytes_counts_adams_two_moments(gpt):
    model = peft.apply_lora(copy.deepcopy(gpt), ATTN, r=2)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    assert peft.optimizer_state_bytes(opt) == 0
    model(_idx(), _idx())[1].backward()
    opt.step()
    assert peft.optimizer_state_bytes(opt) == 2 * 4 * peft.count_parameters(model)


# ----------------------------------------------------------------------------- subspace similarity


def test_subspace_similarity_closed_forms():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 10, generator=g)
    phi = peft.subspace_similarity(A, A)
    assert phi.shape == (4, 4)
    torch.testing.assert_close(phi.diagonal(), torch.ones(4, dtype=phi.dtype))   # same subspace
    assert (phi >= -1e-12).all() and (phi <= 1 + 1e-9).all()
    B = torch.cat([A, torch.randn(3, 10, generator=g)])                         # contains A's row space
    assert peft.subspace_similarity(A, B)[-1, -1] == pytest.approx(1.0)
    Q = torch.linalg.qr(torch.randn(10, 10, generator=g)).Q                     # orthogonal row spaces
    assert peft.subspace_similarity(Q[:3], Q[3:6])[-1, -1] == pytest.approx(0.0, abs=1e-12)
    # against the definition with explicit SVDs, one entry
    U1 = torch.linalg.svd(A.double()).Vh[:2].T
    U2 = torch.linalg.svd(B.double()).Vh[:3].T
    assert phi.dtype == torch.float64
    assert peft.subspace_similarity(A, B)[1, 2] == pytest.approx((torch.linalg.norm(U1.T @ U2) ** 2 / 2).item())


# ----------------------------------------------------------------------------- adapters, BitFit, (IA)^3, prompts


def test_adapters_identity_at_init_and_trainable_set(gpt):
    idx = _idx()
    model = peft.apply_adapters(copy.deepcopy(gpt), bottleneck=3)
    torch.testing.assert_close(model(idx)[0], gpt(idx)[0], atol=0, rtol=0)
    want = {f"blocks.{i}.{s}.c_proj.adapter.{l}.{w}" for i in range(2) for s in ("attn", "mlp")
            for l in ("down", "up") for w in ("weight", "bias")}
    norms = {n for n, _ in gpt.named_parameters() if ".ln_" in n or n.startswith("ln_f")}
    assert _trainable(model) == want | norms
    model_no_ln = peft.apply_adapters(copy.deepcopy(gpt), bottleneck=3, train_norms=False)
    assert _trainable(model_no_ln) == want
    C = CFG.n_embd
    assert peft.count_parameters(model_no_ln) == 4 * (C * 3 + 3 + 3 * C + C)
    model(idx, idx)[1].backward()
    ad = model.blocks[0].mlp.c_proj.adapter
    assert ad.up.weight.grad.abs().max() > 0


def test_adapter_equals_its_formula():
    torch.manual_seed(0)
    a = peft.Adapter(6, 2)
    _randomise(a.parameters())
    h = torch.randn(3, 6)
    torch.testing.assert_close(a(h), h + torch.nn.functional.gelu(h @ a.down.weight.T + a.down.bias)
                               @ a.up.weight.T + a.up.bias)


def test_bitfit_trains_exactly_the_biases(gpt):
    idx = _idx()
    model = peft.apply_bitfit(copy.deepcopy(gpt))
    torch.testing.assert_close(model(idx)[0], gpt(idx)[0], atol=0, rtol=0)
    assert _trainable(model) == {n for n, _ in gpt.named_parameters() if n.endswith(".bias")}
    model(idx, idx)[1].backward()
    assert model.blocks[0].attn.c_attn.bias.grad.abs().max() > 0


def test_ia3_identity_at_init_trainable_set_and_formula(gpt):
    idx = _idx()
    model = peft.apply_ia3(copy.deepcopy(gpt))
    torch.testing.assert_close(model(idx)[0], gpt(idx)[0], atol=0, rtol=0)
    assert _trainable(model) == {f"blocks.{i}.{s}.ia3" for i in range(2) for s in ("attn.c_attn", "mlp.c_proj")}
    C = CFG.n_embd
    assert peft.count_parameters(model) == CFG.n_layer * (2 * C + 4 * C)
    qkv = model.blocks[0].attn.c_attn
    _randomise([qkv.ia3])
    x = torch.randn(2, C)
    y = qkv.base(x)
    want = torch.cat([y[:, :C], y[:, C:] * qkv.ia3], -1)                  # queries untouched
    torch.testing.assert_close(qkv(x), want)
    model(idx, idx)[1].backward()
    assert model.blocks[1].mlp.c_proj.ia3.grad.abs().max() > 0


def test_prompt_tuning_equals_gpt_on_prepended_tokens(gpt):
    prompt_ids = torch.tensor([3, 1, 4])
    model = peft.PromptTuning(copy.deepcopy(gpt), n_prompt=3, init_ids=prompt_ids)
    assert _trainable(model) == {"prompt"} and peft.count_parameters(model) == 3 * CFG.n_embd
    idx = _idx(B=2, T=5)
    full, _ = gpt(torch.cat([prompt_ids.expand(2, 3), idx], 1))
    got, loss = model(idx, idx)
    torch.testing.assert_close(got, full[:, 3:])
    loss.backward()
    assert model.prompt.grad.abs().max() > 0
    with pytest.raises(ValueError):
        model(_idx(B=1, T=CFG.block_size - 2))


def test_milton_text_ships_and_fits_the_shakespeare_tokenizer():
    from llmcourse.data import load_shakespeare, load_text
    from llmcourse.tokenizer import CharTokenizer

    text = load_text("milton")
    assert text.startswith("PARADISE LOST\nBOOK I.") and "BOOK II." in text and "BOOK III" not in text
    assert 70_000 < len(text) < 90_000
    tok = CharTokenizer.from_text(load_shakespeare())
    assert tok.decode(tok.encode(text)) == text


def test_merge_and_unload_gives_back_the_base_architecture(gpt):
    model = peft.apply_lora(copy.deepcopy(gpt), ATTN, r=2)
    _randomise([m.lora_B for m in peft.lora_layers(model).values()], std=0.2)
    idx = _idx()
    want, _ = model(idx)
    plain = peft.merge_and_unload(model)
    assert peft.lora_layers(plain) == {} and type(plain.blocks[0].attn.c_attn) is nn.Linear
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in gpt.named_parameters()]
    torch.testing.assert_close(plain(idx)[0], want, atol=1e-5, rtol=1e-4)


def test_finetune_measures_a_short_run(gpt):
    from llmcourse.train import TrainConfig

    ids = torch.randint(CFG.vocab_size, (400,), generator=torch.Generator().manual_seed(0))
    model = peft.apply_lora(copy.deepcopy(gpt), ATTN, r=2)
    cfg = TrainConfig(max_iters=3, batch_size=2, block_size=8, eval_interval=10, eval_iters=2)
    out = peft.finetune(model, ids[:300], ids[300:], cfg)
    assert out["trainable"] == peft.count_parameters(model) == 2 * (2 * (8 + 24) + 2 * (8 + 8))
    assert out["adam_bytes"] == 8 * out["trainable"]
    assert len(out["history"].train_loss) == 3 and out["val_loss"] == out["history"].val_loss[-1]


def test_latency_benchmark_runs():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "lora_latency.py"
    spec = importlib.util.spec_from_file_location("lora_latency", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--quick", "--batch-size", "1", "--seq-len", "8"])
    assert set(out) == {"base", "LoRA r=4 unmerged", "LoRA r=4 merged"}
    assert all(v["median_ms"] > 0 for v in out.values())


def test_lora_runs_script_smoke(tmp_path):
    from llmcourse.data import data_path

    if not data_path("gpt_shakespeare.pt").is_file():
        pytest.skip("the pretrained checkpoint llmcourse/data/gpt_shakespeare.pt is not built yet")
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("lora_runs", Path(__file__).resolve().parents[1] / "scripts" / "lora_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--steps", "2", "--seeds", "0", "1", "--ranks", "1", "2", "--subspace-ranks", "1", "2",
                    "--all-linear-rank", "0", "--lr-full", "5e-4", "1e-3", "--lr-lora", "3e-3", "--eval-iters", "1",
                    "--eval-interval", "1", "--timing-rounds", "1", "--timing-steps", "1",
                    "--out", str(tmp_path / "runs.json")])
    assert set(out["runs"]) == {"full", "LoRA r=1", "LoRA r=2"} and (tmp_path / "runs.json").is_file()
    assert out["runs"]["LoRA r=1"][0]["adam_bytes"] == 8 * out["runs"]["LoRA r=1"][0]["trainable"]
    assert [r["seed"] for r in out["runs"]["full"]] == [0, 1] and len(out["sweep"]["full"]) == 2
    assert out["lr"]["full"] == min(out["sweep"]["full"], key=lambda s: s["val_loss"])["lr"]
    assert len(out["subspace"]["trained"]) == 2 and len(out["subspace"]["trained"][0][0]) == 1   # seeds, (r1, r2)
    assert set(out["step_ms"]) == set(out["memory"]) == set(out["runs"])


def test_peft_runs_script_smoke(tmp_path):
    from llmcourse.data import data_path

    if not data_path("gpt_shakespeare.pt").is_file():
        pytest.skip("the pretrained checkpoint llmcourse/data/gpt_shakespeare.pt is not built yet")
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("peft_runs", Path(__file__).resolve().parents[1] / "scripts" / "peft_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--steps", "2", "--seeds", "0", "--grid-size", "1", "--eval-iters", "1", "--eval-interval", "1",
                    "--timing-rounds", "1", "--timing-steps", "1", "--out", str(tmp_path / "peft.json")])
    assert set(out["runs"]) == set(mod.METHODS) and (tmp_path / "peft.json").is_file()
    assert out["decayed_parameters"]["prompt tuning (16)"] == 0          # no weight decay on the soft prompt
    assert out["decayed_parameters"]["BitFit"] == 0 < out["decayed_parameters"]["LoRA r=4"]


def test_step_times_and_training_memory(gpt):
    from llmcourse.train import TrainConfig

    ids = torch.randint(CFG.vocab_size, (400,), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(batch_size=2, block_size=8)
    full = copy.deepcopy(gpt).requires_grad_(True)
    lora = peft.apply_lora(copy.deepcopy(gpt), ATTN, r=2)
    bitfit = peft.apply_bitfit(copy.deepcopy(gpt))
    times = peft.step_times({"full": full, "lora": lora}, ids, cfg, rounds=2, steps=2)
    assert set(times) == {"full", "lora"} and all(len(v) == 2 and min(v) > 0 for v in times.values())
    assert all(p.grad is None for p in full.parameters())                # timed on copies
    mem = {k: peft.training_memory(m, ids, cfg) for k, m in (("full", full), ("lora", lora), ("bitfit", bitfit))}
    n_full = peft.count_parameters(full)
    assert mem["full"]["weights"] == mem["full"]["gradients"] == 4 * n_full
    assert mem["full"]["optimizer"] == 8 * n_full
    assert mem["lora"]["gradients"] == 4 * peft.count_parameters(lora) and mem["lora"]["optimizer"] == 8 * peft.count_parameters(lora)
    # frozen weights need no saved inputs for their weight gradients: fewer saved activations
    assert 0 < mem["bitfit"]["activations"] < mem["full"]["activations"]
    assert all(m["total"] == sum(v for k, v in m.items() if k != "total") for m in mem.values())
