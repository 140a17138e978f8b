"""Students: fine-tune from base weights on (prompt messages, target) pairs and predict greedily.

A student never sees a dataset or a task: the loop hands it chat messages and target strings made by the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from llm2llm.config import StudentConfig
from llm2llm.plugins import load_class

Messages = list[dict[str, str]]
Advance = Callable[[int], None]  # progress callback: n steps done


class Scores(list):
    """A student's scores of one prompt's candidate answers (log-probabilities, higher is likelier), with the index of
    the candidate it answers (`greedy`: what greedy decoding kept to the candidates writes; None: the highest)."""

    def __init__(self, values=(), greedy: int | None = None) -> None:
        super().__init__(values)
        self.greedy = greedy


def answer_index(scores: list[float]) -> int:
    """The candidate a student answers with, from its scores (a plain list of scores: the highest)."""
    greedy = getattr(scores, "greedy", None)
    return greedy if greedy is not None else max(range(len(scores)), key=scores.__getitem__)


class Student(Protocol):
    def train(self, pairs: list[tuple[Messages, str]], out_dir: Path, advance: Advance | None = None,
              init_from: Path | None = None) -> dict[str, Any]:
        """Fine-tune the base weights (or the student saved in init_from) on the pairs, save to out_dir, return training stats."""

    def predict(self, student_dir: Path, prompts: list[Messages], max_new_tokens: int, advance: Advance | None = None) -> list[str]:
        """Greedy completions of the prompts by the student saved in student_dir."""

    def train_steps(self, n_pairs: int) -> int:
        """Optimizer steps train() will take for n_pairs (for the progress bar)."""


STUDENTS = {"hf": "llm2llm.students.hf:HFStudent"}


def build_student(config: StudentConfig, seed: int) -> Student:
    return load_class(config.type, STUDENTS, "student.type", Student, "llm2llm.students")(config, seed)
