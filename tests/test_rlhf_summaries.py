"""The summarisation task of chapter 23 and its labeller: each term of the score moves it the
way it says, reference summaries score high, the data are deterministic and fit the model."""
from __future__ import annotations

import pytest
import torch

from llmcourse.rlhf import summaries as S
from llmcourse.rlhf.instructions import END

P = S.Passage("KING RICHARD", "I am in health, I breathe, and see thee ill.")


def test_words_and_content_words():
    assert S.words("Dar'st thou, KING?") == ["dar'st", "thou", "king"]
    assert S.content_words(P.line) == ["health", "breathe", "see", "ill"]   # 'and', 'thee' are function words
    assert S.content_words("Whose tongue, whose TONGUE") == ["Whose", "tongue"]   # as spelt, each once
    assert "the" in S.function_words() and "breathe" not in S.function_words()
    counts = S.word_counts()
    assert min(counts[w] for w in S.function_words()) >= max(counts[w] for w in ("health", "breathe"))


def test_prompt_round_trip_and_reference():
    assert P.prompt == "Passage: KING RICHARD: I am in health, I breathe, and see thee ill.\nSummary: "
    assert S.parse_prompt(P.prompt) == P
    assert P.name == "King Richard" and P.key() == ["health", "breathe", "see", "ill"]
    # the content words in order while they fit the budget: 'ill' would make 36 characters
    assert P.reference() == "King Richard: health breathe see" and P.response == P.reference() + END
    assert len(P.reference()) <= S.BUDGET < len(P.reference() + " ill")
    with pytest.raises(ValueError, match="summarisation prompt"):
        S.parse_prompt("Task: Repeat the line.\nLine: x\nAnswer: ")


def test_each_term_moves_the_score_the_right_way():
    lab = S.SummaryLabeller()
    t = lab.terms(P, P.response)
    assert (t.coverage, t.over_budget, t.invented, t.ended) == (0.8, 0, 0, True)       # 4 of 5 items
    assert lab.score_one(P, P.response) == pytest.approx(0.8)
    # coverage: fewer content words, no name (half a name is no name)
    assert lab.score_one(P, "King Richard: health breathe}") == pytest.approx(0.6)
    assert lab.score_one(P, "Richard: health breathe see}") == pytest.approx(0.6)
    assert lab.score_one(P, "King Richard: Health, BREATHE; see}") == pytest.approx(0.8)   # case and commas do not matter
    # invented words cost, each occurrence
    assert lab.score_one(P, "King Richard: health breathe sin}") == pytest.approx(0.6 - 0.25)
    assert lab.terms(P, "King Richard: sin sin}").invented == 2
    # no end marker; after it, nothing is read
    assert lab.score_one(P, "King Richard: health breathe see") == pytest.approx(0.8 - 1.0)
    assert lab.score_one(P, "King Richard: health breathe see} and more") == pytest.approx(0.8)
    # past the budget each character costs length_penalty: copying the passage loses to the summary
    long = P.text + END
    assert lab.terms(P, long).over_budget == len(P.text) - S.BUDGET
    assert lab.score_one(P, long) == pytest.approx(1.0 - lab.length_penalty * (len(P.text) - S.BUDGET))
    assert lab.score_one(P, long) < lab.score_one(P, "King Richard: health}")
    # a word wholly past the budget costs more than it earns, even the shortest
    q = S.Passage("KING RICHARD", "The tongue, the tooth, the heart, the blood, the eye")
    full = "King Richard: " + " ".join(q.key())
    cut = full.rsplit(" ", 1)[0]
    assert len(cut) > S.BUDGET and lab.score_one(q, full + END) < lab.score_one(q, cut + END)


def test_score_batch_compare_and_win_rate():
    lab = S.SummaryLabeller(temperature=0.15)
    good, bad = P.response, "Richard: sick"
    s = lab.score([P.prompt] * 2, [good, bad])
    assert s.dtype == torch.float64 and s[0] > s[1]
    assert lab.win_rate([P.prompt], [good], [good]) == pytest.approx(0.5)
    assert lab.win_rate([P.prompt], [good], [bad]) > 0.99
    g = torch.Generator().manual_seed(0)
    assert lab.compare([P.prompt] * 200, [good] * 200, [bad] * 200, g).float().mean() > 0.99


def test_labeller_log_records_terms_and_preference_over_references():
    lab = S.SummaryLabeller()
    log = S.LabellerLog(lab)
    scores = log([P.prompt, P.prompt], [P.response, "King Richard: health breathe see ill}"])
    assert torch.equal(scores, lab.score([P.prompt] * 2, [P.response, "King Richard: health breathe see ill}"]))
    assert log.log["coverage"] == [pytest.approx(0.9)] and log.log["over_budget"] == [1.0]
    expected = (0.5 + float(torch.sigmoid(torch.tensor((scores[1] - scores[0]).item() / lab.temperature)))) / 2
    assert log.log["vs_reference"] == [pytest.approx(expected)]


def test_data_deterministic_fit_and_from_the_first_part_of_the_text():
    train, evals = S.build()
    assert len(evals) == 200 and len(train) > 5000
    assert set(train).isdisjoint(evals) and len(set(train) | set(evals)) == len(S.candidate_passages())
    assert S.build.__wrapped__() == (train, evals)                       # rebuilt from scratch: the same
    text = S._corpus()[0]
    for p in train[:300] + evals:
        assert len(p.prompt) + S.MAX_NEW_TOKENS <= 128                    # prompt and summary fit the context
        assert len(p.reference()) <= S.BUDGET and END not in p.text and len(p.key()) >= S.N_KEY
        assert f"{p.speaker}.\n" in text and p.line in text              # from the first 90% of the text


def test_reference_summaries_score_high():
    lab = S.SummaryLabeller()
    _, evals = S.build()
    ref = lab.score([p.prompt for p in evals], [p.response for p in evals])
    assert ref.min() >= 0.25 and ref.mean() > 0.8                       # the name and most of the content
    copy = lab.score([p.prompt for p in evals], [p.text + END for p in evals])
    assert (copy < ref).float().mean() > 0.9                             # copying the passage is worse
