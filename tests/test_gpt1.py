"""llmcourse.gpt1: GPT-1's classifier on the course's decoder (Radford et al. 2018, section 3.2-3.3).

The states it reads are the decoder's own; the prediction is read at the extract token, which
sees the whole passage, while every passage position stays causal; the auxiliary loss is the
decoder's next-character loss and reuses the prediction's forward pass; the classifier
follows classify's interface and learns through its loop with λ = 0.5.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from llmcourse import classify, gpt1
from llmcourse.data import data_path
from llmcourse.gpt import GPT, GPTConfig
from nbgrader_harness import REPO


def small(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": 12, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16,
                            "dropout": 0.0, **kw})).eval()


def test_hidden_states_are_the_decoders_own():
    g = small()
    ids = torch.randint(12, (2, 9))
    torch.testing.assert_close(g.lm_head(gpt1.hidden_states(g, g.wte(ids))), g(ids)[0])
    with pytest.raises(ValueError):
        gpt1.hidden_states(g, torch.zeros(1, 17, 16))


def test_read_at_extract_which_sees_everything_while_positions_stay_causal():
    clf = gpt1.GPTClassifier(small(), 3).eval()
    x = torch.randint(12, (1, 10))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 12                                   # change the last character only
    hx, hy = clf.states(x), clf.states(y)
    assert hx.shape == (1, 12, 16)
    torch.testing.assert_close(hx[:, :10], hy[:, :10])               # <s> and characters 0..8: unchanged
    assert not torch.allclose(hx[:, -1], hy[:, -1])                  # $ saw the change
    torch.testing.assert_close(clf(x), clf.head(hx[:, -1]))
    assert not torch.allclose(clf(x), clf(y))


def test_lm_loss_is_next_character_loss_and_reuses_the_forward_pass():
    clf = gpt1.GPTClassifier(small(), 2)
    x = torch.randint(12, (3, 10))
    h = clf.states(x)
    want = F.cross_entropy(clf.gpt.lm_head(h[:, 1:10]).reshape(-1, 12), x[:, 1:].reshape(-1))
    torch.testing.assert_close(clf.lm_loss(x), want)
    clf.train()
    clf(x)
    assert clf._last[0] is x
    torch.testing.assert_close(clf.lm_loss(x), want)
    calls = []
    clf.gpt.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    clf(x)
    clf.lm_loss(x)                                                    # no second pass through the decoder
    assert len(calls) == 1
    clf.lm_loss(x.clone())                                            # another tensor: a pass of its own
    assert len(calls) == 2


def test_the_auxiliary_lm_state_equals_the_plain_decoder_when_start_is_its_first_token():
    """With <s> set to the embedding of a character c, the states of the passage are the decoder's
    own states for c followed by the passage: the classifier wraps the pretrained model, no more."""
    g = small()
    clf = gpt1.GPTClassifier(g, 2).eval()
    with torch.no_grad():
        clf.start.copy_(g.wte.weight[5])
    x = torch.randint(12, (2, 8))
    want = g(torch.cat([torch.full((2, 1), 5), x], dim=1))[0]
    torch.testing.assert_close(g.lm_head(clf.states(x)[:, :9]), want)


def test_layer_groups_partition_the_parameters():
    clf = gpt1.GPTClassifier(small(), 2)
    groups = clf.layer_groups()
    ids = [id(p) for grp in groups for p in grp]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in clf.parameters()}
    assert len(groups) == 1 + 2 + 1 and any(p is clf.extract for p in groups[-1])


def test_finetunes_with_the_auxiliary_objective():
    torch.manual_seed(0)
    clf = gpt1.GPTClassifier(small(), 2)
    y = torch.arange(32) % 2
    x = torch.randint(0, 6, (32, 10)) + 6 * y[:, None]               # class 1 reads characters 6-11
    run = classify.finetune(clf, x, y, classify.FineTuneConfig(steps=40, batch_size=8, lr=3e-3, schedule="linear",
                                                               aux_lm=0.5), progress=False)
    assert classify.accuracy(clf, x, y) == 1.0 and run.loss[-1] < run.loss[0]
    assert clf._last is None                                          # eval mode keeps no states


def test_classifier_builder_pretrained_or_fresh(tmp_path):
    g = small()
    path = tmp_path / "gpt.pt"
    torch.save({**g.checkpoint(), "chars": "".join(chr(97 + i) for i in range(12))}, path)
    clf, tok = gpt1.classifier(path=path)
    assert tok.vocab_size == 12
    torch.testing.assert_close(clf.gpt.wte.weight, g.wte.weight)
    fresh, _ = gpt1.classifier(pretrained=False, path=path)
    assert fresh.gpt.config == g.config and not torch.equal(fresh.gpt.wte.weight, g.wte.weight)


def check_runs(data):
    """What chapter 7 reads from the runs file."""
    s = data["settings"]
    assert set(s["lr"]) == {r["method"] for r in data["curve"]} == {"GPT-1, λ = 0.5", "GPT-1, λ = 0", "from scratch"}
    assert {(r["n"], r["seed"]) for r in data["curve"]} == {(n, k) for n in s["sizes"] for k in s["seeds"]}
    assert len(data["curve"]) == 3 * len(s["sizes"]) * len(s["seeds"])
    rows = data["zero_shot"]["gpt"]
    assert rows[0]["step"] == 0 and [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


@pytest.mark.slow
def test_chapter_runs_script_smoke(tmp_path):
    out = tmp_path / "ch07.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "ch07_gpt1_runs.py"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_runs(json.loads(out.read_text()))


def test_shipped_runs():
    path = data_path("ch07_gpt1_runs.json")
    if not path.is_file():
        pytest.skip("ch07_gpt1_runs.json not built yet: python scripts/ch07_gpt1_runs.py --jobs 2")
    data = json.loads(path.read_text())
    check_runs(data)
    assert len(data["settings"]["seeds"]) >= 3 and data["zero_shot"]["snapshots"]       # the snapshots were used
    assert len(data["zero_shot"]["gpt"]) >= 5 and data["zero_shot"]["lstm"] is not None
    assert path.stat().st_size < 200_000
