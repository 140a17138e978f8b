"""Checks on generated examples past parsing: the seeds' surface form, near-duplicates, overlap with the test set, and
a blind verifier.

Similarity is ROUGE-L F1 over normalised words (the measure the paper's de-duplication used): the longest common
subsequence of words, 2·LCS / (len(a) + len(b)). rapidfuzz computes the LCS in C++; each word becomes one
character of a private alphabet so that its character-level LCS is the word-level one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from llm2llm.data import Example
from llm2llm.tasks import Task, normalize


@dataclass(frozen=True)
class SurfaceForm:
    """What (nearly) every seed's text shares on the surface, given to each teacher example (quality.match_seed_form):
    lower case, and no punctuation. A teacher writes capitals and quotes by habit; a student trained on them learns a
    form its inputs never have. On SNIPS every seed and test row is lower case without punctuation, while the bundled
    teacher capitalised 137 of 190 examples and quoted a title in 72 (docs/results.md)."""

    lowercase: bool
    unpunctuated: bool
    split_contractions: bool = False  # unpunctuated seeds write "i d like", "what s", "o clock": an apostrophe parts words
    SHARE = 0.95  # of the seeds: a stray colon in one SNIPS seed of 70 does not make the set punctuated

    @classmethod
    def of(cls, texts: list[str]) -> SurfaceForm:
        def most(has) -> bool:
            return sum(map(has, texts)) >= cls.SHARE * len(texts) > 0

        unpunctuated = most(lambda t: not any(map(_is_punctuation, t)))
        # The way the seeds lost their apostrophes: parted (SNIPS: 4 of 70 seeds, 41 of 700 test rows; 3 joined) or joined
        split = sum(len(_SPLIT.findall(t.lower())) for t in texts) > sum(len(_JOINED.findall(t.lower())) for t in texts)
        return cls(lowercase=most(lambda t: t == t.lower()), unpunctuated=unpunctuated, split_contractions=unpunctuated and split)

    def apply(self, text: str) -> str:
        if self.lowercase:
            text = text.lower()
        if self.unpunctuated:  # an apostrophe joins ("what's" -> "whats") or parts as the seeds do; other marks part
            apostrophe = " " if self.split_contractions else ""  # words; "3.5" stays
            text = "".join(apostrophe if ch in "'’" else " " if _is_punctuation(ch) and not _between_digits(text, i) else ch
                           for i, ch in enumerate(text))
            text = " ".join(text.split())
        return text


# Contractions with their apostrophe parted into a space, and the same joined into one word
_SPLIT = re.compile(r"\b(?:i m|(?:i|you|we|they|he|she|it|that|what|there|who|where|how|let) (?:s|d|ll|re|ve)|"
                    r"(?:don|can|won|isn|aren|doesn|didn|wasn|weren|couldn|wouldn|shouldn) t|o clock)\b")
_JOINED = re.compile(r"\b(?:im|whats|thats|theres|lets|dont|cant|wont|isnt|arent|doesnt|didnt|wasnt|werent|couldnt|"
                     r"wouldnt|shouldnt|oclock|youre|theyre|ive|youve|theyve|youll|itll)\b")


def _is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _between_digits(text: str, i: int) -> bool:
    return text[i] in ".," and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()


_FIRST_CODEPOINT = 0x10000  # past the BMP: no surrogates, room for a million distinct words


class RougeIndex:
    """A growing set of texts; `nearest(text)` finds the most similar one by ROUGE-L F1."""

    def __init__(self, texts: list[str] = (), ids: list[str] = ()) -> None:
        self._vocab: dict[str, int] = {}
        self._encoded: list[str] = []
        self._lengths: list[int] = []  # words per text, kept beside the encodings for the F1 denominator
        self._ids: list[str] = []
        for i, text in enumerate(texts):
            self.add(text, ids[i] if ids else str(i))

    def _encode(self, text: str) -> str:
        return "".join(chr(_FIRST_CODEPOINT + self._vocab.setdefault(word, len(self._vocab))) for word in normalize(text).split())

    def add(self, text: str, ident: str) -> None:
        encoded = self._encode(text)
        self._encoded.append(encoded)
        self._lengths.append(len(encoded))
        self._ids.append(ident)

    def nearest(self, text: str) -> tuple[float, str | None]:
        """(ROUGE-L F1 of the most similar text, its id); (0.0, None) when the index is empty."""
        query = self._encode(text)
        if not self._encoded or not query:
            return 0.0, None
        lcs = process.cdist([query], self._encoded, scorer=LCSseq.similarity, dtype=np.int32)[0]
        f1 = 2 * lcs / (len(query) + np.asarray(self._lengths, dtype=np.float64))
        best = int(np.argmax(f1))
        return float(f1[best]), self._ids[best]

    def __len__(self) -> int:
        return len(self._encoded)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts over normalised words."""
    return RougeIndex([b]).nearest(a)[0]


def verifier_shots(task: Task, seeds: list[Example], parent: Example, per_label: int) -> list[Example]:
    """Seed examples shown to the verifier: `per_label` of each label, interleaved so no label comes last every time,
    or the first `per_label` seeds for tasks without a fixed label set. Never the parent, which would give the answer away."""
    pool = [seed for seed in seeds if seed.id != parent.id]
    labels = getattr(task, "labels", None)
    if not labels:
        return pool[:per_label]
    by_label = {label: [seed for seed in pool if seed.label == label][:per_label] for label in labels}
    return [group[k] for k in range(per_label) for group in by_label.values() if k < len(group)]


def verifier_messages(task: Task, example: Example, shots: list[Example]) -> list[dict[str, str]]:
    """The student's own prompt with solved seed examples as earlier turns: the verifier answers blind, like a
    few-shot student, and never sees the label the teacher intended."""
    *system, question = task.student_messages(example)
    turns = []
    for shot in shots:
        turns += [task.student_messages(shot)[-1], {"role": "assistant", "content": task.target(shot)}]
    return [*system, *turns, question]
