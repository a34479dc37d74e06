"""The two consoles: results on stdout, everything else (progress, notices, errors) on stderr."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def stderr_console() -> Console:
    from rich.console import Console

    # Soft wrap: a message piped to a log stays one line, whatever the width.
    return Console(stderr=True, highlight=False, soft_wrap=True)


@functools.cache
def stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def print_error(message: str, hint: str | None = None) -> None:
    console = stderr_console()
    console.print(f"[bold red]Error:[/] {_escape(message)}")
    if hint:
        console.print(f"[dim]{_escape(hint)}[/]")


def print_notice(message: str) -> None:
    stderr_console().print(f"[yellow]Note:[/] {_escape(message)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
