"""Files appear under their final name only when complete."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def partial_path(target: Path) -> Path:
    """The temporary name beside ``target``; fixed, so a killed run's leftovers are replaced next time."""
    return target.with_name(target.name + PARTIAL_SUFFIX)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``target`` on success, delete it on any failure.

    KeyboardInterrupt counts as a failure, so Ctrl-C leaves nothing that looks finished.
    """
    partial = partial_path(target)
    partial.unlink(missing_ok=True)
    try:
        yield partial
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def scratch_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` for an intermediate file, deleted whatever happens."""
    scratch = target.with_name(target.name + ".scratch")
    scratch.unlink(missing_ok=True)
    try:
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)
