"""Task types: everything task-specific (prompts, targets, grading, teacher prompt and reply parsing) lives here.

The loop, students and teachers only see chat messages and strings. A task is built from the config and the
seed set (classification infers its labels from the seeds). Add a task type with a class that follows `Task`
and either a `TASKS` entry, an entry point in the group `llm2llm.tasks`, or `task.type: package.module:Class`.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from llm2llm.config import TaskConfig
from llm2llm.data import Example
from llm2llm.plugins import load_class

Messages = list[dict[str, str]]


def normalize(text: str) -> str:
    """Lowercase, unify separators, drop punctuation: 'Get_Weather.' and 'get weather' match (labels, copies, ROUGE-L words)."""
    text = re.sub(r"[_\-/]+", " ", text.lower())
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


_CONTRACTION = re.compile(r"['‘](d|s|ll|re|ve|m|t)\b", re.IGNORECASE)  # 'd, 's, 'll ... opening a text


def unquote(text: str) -> str:
    """A teacher's text without the quotes it put around the whole of it ('"Why is ...?"', "'I loved it.'"), keeping
    a title quoted inside it ('"when is "Heat" on"' -> 'when is "Heat" on'). Quotes that belong to the text stay: one
    at one end alone ('He said "no"'), two quotations ('"Paid" or "due"', "'yes' or 'no'"), a contraction opening
    the text (SST-2's "'d be lying if i said ...")."""
    text = text.strip()
    inner = text[1:-1]
    if len(text) > 1 and text[0] in "\"“" and text[-1] in "\"”":
        # A quote inside that opens ('"when is "Heat" on"') is a title within the quoted text; one that closes
        # ('"Paid" or "due"') ends a first quotation, so the outer quotes are not a pair.
        first = re.search("[\"“”]", inner)
        if first is None or first.start() == 0 or inner[first.start() - 1].isspace():
            return inner.strip()
    if (len(text) > 1 and text[0] in "'‘" and text[-1] in "'’" and not _CONTRACTION.match(text)
            and not re.search(r"\w['’]\s", inner)):  # "yes' or 'no" closes a quotation inside; "don't", "it 's" do not
        return inner.strip()
    return text


class Rejected(Exception):
    """A teacher reply that must not be trained on; `reason` is a short code counted in metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Task(Protocol):
    name: str
    max_new_tokens: int  # enough for the student to write a full answer
    verify_by_default: bool  # whether a blind verifier checks new examples unless quality.verify says otherwise

    def validate(self, examples: list[Example]) -> None:
        """Raise DataError (naming file:line) for an example this task cannot use."""

    def student_messages(self, example: Example) -> Messages:
        """The prompt, used for training and evaluation alike."""

    def target(self, example: Example) -> str:
        """What the student should answer; the loss is on these tokens only."""

    def is_correct(self, example: Example, output: str) -> bool:
        """Grade a raw student output."""

    def answer_choices(self, example: Example) -> list[str] | None:
        """The complete answers the student could give (labels, letters), which prediction can score instead of
        generating; None for open answers (math)."""

    def extract_answer(self, output: str) -> str | None:
        """The answer in a raw output, or None when there is none."""

    def teacher_messages(self, wrong: Example, context: list[Example], student_answer: str | None = None) -> Messages:
        """Ask for one new example that tests the same skill as `wrong` (a seed example); `student_answer` is what the
        student answered instead, when the prompt should name the confusion."""

    def parse_teacher_reply(self, reply: str, parent: Example) -> dict[str, Any]:
        """Fields of the new example ({"text", "label"} and, for multiple choice, "choices"), or raise Rejected."""


TASKS = {
    "classification": "llm2llm.tasks.classification:ClassificationTask",
    "multiple_choice": "llm2llm.tasks.multiple_choice:MultipleChoiceTask",
    "math": "llm2llm.tasks.math:MathTask",
}


def build_task(config: TaskConfig, seeds: list[Example]) -> Task:
    task = load_class(config.type, TASKS, "task.type", Task, "llm2llm.tasks")(config, seeds)
    task.validate(seeds)
    return task
