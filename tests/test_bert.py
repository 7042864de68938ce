"""llmcourse.bert and llmcourse.mlm as chapter 6 uses them (Devlin et al. 2018, arXiv:1810.04805).

The encoder's layer against ``nn.TransformerEncoderLayer`` with copied weights (Post-LN as
BERT, Pre-LN as Cramming); the states the [CLS] classifier and the mask filler read are the
encoder's own; masked predictions never answer [MASK]; the bidirectional restorer reads the
right context and the left-to-right one does not; the classifier follows classify's
interface; the pretraining script's smoke run and the shipped checkpoint.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from llmcourse import bert, classify, mlm
from llmcourse.data import data_path
from llmcourse.tokenizer import CharTokenizer
from nbgrader_harness import REPO

TEXT = "the cat sat on the mat, and the dog sat on the log. " * 20


def small(**kw) -> mlm.MLMEncoder:
    torch.manual_seed(0)
    cfg = {"vocab_size": 12, "seq_len": 16, "d_model": 16, "n_layers": 2, "n_heads": 4, "d_ff": 24, "dropout": 0.0,
           **kw}
    return mlm.MLMEncoder(mlm.MLMConfig(**cfg)).eval()


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_block_equals_nn_transformer_encoder_layer(norm):
    """BERT's layer (Post-LN, GELU) and the Pre-LN one against PyTorch's with the same weights."""
    block = small(norm=norm).blocks[0]
    ref = nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0, activation="gelu", batch_first=True,
                                     norm_first=norm == "pre").eval()
    a = block.attn
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.w_q.weight, a.w_k.weight, a.w_v.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.w_q.bias, a.w_k.bias, a.w_v.bias]))
        ref.self_attn.out_proj.weight.copy_(a.w_o.weight)
        ref.self_attn.out_proj.bias.copy_(a.w_o.bias)
        for mine, theirs in ((block.ff.w1, ref.linear1), (block.ff.w2, ref.linear2),
                             (block.norm1, ref.norm1), (block.norm2, ref.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(block(x), ref(x), atol=1e-5, rtol=1e-5)


def test_hidden_states_are_the_encoders_own():
    enc = small()
    ids = torch.randint(11, (2, 10))
    torch.testing.assert_close(enc.head(bert.hidden_states(enc, enc.tok(ids))), enc(ids)[0])


def test_fill_masks_answers_at_every_mask_and_never_mask():
    enc = small()
    ids = torch.randint(11, (3, 12))
    ids[0, 2] = ids[2, 5] = ids[2, 6] = bert.mask_id(enc)
    with torch.no_grad():
        enc.head.weight[bert.mask_id(enc)] *= 50                    # make [MASK] the likeliest token
    where, top, p = bert.fill_masks(enc, ids, top=3)
    assert where.tolist() == [[0, 2], [2, 5], [2, 6]]
    assert top.shape == p.shape == (3, 3) and not (top == bert.mask_id(enc)).any()
    assert (p[:, :-1] >= p[:, 1:]).all() and (p.sum(-1) <= 1 + 1e-6).all()
    allowed = torch.zeros(12, dtype=torch.bool)
    allowed[[1, 4, 7]] = True
    _, top, p = bert.fill_masks(enc, ids, top=3, allowed=allowed)
    assert set(top.flatten().tolist()) == {1, 4, 7} and torch.allclose(p.sum(-1), torch.ones(3))


def test_blank_words():
    items = bert.blank_words(TEXT, 30, window=24, seed=1)
    assert len(items) == 30 and all(len(it["window"]) == 24 for it in items)
    for it in items:
        w, a, b = it["window"], it["start"], it["end"]
        assert w[a:b].isalpha() and 3 <= b - a <= 10 and a > 0 and b < 24
        assert not w[a - 1].isalpha() and not w[b].isalpha()          # a whole word
    assert bert.blank_words(TEXT, 30, window=24, seed=1) == items


def test_restorer_one_pass_or_surest_letter_first():
    tok = CharTokenizer.from_text(TEXT)
    enc = small(vocab_size=tok.vocab_size + 1)
    item = {"window": "the cat sat on", "start": 4, "end": 7}
    ids = tok.encode(item["window"])[None].clone()
    ids[0, 4:7] = bert.mask_id(enc)
    _, top, _ = bert.fill_masks(enc, ids, allowed=torch.cat([bert.letters(tok), torch.tensor([False])]))
    assert bert.restore_bidirectional(enc, tok, [item], one_pass=True) == [tok.decode(top[:, 0])]
    passes = []
    enc.blocks[0].register_forward_hook(lambda *a: passes.append(1))
    bert.restore_bidirectional(enc, tok, [item, {"window": "the dog sat on", "start": 12, "end": 13}])
    assert len(passes) == 3                                            # one pass per letter of the longest word
    one = {"window": "the cat sat on", "start": 4, "end": 5}           # one letter: the orders agree
    assert bert.restore_bidirectional(enc, tok, [one]) == bert.restore_bidirectional(enc, tok, [one], one_pass=True)


def test_restoration_scores():
    items = [{"window": "a cat sat", "start": 2, "end": 5}, {"window": "a dog ran", "start": 6, "end": 9}]
    assert bert.restoration_scores(items, ["cat", "xyz"]) == {"words": 0.5, "characters": 0.5}
    assert bert.restoration_scores(items, ["cat", "ran"]) == {"words": 1.0, "characters": 1.0}


class RightOnly(nn.Module):
    """A toy left-to-right model: it repeats the last character it is given, so its guesses show
    exactly what it was shown."""

    def __init__(self, tok):
        super().__init__()
        self.tok = tok

    def forward(self, x, attention_mask=None):
        logits = torch.zeros(x.size(0), x.size(1), self.tok.vocab_size)
        logits[torch.arange(x.size(0)), -1, x[:, -1]] = 1.0           # repeat the last character
        return logits, None


def test_left_to_right_restorer_never_sees_the_right_context():
    tok = CharTokenizer.from_text(TEXT)
    item = {"window": "the cat sat on", "start": 4, "end": 7}
    other = {"window": "the cat mat on", "start": 4, "end": 7}
    lm = RightOnly(tok)
    assert bert.restore_left_to_right(lm, tok, [item]) == bert.restore_left_to_right(lm, tok, [other])
    item = {"window": "the cat sat on", "start": 5, "end": 7}          # after "the c": a letter to repeat
    assert bert.restore_left_to_right(lm, tok, [item]) == ["cc"]


def test_bidirectional_restorer_reads_both_sides():
    """Each masked character's logits change when a character after the word changes."""
    tok = CharTokenizer.from_text(TEXT)
    enc = small(vocab_size=tok.vocab_size + 1)
    ids = torch.stack([tok.encode("the cat sat on"), tok.encode("the cat sot on")])
    ids[:, 4:7] = bert.mask_id(enc)
    h = bert.hidden_states(enc, enc.tok(ids))
    assert not torch.allclose(h[0, 4:7], h[1, 4:7])
    item = {"window": "the cat sat on", "start": 4, "end": 7}
    guess = bert.restore_bidirectional(enc, tok, [item])
    assert len(guess[0]) == 3 and guess[0].isalpha()                   # letters only
    # left_only: the same model, nothing after the word
    left = bert.restore_bidirectional(enc, tok, [item, {**item, "window": "the cat sot on"}], left_only=True)
    assert left[0] == left[1] and left[0].isalpha()


