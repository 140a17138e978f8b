"""Multiple choice (CaseHOLD): a context, lettered choices, the student answers with the letter.

Labels are the 0-based index of the correct choice, stored as a string ("2"); the student sees letters (A-E).
"""

from __future__ import annotations

import re
import string
from typing import Any

from llm2llm.config import TaskConfig
from llm2llm.data import Example, column_key
from llm2llm.errors import DataError
from llm2llm.tasks import Messages, Rejected, normalize

LETTERS = string.ascii_uppercase


class MultipleChoiceTask:
    name = "multiple_choice"
    max_new_tokens = 8
    verify_by_default = True

    def __init__(self, config: TaskConfig, seeds: list[Example]) -> None:
        self.description = config.description.strip()
        self.n_choices = len(seeds[0].choices or []) if seeds else 0
        self.letters = LETTERS[: self.n_choices]

    # ── student side ────────────────────────────────────────────────────────────────────────────
    def validate(self, examples: list[Example]) -> None:
        for example in examples:
            where = example.source or example.id
            if not example.choices:
                raise DataError(f"{where}: no choices (set {column_key(example.origin, 'choices')} to the column holding the list)")
            if len(example.choices) != self.n_choices:
                raise DataError(f"{where}: {len(example.choices)} choices, but the first seed has {self.n_choices}")
            if not example.label.isdigit() or int(example.label) >= self.n_choices:
                raise DataError(f"{where}: label {example.label!r} is not a choice index 0..{self.n_choices - 1}")

    def _render(self, example: Example) -> str:
        lines = "\n".join(f"({letter}) {choice}" for letter, choice in zip(self.letters, example.choices or []))
        return f"{example.text}\n\n{lines}"

    def student_messages(self, example: Example) -> Messages:
        system = f"{self.description} Answer with the letter of the correct choice ({', '.join(self.letters)})."
        return [{"role": "system", "content": system}, {"role": "user", "content": self._render(example)}]

    def target(self, example: Example) -> str:
        return self.letters[int(example.label)]

    def extract_answer(self, output: str) -> str | None:
        """The chosen index as a string: "(B)", "B.", "b", "The answer is B", "Answer: (B) holding that..." all give "1"."""
        text = output.strip()
        letters, lower = self.letters, self.letters.lower()
        patterns = [
            rf"^\(?([{letters}])\)?(?=[\s.):,]|$)",  # "B", "(B)", "B." at the start
            rf"(?i:answer|choice|option)(?:\s+is)?\s*[:\-]?\s*\(?([{letters}])\)?(?!\w)",  # "The answer is (B)"
            # lowercase only when nothing follows: "the answer is a holding that..." is English, not choice A
            rf"(?i:answer|choice|option)(?:\s+is)?\s*[:\-]?\s*\(?([{lower}])\)?[.)]?\s*$",
            rf"^\(?([{lower}])\)?[.)]?\s*$",  # a lone "b"
        ]
        for pattern in patterns:
            match = re.search(pattern, text)
            if match:
                return str(self.letters.index(match.group(1).upper()))
        found = set(re.findall(rf"\(([{letters}])\)", text))
        return str(self.letters.index(found.pop())) if len(found) == 1 else None

    def answer_choices(self, example: Example) -> list[str]:
        return list(self.letters[: len(example.choices or [])])

    def is_correct(self, example: Example, output: str) -> bool:
        return self.extract_answer(output) == example.label

    # ── teacher side ────────────────────────────────────────────────────────────────────────────
    def teacher_messages(self, wrong: Example, context: list[Example], student_answer: str | None = None) -> Messages:
        n, last = self.n_choices, self.letters[-1]
        system = (
            "You write training data for a multiple-choice reading task.\n"
            f"Task: {self.description}\n"
            f"A student model chose the wrong answer on the example below. Write ONE new example that tests the "
            f"same kind of reasoning: a different context (other facts, names and wording, not a paraphrase), "
            f"exactly {n} distinct candidate answers of which exactly one is correct, and plausible wrong ones.\n"
            f"Reply in exactly this format and nothing else:\nContext: <the new context>\n"
            + "".join(f"({letter}) <choice>\n" for letter in self.letters)
            + f"Answer: <the letter A-{last} of the correct choice>"
        )
        user = f"Example the student got wrong:\nContext: {self._render(wrong)}\nAnswer: {self.target(wrong)}\n"
        if student_answer is not None and student_answer != wrong.label and student_answer.isdigit() and int(student_answer) < n:
            user += f"The student chose ({self.letters[int(student_answer)]}). Make a wrong choice just as tempting.\n"
        user += "\nWrite one new example."
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_teacher_reply(self, reply: str, parent: Example) -> dict[str, Any]:
        clean = reply.replace("**", "")
        context_marker = re.search(r"(?im)^[ \t]*context[ \t]*:[ \t]*", clean)
        first_choice = re.search(r"(?m)^[ \t]*\(A\)", clean)
        if context_marker is None or first_choice is None or first_choice.start() < context_marker.end():
            raise Rejected("unparsable", "no 'Context:' followed by lettered choices")
        text = clean[context_marker.end() : first_choice.start()].strip()
        choices = re.findall(r"(?m)^\s*\(([A-Z])\)[ \t]*(.*)$", clean)
        answer = re.search(r"(?im)^\s*answer\s*:\s*\(?([A-Za-z])\)?", clean)
        if not text:
            raise Rejected("empty_text")
        if [letter for letter, _ in choices] != list(self.letters):
            raise Rejected("wrong_choice_count", f"{len(choices)} choices, expected {self.n_choices}")
        options = [choice.strip() for _, choice in choices]
        if any(not option for option in options):
            raise Rejected("empty_choice")
        if len({normalize(option) for option in options}) != len(options):
            raise Rejected("duplicate_choices")
        if answer is None or answer.group(1).upper() not in self.letters:
            raise Rejected("invalid_answer", answer.group(1) if answer else "no 'Answer:' line")
        label = self.letters.index(answer.group(1).upper())
        if normalize(text) == normalize(parent.text):
            raise Rejected("copy_of_seed")
        # A new example whose correct answer is the seed's verbatim tests recall of the seed, not the skill.
        if normalize(options[label]) == normalize(parent.choices[int(parent.label)]):
            raise Rejected("copied_correct_choice")
        return {"text": text, "label": str(label), "choices": options}
