"""The tokenizer, the review grammar, and the shipped corpus."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from minirlhf.lm.tokenizer import BOS, EOS, PAD, CharTokenizer
from minirlhf.world import CORPORA
from minirlhf.world.reviews import LEXICON, is_grammatical, make_corpus, parse_review

DATA = Path(__file__).resolve().parent.parent / "data"


def test_specials_are_distinct():
    tok = CharTokenizer()
    assert len({PAD, BOS, EOS}) == 3 and tok.pad_id != tok.eos_id


def test_round_trip_and_framing():
    tok = CharTokenizer()
    text = "the plot was very good. 12+7=19!"
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert tok.decode(ids) == text
    assert tok.decode(ids + [PAD, PAD, 5]) == text  # stops at EOS
    assert CharTokenizer.from_json(tok.to_json()).chars == tok.chars


def test_unknown_character_names_character_and_position():
    with pytest.raises(ValueError, match=r"unknown character 'Z' at position 4"):
        CharTokenizer().encode("the Zebra")


def test_encode_batch_right_pads():
    batch = CharTokenizer().encode_batch(["ab", "abcd"])
    assert batch.shape == (2, 5) and batch[0, 0] == BOS and list(batch[0, 3:]) == [PAD, PAD]


def test_grammar_parses_and_rejects():
    assert is_grammatical("the plot was very good but slow.")
    assert is_grammatical("the cast is not great. the music was fun and really charming.")
    for bad in ["the plot was good", "the plot was good and.", "plot was good.",
                "the plot was very.", "the plot was good and bad and fun.",
                "the plot was good.  the cast is bad.", "the plot was good. the",
                "the plot was goodd."]:
        assert not is_grammatical(bad), bad
    four = "the plot was good. the plot was good. the plot was good. the plot was good."
    assert is_grammatical(four)  # long-winded, but grammatical
    parsed = parse_review("the plot was not good but fun.")
    assert parsed[0].clauses[0].adverb == "not" and parsed[0].conjunction == "but"
    assert all(-2 <= p <= 2 for p in LEXICON.values())


def test_shipped_corpora_regenerate_byte_identically():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_corpora", DATA / "make_corpora.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files, entropy = mod.corpora()
    assert set(files) == {"reviews.txt", "arithmetic.txt", "scratchpad.txt"}
    for name, text in files.items():
        shipped = (CORPORA / name).read_bytes()
        assert hashlib.sha256(text.encode("ascii")).digest() == hashlib.sha256(shipped).digest()
    assert abs(entropy - 0.3426) < 1e-4  # the figure data/README.md quotes


def test_corpus_is_grammatical_mixed_and_reproducible():
    reviews, entropy = make_corpus(2000, seed=5)
    assert all(is_grammatical(r) for r in reviews)
    assert reviews == make_corpus(2000, seed=5)[0]
    assert 0.2 < entropy < 0.5
    words = " ".join(reviews).replace(".", "").split()
    pos = sum(LEXICON.get(w, 0) > 0 for w in words)
    neg = sum(LEXICON.get(w, 0) < 0 for w in words)
    assert 0.4 < pos / (pos + neg) < 0.6  # positive and negative mixed
    lengths = [r.count(".") for r in reviews]
    assert set(lengths) == {1, 2, 3}
    assert np.mean([len(r) for r in reviews]) < 100
