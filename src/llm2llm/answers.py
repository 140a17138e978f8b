"""A student's answers to a list of examples, the way the loop grades them: the known answers ranked by their
log-probability (eval.predict=score) or greedy replies; and, for confidence selection, the gold answer's
log-probability.

What to ask is plain data (`Questions`: prompts, candidate answers, targets), built from the task (`questions`), so
that a helper process that has no task (distributed.py: out-of-fold students trained side by side) asks exactly what
the loop would have asked; `write_predictions` grades the answers and writes them where the loop keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm2llm.context import RunContext
from llm2llm.data import Example, write_jsonl
from llm2llm.errors import ConfigError
from llm2llm.students import Advance, Messages, Student, answer_index
from llm2llm.tasks import Task


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


def questions(run: RunContext, examples: list[Example]) -> Questions:
    """What to ask the student about the examples: their known answers to score, or greedy replies (eval.predict)."""
    task, mode = run.task, run.config.eval.predict
    choices = [task.answer_choices(e) for e in examples]
    scorable = hasattr(run.student, "score") and all(choices)
    if mode == "score" and not scorable:
        raise ConfigError(f"eval.predict=score needs a task with a known answer set and a student that scores "
                          f"(task.type={run.config.task.type}, student.type={run.config.student.type}); use eval.predict=generate")
    return Questions(prompts=[task.student_messages(e) for e in examples], targets=[task.target(e) for e in examples],
                     choices=choices if scorable and mode != "generate" else None, max_new_tokens=task.max_new_tokens,
                     confidence="confidence" in run.config.select.by)


def write_predictions(task: Task, examples: list[Example], outputs: list[str], gold: list[float | None], path: Path) -> float:
    """Each example's id, output, extracted answer, label, whether it is correct and the gold answer's log-probability
    (where known), to path; the accuracy."""
    rows = [
        {"id": e.id, "output": output, "answer": task.extract_answer(output), "label": e.label, "correct": task.is_correct(e, output),
         **({"gold_logprob": round(logprob, 4)} if logprob is not None else {})}
        for e, output, logprob in zip(examples, outputs, gold)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, rows)
    return sum(row["correct"] for row in rows) / len(rows)
