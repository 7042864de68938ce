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
    assert "the" in S.function_words() and "breathe" not in S.function_words()


def test_prompt_round_trip_and_reference():
    assert P.prompt == "Passage: KING RICHARD: I am in health, I breathe, and see thee ill.\nSummary: "
    assert S.parse_prompt(P.prompt) == P
    assert P.name == "King Richard"
    assert P.reference() == "King Richard: health, breathe, see" and P.response.endswith(END)   # the longest
    assert P.salient() == ["health", "breathe", "ill"]                  # the rarest: 'see' is common, 'ill' less so
    assert S.SummaryLabeller().score_one(P, P.response) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="summarisation prompt"):
        S.parse_prompt("Task: Repeat the line.\nLine: x\nAnswer: ")


def test_salient_are_the_rarest_and_reference_the_longest():
    p = S.Passage("YORK", "Whose tongue more poisons than the adder's tooth,")
    counts = S.word_counts()
    cw = S.content_words(p.line)
    rarest = sorted(cw, key=lambda w: (counts[w], cw.index(w)))[:S.N_KEY]
    assert p.salient() == [w for w in cw if w in rarest]
    longest = sorted(cw, key=lambda w: (-len(w), cw.index(w)))[:S.N_KEY]
    assert p.reference() == "York: " + ", ".join(w for w in cw if w in longest)


def test_each_term_moves_the_score_the_right_way():
    lab = S.SummaryLabeller()
    full = lab.score_one(P, "King Richard: health, breathe, ill}")
    assert full == pytest.approx(1.0)
    t = lab.terms(P, "King Richard: health, breathe, ill}")
    assert (t.coverage, t.over_budget, t.invented, t.ended) == (1.0, 0, 0, True)
    # coverage: drop a salient word, drop the name
    assert lab.score_one(P, "King Richard: health, breathe}") == pytest.approx(0.75)
    assert lab.score_one(P, "Richard: health, breathe, ill}") == pytest.approx(0.75)     # half a name is no name
    # invented words cost, each occurrence
    assert lab.score_one(P, "King Richard: health, breathe, sin}") == pytest.approx(0.75 - 0.25)
    assert lab.terms(P, "King Richard: health, sick, sick}").invented == 2
    # no end marker
    assert lab.score_one(P, "King Richard: health, breathe, ill") == pytest.approx(0.0)
    assert lab.score_one(P, "King Richard: health, breathe, ill} and more") == pytest.approx(1.0)   # after END: unread
    # past the budget, each character costs 0.06: copying the passage loses to the summary
    long = "King Richard: I am in health, I breathe, and see thee ill}"
    assert lab.terms(P, long).over_budget == len(long) - 1 - S.BUDGET
    assert lab.score_one(P, long) == pytest.approx(1.0 - 0.06 * (len(long) - 1 - S.BUDGET))
    assert lab.score_one(P, long) < lab.score_one(P, "King Richard: health}")
    # within the budget, another passage word costs nothing
    assert lab.score_one(P, "King Richard: health, ill, see}") == lab.score_one(P, "King Richard: health, ill}") == 0.75
    # ... and past it a salient word does not pay for its characters
    assert lab.score_one(P, "King Richard: health, breathe, see, ill}") < lab.score_one(P, P.response)


def test_score_batch_compare_and_win_rate():
    lab = S.SummaryLabeller(temperature=0.15)
    good, bad = "King Richard: health, breathe, ill}", "Richard: sick"
    s = lab.score([P.prompt] * 2, [good, bad])
    assert s.dtype == torch.float64 and s[0] > s[1]
    assert lab.win_rate([P.prompt], [good], [good]) == pytest.approx(0.5)
    assert lab.win_rate([P.prompt], [good], [bad]) > 0.99
    g = torch.Generator().manual_seed(0)
    assert lab.compare([P.prompt] * 200, [good] * 200, [bad] * 200, g).float().mean() > 0.99


def test_data_deterministic_in_budget_and_held_out():
    train, evals = S.build()
    train2, evals2 = S.candidate_passages(), None
    assert len(evals) == 200 and len(train) > 5000
    assert set(train).isdisjoint(evals) and len(set(train) | set(evals)) == len(train2)
    assert S.build.__wrapped__() == (train, evals)                       # rebuilt from scratch: the same
    full = S._corpus()[0]
    for p in train[:300] + evals:
        assert len(p.prompt) + S.MAX_NEW_TOKENS <= 128                    # prompt and summary fit the context
        assert len(p.reference()) <= S.BUDGET and END not in p.text
        assert f"{p.speaker}.\n" in full and p.line in full               # from the first 90% of the text


def test_reference_summaries_score_high():
    lab = S.SummaryLabeller()
    train, evals = S.build()
    ref = lab.score([p.prompt for p in evals], [p.response for p in evals])
    assert ref.min() >= 0.5 and ref.mean() > 0.85                        # they name the speaker and most of the key words
    copy = lab.score([p.prompt for p in evals], [p.text + END for p in evals])
    assert (copy < ref).float().mean() > 0.95                            # copying the passage is worse
