"""llmcourse.classify: the shared task, the fine-tuning loop and its tricks, the zero-shot heuristic."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse import classify, ulmfit
from llmcourse.data import load_shakespeare
from llmcourse.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def task():
    return classify.load_authorship()


def test_task_split(task):
    assert task.labels == ["Shakespeare", "Milton"]
    assert len(task.train_text) == 3000 and len(task.test_text) == 1000
    assert task.train_y.tolist().count(0) == 1500 and task.test_y.tolist().count(1) == 500
    assert {len(t) for t in task.train_text + task.test_text} == {64}
    assert not set(task.train_text) & set(task.test_text)
    works = task.info["works"]
    assert not set(works["train"]["Shakespeare"]) & set(works["test"]["Shakespeare"])     # different plays
    pretraining = load_shakespeare()
    tok = CharTokenizer.from_text(pretraining)
    assert all(c in tok.stoi for t in task.train_text + task.test_text for c in t)        # the models' characters
    assert not any(t in pretraining for t in task.test_text[:50] + task.train_text[:50])  # unseen in pretraining


def test_labelled_subsets_are_balanced_nested_and_seeded(task):
    t50, y50 = task.labelled(50, seed=3)
    t200, y200 = task.labelled(200, seed=3)
    assert t200[:50] == t50 and torch.equal(y200[:50], y50)
    assert y50.tolist().count(0) == 25 and y200.sum().item() == 100
    assert task.labelled(50, seed=3)[0] == t50 and task.labelled(50, seed=4)[0] != t50
    assert all(task.train_text.index(t) >= 0 for t in t50)
    with pytest.raises(ValueError):
        task.labelled(3002)


def test_schedules():
    cfg = classify.FineTuneConfig(steps=100, lr=1.0, schedule="stlr")
    assert [classify.lr_factor(t, cfg) for t in (0, 10, 100)] == pytest.approx([1 / 32, 1.0, 1 / 32])
    cfg = classify.FineTuneConfig(steps=100, schedule="linear", warmup=0.1)
    f = [classify.lr_factor(t, cfg) for t in range(100)]
    assert f[9] == pytest.approx(1.0) and f[0] == pytest.approx(0.1) and f[-1] == pytest.approx(1 / 90)
    assert classify.lr_factor(5, classify.FineTuneConfig(schedule="constant")) == 1.0
    with pytest.raises(ValueError):
        classify.lr_factor(0, classify.FineTuneConfig(schedule="cosine"))


class Toy(nn.Module):
    """Three groups and an LM loss: enough to see the loop's tricks."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.mid = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.lm_calls = 0

    def forward(self, idx):
        return self.head(torch.tanh(self.mid(self.embed(idx).mean(1))))

    def layer_groups(self):
        return [list(self.embed.parameters()), list(self.mid.parameters()), list(self.head.parameters())]

    def lm_loss(self, idx):
        self.lm_calls += 1
        return self.embed.weight.pow(2).mean()


def toy_data(n=32):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randint(0, 2, (n, 6), generator=g) + 3 * y[:, None]     # class 1 reads tokens 3-4, class 0 tokens 0-1
    return x.clamp(max=4), y


def test_finetune_learns_and_applies_the_tricks():
    torch.manual_seed(0)
    model = Toy()
    x, y = toy_data()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = classify.FineTuneConfig(steps=30, batch_size=8, lr=0.05, discriminative=2.6, unfreeze_every=10,
                                  aux_lm=0.5, seed=0)
    run = classify.finetune(model, x, y, cfg, progress=False)
    assert run.trainable == [1] * 10 + [2] * 10 + [3] * 10
    assert model.lm_calls == 30
    assert classify.accuracy(model, x, y) == 1.0
    assert run.loss[-1] < run.loss[0]
    assert all(p.requires_grad for p in model.parameters())                # frozen groups are released at the end
    # the lowest group only trained in the last stage: replay the first 20 steps and it has not moved
    torch.manual_seed(0)
    replay = Toy()
    classify.finetune(replay, x, y, classify.FineTuneConfig(**{**cfg.__dict__, "steps": 20}), progress=False)
    assert torch.equal(replay.embed.weight, before["embed.weight"])
    assert not torch.equal(replay.mid.weight, before["mid.weight"])


