"""The two consoles: results on stdout, everything else (progress, notices, errors) on stderr.

Each is made on first use; ``use_consoles`` puts others in their place (a test's recording Console), and the
printers here take a ``console`` as rich's own classes do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_consoles: dict[str, Console] = {}


def stderr_console() -> Console:
    if "stderr" not in _consoles:
        from rich.console import Console

        # Soft wrap: a message piped to a log stays one line, whatever the width.
        _consoles["stderr"] = Console(stderr=True, highlight=False, soft_wrap=True)
    return _consoles["stderr"]


def stdout_console() -> Console:
    if "stdout" not in _consoles:
        from rich.console import Console

        _consoles["stdout"] = Console(highlight=False)
    return _consoles["stdout"]


def use_consoles(*, stdout: Console | None = None, stderr: Console | None = None) -> None:
    """Print through these from now on; a console not given keeps the one in use."""
    for name, console in (("stdout", stdout), ("stderr", stderr)):
        if console is not None:
            _consoles[name] = console


def print_error(message: str, hint: str | None = None, *, console: Console | None = None) -> None:
    console = console or stderr_console()
    console.print(f"[bold red]Error:[/] {_escape(message)}")
    if hint:
        console.print(f"[dim]{_escape(hint)}[/]")


def print_notice(message: str, *, console: Console | None = None) -> None:
    (console or stderr_console()).print(f"[yellow]Note:[/] {_escape(message)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
