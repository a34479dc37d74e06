"""Progress bars on stderr for long jobs reported in stages (convert, then quantize, ...)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from ..base.units import format_bytes
from .console import stderr_console

if TYPE_CHECKING:
    from rich.progress import TaskID


class LiveProgress:
    """Rich progress on stderr while it is a terminal (a live display to start and stop); plain lines otherwise."""

    def __init__(self, *columns: object) -> None:
        from rich.progress import Progress

        self._progress = Progress(*columns, console=stderr_console())
        self._live = stderr_console().is_terminal

    def __enter__(self) -> LiveProgress:
        if self._live:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live:
            self._progress.stop()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The terminal to ourselves for the block (a question to the user), the bars hidden."""
        if self._live:
            self._progress.stop()
        try:
            yield
        finally:
            if self._live:
                self._progress.start()


class StageProgress(LiveProgress):
    """One bar per stage; implements ``mixtral_cli.base.progress.Progress``. Use as a context manager.

    When stderr is not a terminal (a log file, CI), each stage is one plain line instead of a live bar.
    """

    def __init__(self) -> None:
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

        super().__init__(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
        )
        self._task: TaskID | None = None
        self._unit = "bytes"

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and self._task is not None:
            self._finish_stage()
        super().__exit__(exc_type, exc, tb)

    def stage(self, description: str, total: int, *, unit: str = "bytes") -> None:
        if self._task is not None:
            self._finish_stage()
        self._unit = unit
        self._task = self._progress.add_task(description, total=total, amount=self._amount(0, total))
        if not self._live:
            stderr_console().print(f"{description}: {self._quantity(total)}")

    def advance(self, amount: int) -> None:
        if self._task is None:
            return
        task = self._progress.tasks[-1]
        completed = min(task.completed + amount, task.total or 0)
        self._progress.update(self._task, completed=completed, amount=self._amount(completed, task.total or 0))

    def advance_one(self) -> None:
        self.advance(1)

    def _finish_stage(self) -> None:
        total = self._progress.tasks[-1].total or 0
        self._progress.update(self._task, completed=total, amount=self._amount(total, total))

    def _amount(self, completed: float, total: float) -> str:
        done = format_bytes(completed) if self._unit == "bytes" else str(int(completed))
        return f"{done} of {self._quantity(total)}"

    def _quantity(self, amount: float) -> str:
        return format_bytes(amount) if self._unit == "bytes" else f"{int(amount)} {self._unit}"