def test_discriminative_rates_reach_the_optimizer(monkeypatch):
    seen = []
    real = torch.optim.AdamW

    def spy(groups, **kw):
        opt = real(groups, **kw)
        seen.append(opt)
        return opt

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    model = Toy()
    x, y = toy_data()
    classify.finetune(model, x, y, classify.FineTuneConfig(steps=1, lr=1.0, discriminative=2.0, schedule="constant"),
                      progress=False)
    assert [g["lr"] for g in seen[0].param_groups] == pytest.approx([0.25, 0.5, 1.0])


def test_lm_scores_and_zero_shot():
    torch.manual_seed(0)
    lm = ulmfit.LSTMLM(ulmfit.LSTMConfig(vocab_size=7, emb=4, hidden=6, dropout=0.0))
    x = torch.randint(7, (5, 9))
    logp = F.log_softmax(lm(x[:, :-1])[0], -1)
    want = torch.stack([logp[i, torch.arange(8), x[i, 1:]].mean() for i in range(5)])
    torch.testing.assert_close(classify.lm_scores(lm, x, batch_size=2), want)
    scores, y = torch.tensor([-1.0, -3.0, -0.5, -4.0]), torch.tensor([0, 1, 0, 0])
    assert classify.zero_shot_accuracy(scores, y, threshold=-2.0) == 0.75       # above: label 0
    assert classify.zero_shot_accuracy(scores, y, threshold=-2.0, label_if_above=1) == 0.25


def test_finetune_lm_lowers_the_loss_on_its_text():
    torch.manual_seed(0)
    lm = ulmfit.LSTMLM(ulmfit.LSTMConfig(vocab_size=5, emb=8, hidden=16, dropout=0.0))
    ids = torch.arange(5).repeat(60)                                        # 0 1 2 3 4 0 1 2 ...
    x, y = ids[:-1][None, :32], ids[1:][None, :32]
    before = lm(x, y)[1].item()
    classify.finetune_lm(lm, ids, classify.FineTuneConfig(steps=150, lr=3e-2, discriminative=2.6), block_size=16,
                         progress=False)
    assert lm(x, y)[1].item() < before / 2


def test_validation_split_holds_out_training_passages(task):
    val = task.validation_split(500, seed=123)
    assert len(val.test_text) == 500 and val.test_y.sum().item() == 250
    assert len(val.train_text) == 2500 and not set(val.train_text) & set(val.test_text)
    assert set(val.train_text) | set(val.test_text) == set(task.train_text)
    assert not set(val.test_text) & set(task.test_text)                       # never the real test set


def test_finetune_job_and_best_lr(monkeypatch):
    """A job builds its model by name after seeding, trains on n labelled passages and scores
    on the test set (or the validation split); two processes give the same results as one."""
    job = {"build": "test_classify:toy_classifier", "n": 8, "seed": 2, "meta": {"method": "toy"},
           "cfg": {"steps": 3, "batch_size": 4, "lr": 1e-2}}
    one = classify.finetune_job(job)
    assert one["method"] == "toy" and one["n"] == 8 and one["seed"] == 2 and 0 <= one["accuracy"] <= 1
    again = classify.finetune_job(job)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in one.items() if k != "seconds"}
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    jobs = [job, {**job, "seed": 3}]
    assert strip(classify.run_jobs(jobs, procs=2)) == strip(classify.run_jobs(jobs))
    val = classify.finetune_job({**job, "validation": True})
    assert val["accuracy"] != one["accuracy"] or val["final_loss"] != one["final_loss"]
    results = [{"method": "a", "lr": 1e-3, "accuracy": 0.6}, {"method": "a", "lr": 3e-3, "accuracy": 0.7},
               {"method": "a", "lr": 1e-2, "accuracy": 0.7}, {"method": "b", "lr": 1e-3, "accuracy": 0.9}]
    assert classify.best_lr(results) == {"a": 3e-3, "b": 1e-3}


def toy_classifier():
    """A bag-of-characters classifier of the interface, for the job runner's test."""
    task = classify.load_authorship()
    tok = CharTokenizer.from_text("".join(task.train_text + task.test_text) + load_shakespeare())

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(tok.vocab_size, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, idx):
            return self.head(self.embed(idx).mean(1))

        def layer_groups(self):
            return [list(self.embed.parameters()), list(self.head.parameters())]

    return Bag(), tok