def test_restorers_batch_as_they_would_one_by_one():
    """Windows go through together; each gets what it would get alone (padding never leaks)."""
    from llmcourse.gpt import GPT, GPTConfig

    tok = CharTokenizer.from_text(TEXT)
    enc = small(vocab_size=tok.vocab_size + 1)
    items = bert.blank_words(TEXT, 6, window=16, seed=3)
    for kw in ({}, {"one_pass": True}, {"left_only": True}):
        together = bert.restore_bidirectional(enc, tok, items, **kw)
        assert together == [bert.restore_bidirectional(enc, tok, [it], **kw)[0] for it in items]
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    together = bert.restore_left_to_right(gpt, tok, items)
    assert together == [bert.restore_left_to_right(gpt, tok, [it])[0] for it in items]
    assert [len(g) for g in together] == [it["end"] - it["start"] for it in items]


def test_classifier_interface():
    enc = small()
    clf = bert.BertClassifier(enc, 2).eval()
    x = torch.randint(11, (4, 15))                                     # 15 + [CLS] = seq_len
    assert clf(x).shape == (4, 2)
    groups = clf.layer_groups()
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(clf.parameters()))   # a partition of the parameters
    assert len(groups) == 1 + enc.cfg.n_layers + 1 and any(p is clf.cls for p in groups[-1])
    # the prediction is read at [CLS]: position 0 of the states
    h = bert.hidden_states(enc, torch.cat([clf.cls.expand(4, 1, -1), enc.tok(x)], dim=1))
    torch.testing.assert_close(clf(x), clf.head(h[:, 0]))
    assert torch.isfinite(clf.lm_loss(x))


def test_classifier_finetunes_through_the_shared_loop():
    torch.manual_seed(0)
    clf = bert.BertClassifier(small(), 2)
    y = torch.arange(32) % 2
    x = torch.randint(0, 5, (32, 10)) + 5 * y[:, None]                # class 1 reads tokens 5-9
    classify.finetune(clf, x, y, classify.FineTuneConfig(steps=40, batch_size=8, lr=3e-3, schedule="linear"),
                      progress=False)
    assert classify.accuracy(clf, x, y) == 1.0


