"""Files appear under their final name only when complete; writers of one file take turns.

Temporary files are named for the process that writes them (``NAME.PID.TOKEN.partial``), so two
processes writing the same file never write into each other's; what a killed process left behind is
removed by the next writer, once that process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
SCRATCH_SUFFIX = ".scratch"
LOCK_SUFFIX = ".lock"


def temporary_path(target: Path, suffix: str = PARTIAL_SUFFIX) -> Path:
    """A name beside ``target`` that no other process or thread uses."""
    return target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def leftovers(target: Path) -> list[Path]:
    """Temporary files of ``target`` whose writing process no longer runs."""
    pattern = re.compile(rf"{re.escape(target.name)}\.(\d+)\.[0-9a-f]+({PARTIAL_SUFFIX}|{SCRATCH_SUFFIX})$")
    found = []
    with contextlib.suppress(OSError):
        for path in target.parent.iterdir():
            match = pattern.match(path.name)
            if match and not _process_runs(int(match[1])):
                found.append(path)
    return found


def remove_leftovers(target: Path) -> int:
    """Delete what killed writers of ``target`` left; returns the bytes freed."""
    freed = 0
    for path in leftovers(target):
        with contextlib.suppress(OSError):
            freed += path.stat().st_size
            path.unlink()
    return freed


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``target`` on success, delete it on any failure.

    KeyboardInterrupt counts as a failure, so Ctrl-C leaves nothing that looks finished.
    """
    remove_leftovers(target)
    partial = temporary_path(target)
    try:
        yield partial
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def scratch_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` for an intermediate file, deleted whatever happens."""
    scratch = temporary_path(target, SCRATCH_SUFFIX)
    try:
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` (a ``NAME.lock`` file beside it) for the block.

    Other processes, and other threads of this one, wait at the same call until it is released.
    """
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    # Each call opens its own descriptor: flock then also keeps threads of one process apart.
    with open(target.with_name(target.name + LOCK_SUFFIX), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
