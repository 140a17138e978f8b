"""A student's answers to a list of examples, the way the loop grades them: the known answers ranked by their
log-probability (eval.predict=score) or greedy replies; and, for confidence selection, the gold answer's
log-probability.

What to ask is plain data (`Questions`: prompts, candidate answers, targets), built from the task by the loop, so that
a helper process that has no task (distributed.py: out-of-fold students trained side by side) asks exactly what the
loop would have asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm2llm.students import Advance, Messages, Student, answer_index


@dataclass
class Questions:
    prompts: list[Messages]
    targets: list[str]  # each example's gold answer, as the task trains on it
    choices: list[list[str]] | None  # each prompt's known answers to score; None: greedy decoding
    max_new_tokens: int  # greedy decoding: the longest reply
    confidence: bool  # also the gold answer's log-probability (per token) where scoring did not give it


def ask(student: Student, student_dir: Path, questions: Questions, advance: Advance | None = None
        ) -> tuple[list[str], list[float | None]]:
    """The student's output for each prompt, and the log-probability of its gold answer (None where not known)."""
    prompts, targets = questions.prompts, questions.targets
    gold: list[float | None] = [None] * len(prompts)
    if questions.choices is not None:
        scores = student.score(student_dir, prompts, questions.choices, advance)
        outputs = [options[answer_index(row)] for options, row in zip(questions.choices, scores)]
        gold = [row[options.index(target)] if target in options else None
                for target, options, row in zip(targets, questions.choices, scores)]
    else:
        outputs = student.predict(student_dir, prompts, questions.max_new_tokens, advance)
    if questions.confidence and gold[0] is None and hasattr(student, "score"):
        # An open answer (math): the mean log-probability of the target's tokens, teacher-forced.
        gold = [row[0] for row in student.score(student_dir, prompts, [[target] for target in targets], per_token=True)]
    return outputs, gold
