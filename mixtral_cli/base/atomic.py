"""Files appear under their final name only when complete; writers of one file take turns.

Temporary files are named for the process that writes them (``NAME.PID.TOKEN.partial``), so two
processes writing the same file never write into each other's; what a killed process left behind is
removed by the next writer, once that process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import OutputPathError

PARTIAL_SUFFIX = ".partial"
SCRATCH_SUFFIX = ".scratch"
LOCK_SUFFIX = ".lock"
# Write errors that name no file (a full disk) but can only come from the file being written.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def temporary_path(target: Path, suffix: str = PARTIAL_SUFFIX) -> Path:
    """A name beside ``target`` that no other process or thread uses."""
    return target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def leftovers(target: Path) -> list[Path]:
    """Temporary files of ``target`` whose writing process no longer runs."""
    suffixes = "|".join(map(re.escape, (PARTIAL_SUFFIX, SCRATCH_SUFFIX)))
    pattern = re.compile(rf"{re.escape(target.name)}\.(\d+)\.[0-9a-f]+({suffixes})$")
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
    except (ProcessLookupError, OverflowError):  # no such process, or no process id at all
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def link_target(target: Path) -> Path:
    """What writing ``target`` writes: the file a symbolic link points to (however many links deep), so
    that the link stays a link; ``target`` itself otherwise."""
    return Path(os.path.realpath(target)) if target.is_symlink() else target


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``target`` on success, delete it on any failure.

    KeyboardInterrupt counts as a failure, so Ctrl-C leaves nothing that looks finished. A ``target``
    that is a symbolic link stays one: the file it points to is written.
    """
    target = link_target(target)
    remove_leftovers(target)
    partial = temporary_path(target)
    try:
        yield partial
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if exc.filename == str(partial) or (exc.filename is None and exc.errno in _DISK_ERRNOS):
            raise OutputPathError(target, exc.strerror or str(exc)) from exc
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _make_folder(target: Path) -> None:
    """Create the folder ``target`` goes in, or say why it cannot be (a file in the way, permissions...)."""
    existing = next(folder for folder in (target.parent, *target.parent.parents) if folder.exists())
    if not existing.is_dir():
        raise OutputPathError(target, f"{existing} is not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(target, exc.strerror or str(exc)) from exc


def check_writable(target: Path) -> None:
    """Create ``target``'s folder and write a file there now, so a path that cannot be written is named
    with the OS's reason before any work starts (not later, as a misleading "0 bytes free")."""
    target = link_target(target)
    _make_folder(target)
    try:
        probe = temporary_path(target)
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(target, exc.strerror or str(exc)) from exc


def write_state(target: Path, text: str, *, what: str, on_notice: Callable[[str], None] | None) -> bool:
    """Write a file of state that saves time later but that no work needs (measured rates, checked
    hashes): where it cannot be written (a read-only home, a full disk), ``on_notice`` says so in one
    line and the work goes on. Returns whether it was written."""
    try:
        _make_folder(target)
        with atomic_path(target) as partial:
            partial.write_text(text, encoding="utf-8")
        return True
    except OSError as exc:
        if on_notice:
            reason = exc.reason if isinstance(exc, OutputPathError) else exc.strerror or str(exc)
            on_notice(f"{what} are not kept: cannot write {target}: {reason}.")
        return False


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a new temporary folder beside ``target`` to fill; on success its files move into ``target``
    (made if need be), on any failure it is deleted: a folder written half-way is never left behind."""
    import shutil

    _make_folder(target)
    building = temporary_path(target)
    try:
        building.mkdir()
    except OSError as exc:
        raise OutputPathError(target, exc.strerror or str(exc)) from exc
    try:
        yield building
        _move_into(building, target)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _move_into(building: Path, target: Path) -> None:
    try:
        if not target.exists():
            os.replace(building, target)
            return
        for child in building.iterdir():
            os.replace(child, target / child.name)
    except OSError as exc:
        raise OutputPathError(target, exc.strerror or str(exc)) from exc


@contextlib.contextmanager
def scratch_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` for an intermediate file, deleted whatever happens."""
    scratch = temporary_path(target, SCRATCH_SUFFIX)
    try:
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(target: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` (a ``NAME.lock`` file beside it, removed on release) for the block.

    Other processes, and other threads of this one, wait at the same call until it is released; with
    ``wait`` False they get BlockingIOError instead.
    """
    import fcntl

    _make_folder(target)
    lock_path = target.with_name(target.name + LOCK_SUFFIX)
    while True:
        try:
            # Each call opens its own descriptor: flock then also keeps threads of one process apart.
            lock = open(lock_path, "a")
        except OSError as exc:
            raise OutputPathError(lock_path, exc.strerror or str(exc)) from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            lock.close()
            raise
        if _still_named(lock, lock_path):
            break
        # The holder removed the file as it released it: this lock is on a file no one else will open.
        lock.close()
    with lock:
        try:
            yield
        finally:
            # Removed while still held, so that whoever opened it meanwhile sees it is gone and opens anew.
            with contextlib.suppress(OSError):
                lock_path.unlink()
            fcntl.flock(lock, fcntl.LOCK_UN)


def _still_named(file: IO[str], path: Path) -> bool:
    try:
        named = path.stat()
    except OSError:
        return False
    opened = os.fstat(file.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
