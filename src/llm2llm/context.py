"""What every stage of a run works with, in one object: the config, the run directory, the task, the models, the
reply cache, the seed and test sets and the progress display (as a torchtune recipe carries `self`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm2llm.config import Config
from llm2llm.data import Example
from llm2llm.runstore import RunStore
from llm2llm.students import Student
from llm2llm.tasks import Task
from llm2llm.teachers import ReplyCache, Teacher


@dataclass
class RunContext:
    config: Config
    store: RunStore
    task: Task
    student: Student
    teacher: Teacher
    verifier: Teacher  # the teacher itself unless quality.verifier names another model
    cache: ReplyCache
    seeds: list[Example]
    test: list[Example]
    ui: Any  # llm2llm.progress.RichUI or SilentUI

    @property
    def verify(self) -> bool:
        """Whether generated examples go to the blind verifier: quality.verify, or the task's default."""
        return self.task.verify_by_default if self.config.quality.verify is None else self.config.quality.verify
