"""llmcourse.tokenizer and llmcourse.data: round trips, errors, batches, the shipped corpus."""
import pytest
import torch

from llmcourse.data import get_batch, load_shakespeare, shakespeare_splits
from llmcourse.tokenizer import CharTokenizer


def test_tokenizer_round_trip_and_vocabulary():
    text = "To be, or not to be:\nthat is the question."
    tok = CharTokenizer.from_text(text)
    assert tok.chars == "".join(sorted(set(text))) and tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.dtype == torch.long and ids.shape == (len(text),)
    assert [tok.chars[i] for i in ids] == list(text)
    assert tok.decode(ids) == text and tok.decode(ids.tolist()) == text


def test_tokenizer_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(KeyError, match="'z'"):
        tok.encode("abz")


def test_get_batch_targets_are_inputs_shifted_by_one():
    ids = torch.arange(1000) * 3                        # value encodes position
    x, y = get_batch(ids, 16, 12, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 12)
    torch.testing.assert_close(y, x + 3)                # y[b, t] = ids[start + t + 1]
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    assert int(y.max()) <= int(ids[-1])
    x2, _ = get_batch(ids, 16, 12, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)                           # same generator state, same batch


def test_get_batch_reaches_the_whole_stream():
    ids = torch.arange(20)
    x, y = get_batch(ids, 2000, 4, torch.Generator().manual_seed(0))
    assert int(x.min()) == 0 and int(y.max()) == 19     # first and last token both used


def test_shakespeare_splits():
    text = load_shakespeare()
    tok, train, val = shakespeare_splits()
    assert len(text) > 1_000_000 and text.startswith(tok.decode(train[:50]))
    assert len(train) + len(val) == len(text) and len(val) == len(text) - int(0.9 * len(text))
    assert tok.decode(val[-50:]) == text[-50:]
