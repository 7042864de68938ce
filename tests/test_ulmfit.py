"""llmcourse.ulmfit: the LSTM against nn.LSTM, the schedules against the paper's formulas.

Howard and Ruder (2018), arXiv:1801.06146: equation 2 (discriminative rates), equation 3
(slanted triangular), equation 4 (concat pooling), gradual unfreezing (section 3.3).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from llmcourse import ulmfit
from llmcourse.data import data_path
from nbgrader_harness import REPO


def small_lm(**kw) -> ulmfit.LSTMLM:
    torch.manual_seed(0)
    return ulmfit.LSTMLM(ulmfit.LSTMConfig(**{"vocab_size": 11, "emb": 6, "hidden": 10, "dropout": 0.0, **kw}))


def test_lstm_equations_equal_nn_lstm():
    """The step-by-step equations (fused=False) against PyTorch's kernel on the same weights: outputs,
    final states and every gradient, from zero and from a given state."""
    torch.manual_seed(0)
    layer = ulmfit.LSTMLayer(5, 7, fused=False)
    ref = nn.LSTM(5, 7, batch_first=True)
    ref.load_state_dict({k: v for k, v in layer.lstm.state_dict().items()})
    x = torch.randn(3, 9, 5, requires_grad=True)
    for state in (None, (torch.randn(3, 7), torch.randn(3, 7))):
        out, (h, c) = layer(x, state)
        ref_state = None if state is None else (state[0][None], state[1][None])
        want, (h_ref, c_ref) = ref(x, ref_state)
        torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(h, h_ref[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(c, c_ref[0], atol=1e-6, rtol=1e-5)
        r = torch.randn_like(out)
        mine = torch.autograd.grad((out * r).sum() + c.sum(), [x, *layer.parameters()])
        theirs = torch.autograd.grad((want * r).sum() + c_ref.sum(), [x, *ref.parameters()])
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_lstm_cell_gates_by_hand():
    """One step with hand-made weights: input gate i, forget gate f, candidate g, output gate o in that order."""
    H = 1
    w_ih = torch.tensor([[1.0], [2.0], [3.0], [4.0]])            # i, f, g, o rows
    w_hh = torch.zeros(4, H)
    b = torch.zeros(4)
    x, h, c = torch.tensor([[0.5]]), torch.zeros(1, H), torch.tensor([[2.0]])
    h1, c1 = ulmfit.lstm_cell(x, h, c, w_ih, w_hh, b, b)
    sig = torch.sigmoid
    i, f, g = sig(torch.tensor(1.0 * 0.5)), sig(torch.tensor(2.0 * 0.5)), math.tanh(3.0 * 0.5)
    c_want = f * 2.0 + i * g                                      # c' = f c + i g
    torch.testing.assert_close(c1, c_want.view(1, 1))
    torch.testing.assert_close(h1, (sig(torch.tensor(4.0 * 0.5)) * torch.tanh(c_want)).view(1, 1))   # h' = o tanh(c')


def test_lm_fused_and_equations_agree_and_output_is_tied():
    lm = small_lm().eval()
    x = torch.randint(11, (2, 8))
    a, loss_a = lm(x, x)
    b, loss_b = lm.set_fused(False)(x, x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=1e-4)
    assert lm.head.weight is lm.embed.weight
    assert [layer.lstm.hidden_size for layer in lm.layers] == [10, 10, 6]   # the last as wide as the embedding


def test_lm_is_causal():
    """The LM's output at step t does not depend on characters after t."""
    lm = small_lm().eval()
    x = torch.randint(11, (1, 8))
    y = x.clone()
    y[0, 5:] = (y[0, 5:] + 1) % 11
    torch.testing.assert_close(lm(x)[0][:, :5], lm(y)[0][:, :5])


def test_locked_dropout_one_mask_per_sequence():
    x = torch.ones(4, 20, 30)
    torch.manual_seed(0)
    y = ulmfit.locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:, :1].expand_as(y))                  # the same mask at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0}                 # kept units scaled by 1 / (1 - p)
    assert torch.equal(ulmfit.locked_dropout(x, 0.5, training=False), x)


def test_slanted_triangular_is_equation_3():
    T, lr, cut_frac, ratio = 100, 0.01, 0.1, 32
    cut = math.floor(T * cut_frac)
    for t in range(T + 1):
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        assert ulmfit.slanted_triangular(t, T, lr, cut_frac, ratio) == pytest.approx(lr * (1 + p * (ratio - 1)) / ratio)
    assert ulmfit.slanted_triangular(0, T, lr) == pytest.approx(lr / ratio)        # starts low
    assert ulmfit.slanted_triangular(cut, T, lr) == pytest.approx(lr)              # peaks at the cut
    assert ulmfit.slanted_triangular(T, T, lr) == pytest.approx(lr / ratio)        # ends low
    rates = [ulmfit.slanted_triangular(t, T, lr) for t in range(T)]
    assert max(range(T), key=rates.__getitem__) == cut
    rise, fall = rates[1] - rates[0], rates[cut] - rates[cut + 1]
    assert rise == pytest.approx(fall * (1 / cut_frac - 1))                         # short climb, long decay


