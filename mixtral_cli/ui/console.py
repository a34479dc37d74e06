"""The two consoles: results on stdout, everything else (progress, notices, errors) on stderr.

Each is made on first use; ``use_consoles`` puts others in their place (a test's recording Console), and the
printers here take a ``console`` as rich's own classes do.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from typing import TYPE_CHECKING

from ..base.errors import OutputStreamError

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


def guard_stdout() -> None:
    """Make every write to the process's stdout that fails raise OutputStreamError, whoever writes it.

    typer, rich and the stream printer all write through ``sys.stdout``; wrapping it once here turns a
    closed pipe, a full device or an encoding that cannot hold the text into one error the CLI reports.
    stdout replaced by something else (a test's capture) is left alone.
    """
    stdout = sys.stdout
    if stdout is None:
        raise OutputStreamError(
            "stdout is closed, so there is nowhere to print to.", hint="Run it with stdout open (> /dev/null discards)."
        )
    if stdout is not sys.__stdout__ or not isinstance(stdout, io.TextIOWrapper):
        return
    stdout.flush()
    sys.stdout = _GuardedStdout(
        stdout.buffer,
        encoding=stdout.encoding,
        errors=stdout.errors,
        line_buffering=stdout.line_buffering,
        write_through=stdout.write_through,
    )


def silence_stdout() -> None:
    """After stdout failed: later writes, Python's own flush at exit included, go nowhere instead of failing again."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


class _GuardedStdout(io.TextIOWrapper):
    """The process's stdout, whose failures are OutputStreamErrors."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except UnicodeEncodeError as exc:
            unheld = exc.object[exc.start : exc.end]
            raise OutputStreamError(
                f"stdout's encoding ({self.encoding}) cannot hold the text to print ({unheld!r}).",
                hint="Set PYTHONIOENCODING=utf-8, or use a UTF-8 locale.",
            ) from exc
        except OSError as exc:
            raise _write_failure(exc) from exc

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise _write_failure(exc) from exc


def _write_failure(exc: OSError) -> OutputStreamError:
    if exc.errno == errno.EPIPE:
        return OutputStreamError("stdout's reader has gone.", closed_pipe=True)
    return OutputStreamError(f"Cannot write to stdout: {exc.strerror or exc}.", hint="Send the output elsewhere.")
