"""The question before work too long to start unasked, the same for every command that may start such work."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer


def agree_to_long_job(
    what: str,
    calls: int,
    seconds: Callable[[], float | None],
    *,
    yes: bool,
    hint: str,
    progress,  # noqa: ANN001
) -> None:
    """Before the first model call: work of up to ``calls`` model calls and ``seconds()`` (None: not measured)
    that is too long to start unasked is said, and run only with --yes or when the user agrees on a terminal.

    ``seconds`` is asked only without --yes: estimating it reads every prompt. ``progress`` (a LiveProgress) is
    paused while the user is asked; ``hint`` says how to go on."""
    from ..answer.long_job import long_job
    from ..base.errors import MixtralError

    if yes:
        return
    cost = long_job(what, calls, seconds())
    if cost is None:
        return
    if not sys.stdin.isatty():
        raise MixtralError(f"{cost[:-1]}; not started without --yes, as stdin is not a terminal.", hint=hint)
    with progress.paused():
        if not typer.confirm(f"{cost} Go on?", default=False, err=True):
            raise MixtralError("Not started.", hint=hint)
