"""What the loop shows while it works: a banner per stage and a progress bar with ETA (rich), or nothing."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SilentUI:
    """For library use and tests."""

    @contextmanager
    def stage(self, title: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        yield lambda n: None

    def log(self, message: str) -> None:
        pass


class RichUI:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    @contextmanager
    def stage(self, title: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(escape(title), total=total)  # the title column renders markup
            yield lambda n: progress.advance(task_id, n)

    def log(self, message: str) -> None:
        self.console.print(message)
