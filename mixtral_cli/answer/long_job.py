"""Work too long to start unasked: past LONG_JOB_CALLS model calls or LONG_JOB_SECONDS on this machine, a command
(a summary in parts, a batch) says what it costs before the first call, and starts only when the user agrees."""

from __future__ import annotations

LONG_JOB_CALLS = 500
LONG_JOB_SECONDS = 15 * 60


def long_job(what: str, calls: int, seconds: float | None) -> str | None:
    """What ``what`` ("This summary", "This batch") costs, where that is too much to start unasked; else None.

    ``calls`` and ``seconds`` are the most it takes; ``seconds`` is None where this machine's rates for the
    model were never measured."""
    if calls <= LONG_JOB_CALLS and (seconds is None or seconds <= LONG_JOB_SECONDS):
        return None
    took = f", up to about {_duration(seconds)} on this machine" if seconds is not None else ""
    return f"{what} takes up to {calls:,} model calls{took}."


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
