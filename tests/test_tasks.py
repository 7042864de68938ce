"""The synthetic translation task (llmcourse.tasks) and its metrics."""
import random

import torch

from llmcourse import tasks
from llmcourse.seq2seq_train import score
from llmcourse.tasks import (BOS, EOS, PAD, SRC_VOCAB, TGT_VOCAB, TaskConfig, encode_pairs,
                             make_pairs, make_splits, translate, untranslate)


def naive_translate(src):
    """Independent re-implementation: swap pairs first, then map, then insert particles."""
    words = list(src)
    i = 0
    while i < len(words) - 1:
        if words[i] in tasks.ADJECTIVES and words[i + 1] in tasks.NOUNS:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1
    out = []
    for w in words:
        out.append(tasks.DICTIONARY[w])
        if w in tasks.VERBS:
            out.append("ga")
    return out


def test_generator_is_deterministic():
    a = make_pairs(TaskConfig(n=50, seed=7))
    b = make_pairs(TaskConfig(n=50, seed=7))
    c = make_pairs(TaskConfig(n=50, seed=8))
    assert a == b and a != c
    tr1, va1 = make_splits(30, 10)
    tr2, va2 = make_splits(30, 10)
    assert torch.equal(tr1.src, tr2.src) and torch.equal(va1.tgt, va2.tgt)


def test_lengths_cover_the_range():
    pairs = make_pairs(TaskConfig(n=600, min_len=3, max_len=30, seed=0))
    lengths = [len(s) for s, _ in pairs]
    assert min(lengths) == 3 and max(lengths) == 30
    assert len(set(lengths)) == 28


def test_reference_translation_is_consistent():
    pairs = make_pairs(TaskConfig(n=300, seed=1))
    for src, tgt in pairs:
        assert tgt == naive_translate(src)
        assert untranslate(tgt) == src                       # the translation is invertible
        assert len(tgt) == len(src) + sum(w in tasks.VERBS for w in src)
        for i, w in enumerate(src):                          # adjectives only before nouns
            if w in tasks.ADJECTIVES:
                assert src[i + 1] in tasks.NOUNS
    assert translate(["red", "cat", "sees"]) == [tasks.DICTIONARY["cat"], tasks.DICTIONARY["red"],
                                                 tasks.DICTIONARY["sees"], "ga"]


def test_dictionary_is_a_bijection_onto_an_invented_vocabulary():
    values = list(tasks.DICTIONARY.values())
    assert len(set(values)) == len(values) == len(tasks.SOURCE_WORDS)
    assert not set(values) & set(tasks.SOURCE_WORDS)
    assert len(TGT_VOCAB) == len(SRC_VOCAB) + 1               # plus the particle


def test_encoding_wraps_targets_and_pads():
    pairs = make_pairs(TaskConfig(n=20, seed=2))
    data = encode_pairs(pairs)
    for i, (s, t) in enumerate(pairs):
        assert SRC_VOCAB.decode(data.src[i]) == s
        assert data.tgt[i, 0] == BOS and data.tgt[i, len(t) + 1] == EOS
        assert (data.tgt[i, len(t) + 2:] == PAD).all() and (data.src[i, len(s):] == PAD).all()
        assert TGT_VOCAB.decode(data.tgt[i]) == t
        assert data.src_len[i] == len(s)
    sub = data.subset(torch.tensor([3, 5]))
    assert sub.src.size(1) == int(data.src_len[[3, 5]].max())
    assert sub.pairs == [pairs[3], pairs[5]]


def test_score_exact_and_token_accuracy():
    pairs = [(["cat"], translate(["cat"])), (["dog", "sees"], translate(["dog", "sees"]))]
    data = encode_pairs(pairs)
    perfect = [TGT_VOCAB.encode(t) for _, t in pairs]
    s = score(perfect, data)
    assert s["exact"] == 1.0 and s["token_acc"] == 1.0
    wrong = [perfect[0], perfect[1][:2]]                      # dropped the particle, EOS early
    s = score(wrong, data)
    assert s["exact"] == 0.5
    assert s["token_acc"] == (2 + 2) / (2 + 4)                 # (cat EOS) + (dog sees) of 6
    assert s["exact_each"].tolist() == [True, False]


def test_reference_alignment_points_at_the_translated_word():
    rng = random.Random(3)
    for _ in range(200):
        src = tasks.sample_sentence(rng, rng.randint(3, 30))
        tgt, align = translate(src), tasks.reference_alignment(src)
        assert len(align) == len(tgt)
        for word, j in zip(tgt, align):
            if j is None:
                assert word == "ga"
            else:
                assert tasks.INVERSE[word] == src[j]
        assert sorted(j for j in align if j is not None) == list(range(len(src)))


def test_train_and_validation_sets_are_independent_draws():
    """Different seeds: the validation set is not a prefix or a copy of the training set, and an
    exact sentence repeat between them is rare (only short sentences can collide)."""
    train, val = make_splits(n_train=400, n_val=100, min_len=6, max_len=12, seed=3)
    train_src = {tuple(s) for s, _ in train.pairs}
    assert sum(tuple(s) in train_src for s, _ in val.pairs) <= 2
    assert [p for p in val.pairs] != train.pairs[:100]
    again, _ = make_splits(n_train=100, n_val=10, min_len=6, max_len=12, seed=3)
    assert again.pairs == train.pairs[:100]                   # the training set depends on its seed only


def test_vocab_decode_stops_at_eos_and_skips_padding():
    ids = [BOS] + TGT_VOCAB.encode(translate(["cat", "sees"])) + [EOS, TGT_VOCAB.stoi["ga"], PAD]
    assert TGT_VOCAB.decode(ids) == translate(["cat", "sees"])
    assert TGT_VOCAB.decode(torch.tensor([PAD, 3, PAD, 4])) == [TGT_VOCAB.itos[3], TGT_VOCAB.itos[4]]