def test_checkpoint_round_trip():
    enc = small(norm="pre", bias=False)
    back = bert.from_checkpoint(bert.checkpoint(enc))
    ids = torch.randint(11, (2, 9))
    torch.testing.assert_close(back(ids)[0], enc(ids)[0])
    assert back.cfg == enc.cfg and not back.training


@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("bert") / "bert.pt"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain_bert.py"), "--seconds", "2",
                           "--d-model", "32", "--d-ff", "64", "--n-layers", "1", "--evals", "2",
                           "--val-batches", "2", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_pretrain_script_smoke(smoke_checkpoint):
    ckpt = torch.load(smoke_checkpoint, weights_only=True)
    info = ckpt["info"]
    assert info["cpu_seconds"] >= 2 and len(info["curve"]["val_loss"]) == 3
    assert len(ckpt["chars"]) + 1 == ckpt["config"]["vocab_size"]


def test_shipped_checkpoint():
    path = data_path(bert.PRETRAINED_FILE)
    if not path.is_file():
        pytest.skip("bert_shakespeare.pt not built yet: python scripts/pretrain_bert.py")
    assert path.stat().st_size <= 3e6
    enc, tok, info = bert.load_pretrained_bert()
    assert enc.cfg.vocab_size == tok.vocab_size + 1 and enc.cfg.norm == "post"
    from llmcourse.gpt import load_pretrained

    gpt = load_pretrained()[0]                     # chapter 6 compares the two as models of one size
    assert sum(p.numel() for p in enc.blocks.parameters()) == sum(p.numel() for p in gpt.blocks.parameters()), \
        "the shipped GPT changed shape: rerun scripts/pretrain_bert.py"
    assert info["val_loss"] < info["curve"]["val_loss"][0] / 2


def test_classifier_builder_pretrained_or_fresh(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    enc = small(vocab_size=tok.vocab_size + 1)
    path = tmp_path / "enc.pt"
    torch.save({**bert.checkpoint(enc), "chars": tok.chars, "info": {}}, path)
    torch.manual_seed(0)
    clf, tok2 = bert.classifier(path=path)
    assert tok2.chars == tok.chars
    torch.testing.assert_close(clf.encoder.tok.weight, enc.tok.weight)
    fresh, _ = bert.classifier(pretrained=False, path=path)
    assert fresh.encoder.cfg == enc.cfg and not torch.equal(fresh.encoder.tok.weight, enc.tok.weight)


@pytest.mark.slow
def test_chapter_runs_script_smoke(smoke_checkpoint, tmp_path):
    out = tmp_path / "ch06.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "ch06_bert_runs.py"), "--smoke", "--bert",
                           str(smoke_checkpoint), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = json.loads(out.read_text())
    check_runs(first)
    # --words-only refreshes the restoration part and keeps the fine-tuning runs as they were
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "ch06_bert_runs.py"), "--smoke", "--words-only",
                           "--bert", str(smoke_checkpoint), "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads(out.read_text())
    check_runs(again)
    assert again["curve"] == first["curve"] and again["blanked_words"]["scores"] == first["blanked_words"]["scores"]


def check_runs(data):
    """What chapter 6 reads from the runs file."""
    s = data["settings"]
    words = data["blanked_words"]
    assert set(words["scores"]) == {"BERT, both sides", "BERT, both sides, one pass", "BERT, left side only",
                                    "GPT, left to right", "GPT, the encoder's characters"}
    eq = words["gpt_equal_data"]                      # the snapshot closest to the encoder's characters read
    from llmcourse.gpt import load_pretrained, pretrained_steps
    info = load_pretrained()[2]
    per_step = info["train"]["batch_size"] * info["train"]["block_size"]
    assert eq["step"] in pretrained_steps() and eq["tokens"] == eq["step"] * per_step
    assert all(abs(eq["tokens"] - eq["encoder_tokens"]) <= abs(s * per_step - eq["encoder_tokens"])
               for s in pretrained_steps())
    assert all(0 <= v <= 1 for sc in words["scores"].values() for v in sc.values())
    assert set(s["lr"]) == {r["method"] for r in data["curve"]} == {"BERT, pretrained", "from scratch"}
    assert len(data["curve"]) == len(s["sizes"]) * len(s["seeds"]) * 2
    assert {(r["n"], r["seed"]) for r in data["curve"]} == {(n, k) for n in s["sizes"] for k in s["seeds"]}


def test_shipped_runs():
    path = data_path("ch06_bert_runs.json")
    if not path.is_file():
        pytest.skip("ch06_bert_runs.json not built yet: python scripts/ch06_bert_runs.py --jobs 2")
    data = json.loads(path.read_text())
    check_runs(data)
    assert len(data["settings"]["seeds"]) >= 3 and data["blanked_words"]["n"] >= 500
    assert path.stat().st_size < 200_000
