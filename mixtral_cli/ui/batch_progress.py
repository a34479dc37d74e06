"""The progress of a batch on stderr: requests done, tokens per second, time left."""

from __future__ import annotations

import time

from .console import stderr_console
from .progress import LiveProgress


class BatchProgress(LiveProgress):
    """A rich bar while stderr is a terminal; else a plain line every twentieth of the work, and at its end."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        super().__init__(
            TextColumn("Answering"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._console = stderr_console()
        self._task = None
        self._total = self._done = self._tokens = 0
        self._started = time.perf_counter()

    def start(self, total: int, already: int) -> None:
        self._total, self._started = total, time.perf_counter()
        if already:
            self._console.print(f"{already} requests answered by an earlier run are skipped.")
        self._task = self._progress.add_task("batch", total=total, rate="")
        if not self._live:
            self._console.print(f"Answering {total} requests.")

    def advance(self, tokens: int) -> None:
        self._done += 1
        self._tokens += tokens
        rate = f"{self._tokens / max(time.perf_counter() - self._started, 1e-9):.1f} tok/s"
        if self._task is not None:
            self._progress.update(self._task, completed=self._done, rate=rate)
        step = max(1, self._total // 20)
        if not self._live and (self._done % step == 0 or self._done == self._total):
            self._console.print(f"{self._done} of {self._total} requests, {rate}")