def test_discriminative_rates_are_equation_2():
    lrs = ulmfit.discriminative_lrs(1e-2, 5, 2.6)
    assert lrs[-1] == pytest.approx(1e-2)
    for lower, upper in zip(lrs, lrs[1:]):
        assert lower == pytest.approx(upper / 2.6)                                  # η^{l-1} = η^l / 2.6
    assert ulmfit.discriminative_lrs(1e-2, 3, 1.0) == [1e-2] * 3


def test_gradual_unfreezing_adds_one_group_per_stage():
    assert [ulmfit.unfrozen_groups(s, 10, 4) for s in (0, 9, 10, 19, 20, 30, 99)] == [1, 1, 2, 2, 3, 4, 4]
    assert ulmfit.unfrozen_groups(0, 0, 4) == 4


def test_concat_pooling_is_equation_4_and_groups_partition_the_parameters():
    lm = small_lm()
    clf = ulmfit.LSTMClassifier(lm, 3).eval()
    x = torch.randint(11, (4, 7))
    H = lm.features(x)
    torch.testing.assert_close(clf.pool(x), torch.cat([H[:, -1], H.max(1).values, H.mean(1)], dim=-1))
    assert clf(x).shape == (4, 3)
    groups = clf.layer_groups()
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))
    unused = {id(lm.head.bias)}                                    # the LM's read-out bias: not in the classifier
    assert set(ids) == {id(p) for p in clf.parameters()} - unused
    assert len(groups) == 1 + lm.cfg.n_layers + 1


def test_shipped_checkpoint():
    path = data_path("lstm_shakespeare.pt")
    if not path.is_file():
        pytest.skip("lstm_shakespeare.pt not built yet: python scripts/pretrain_lstm.py")
    with path.open("rb") as f:
        ckpt = torch.load(f, weights_only=True)
    assert path.stat().st_size <= 3e6
    lm = ulmfit.LSTMLM.from_checkpoint(ckpt)
    info = ckpt["info"]
    assert info["val_loss"] < 2.0 and info["zero_shot"]["steps"][0] == 0
    assert len(ckpt["chars"]) == lm.cfg.vocab_size


@pytest.mark.slow
def test_pretrain_script_smoke(tmp_path):
    out = tmp_path / "lstm.pt"
    subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain_lstm.py"), "--iters", "6", "--eval-iters", "2",
                    "--eval-interval", "3", "--zero-shot-steps", "3", "--out", str(out), "--no-progress"],
                   check=True, cwd=REPO, capture_output=True)
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["info"]["zero_shot"]["steps"] == [0, 3, 6] and ckpt["info"]["iterations"] == 6


@pytest.mark.slow
def test_chapter_runs_script_smoke(tmp_path):
    """scripts/ch05_ulmfit_runs.py on a tiny LSTM checkpoint with the corpus's characters."""
    from llmcourse.data import shakespeare_splits

    tok = shakespeare_splits()[0]
    lm = small_lm(vocab_size=tok.vocab_size)
    path, out = tmp_path / "lstm.pt", tmp_path / "ch05.json"
    torch.save({**lm.checkpoint(), "chars": tok.chars, "info": {"val_loss": 9.9}}, path)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "ch05_ulmfit_runs.py"), "--smoke", "--lstm", str(path),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_runs(json.loads(out.read_text()))


def check_runs(data):
    """What chapter 5 reads from the runs file."""
    s = data["settings"]
    methods = {"from scratch", "ULMFiT, supervised", "ULMFiT, semi-supervised"}
    assert {r["method"] for r in data["curve"]} == methods
    assert {(r["method"], r["n"], r["seed"]) for r in data["curve"]} == {
        (m, n, k) for m in methods for n in s["sizes"] for k in s["seeds"]}
    assert {(r["method"], r["n"], r["seed"]) for r in data["ablation"]} == {
        (m, n, k) for m in s["ablation"] for n in s["ablation_sizes"] for k in s["seeds"]}
    assert set(s["lr"]) == {"ULMFiT", "from scratch"}
    assert data["lm"]["test_loss_before"] > 0 and data["lm"]["test_loss_after"] > 0


def test_shipped_runs():
    path = data_path("ch05_ulmfit_runs.json")
    if not path.is_file():
        pytest.skip("ch05_ulmfit_runs.json not built yet: python scripts/ch05_ulmfit_runs.py --jobs 2")
    data = json.loads(path.read_text())
    check_runs(data)
    assert len(data["settings"]["seeds"]) >= 3 and path.stat().st_size < 200_000
