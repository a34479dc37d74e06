"""Text users give: files and stdin, as UTF-8 or refused with the offset of the first byte that is not.

Bytes that are not UTF-8 are never replaced: a prompt or a summary built on guessed characters would
look right and be wrong, so the tool says where the text stops being UTF-8 and what to do.

Every read has a size bound (``/dev/zero`` is a file too), and JSON a depth bound: Python's JSON reader
recurses once per level, so a file nested 100,000 deep would end in RecursionError.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import InputError, LimitError, MixtralError
from .units import format_bytes

STDIN = "stdin"
MAX_TEXT_BYTES = 64 * 2**20  # a prompt, a document to summarize: about 16 million tokens, past any context
MAX_JSON_DEPTH = 64  # far deeper than any request, message list or schema a person writes
# Opening a named pipe waits for a writer; one that never comes would hold the command forever.
FIFO_WRITER_WAIT_S = 5.0


def decode_text(name: str, data: bytes, *, offset: int = 0) -> str:
    """``data`` as UTF-8; ``offset`` is where ``data`` starts in what ``name`` names (for the message)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name} is not UTF-8 text (byte {offset + exc.start} is invalid).",
            hint="Convert it to UTF-8 first, e.g. with iconv -f LATIN1 -t UTF-8.",
        ) from exc


def read_text_file(path: Path, *, limit: int = MAX_TEXT_BYTES) -> str:
    return decode_text(str(path), read_file_bytes(path, limit=limit))


def read_file_bytes(path: Path, *, limit: int = MAX_TEXT_BYTES) -> bytes:
    """At most ``limit`` bytes of ``path``; a longer file (or a device that never ends) is refused."""
    try:
        with opened_input(path) as f:
            return read_bounded(str(path), f, limit=limit)
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


@contextlib.contextmanager
def opened_input(path: Path) -> Iterator[BinaryIO]:
    """``path`` open for reading; a named pipe no writer opens within FIFO_WRITER_WAIT_S is refused (OSError
    from the open itself; InputError for the pipe)."""
    probe = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never waits, whatever the file is
    try:
        if stat.S_ISFIFO(os.fstat(probe).st_mode):
            fd = _open_with_a_writer(path, probe)
        else:
            fd, probe = probe, -1
            os.set_blocking(fd, True)
    finally:
        if probe >= 0:
            os.close(probe)
    with os.fdopen(fd, "rb") as f:
        yield f


def _open_with_a_writer(path: Path, reader: int) -> int:
    """A blocking read end of the FIFO ``path`` once a writer has opened it (``reader``, a non-blocking read
    end held meanwhile, lets a writer's own open go through)."""
    opened: list[int] = []
    waiting = threading.Thread(target=lambda: opened.append(os.open(path, os.O_RDONLY)), daemon=True)
    waiting.start()
    waiting.join(FIFO_WRITER_WAIT_S)
    if waiting.is_alive():
        # Open the write end ourselves, so that the waiting open returns and its thread ends.
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        waiting.join()
        for fd in opened:
            os.close(fd)
        raise InputError(
            f"{path} is a named pipe that no program opened for writing within {FIFO_WRITER_WAIT_S:g} s.",
            hint="Start the program that writes into it first, or give a regular file.",
        )
    return opened[0]


def read_stdin(*, limit: int = MAX_TEXT_BYTES) -> str:
    return decode_text(STDIN, read_stdin_bytes(limit=limit))


def read_stdin_bytes(*, limit: int = MAX_TEXT_BYTES) -> bytes:
    return read_bounded(STDIN, sys.stdin.buffer, limit=limit)


def read_bounded(name: str, stream: BinaryIO, *, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise LimitError(
            f"{name} holds more than {format_bytes(limit, digits=0)}, the most this reads.",
            hint="Give a smaller part of it.",
        )
    return data


def parse_json(text: str, name: str, *, error: type[MixtralError] = InputError) -> object:
    """``text`` as JSON, refused with ``error`` when it is not JSON or nests deeper than MAX_JSON_DEPTH."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{name} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).") from exc
    except ValueError as exc:  # a number past the 4300 digits int() reads
        raise error(f"{name} is not JSON this can read ({exc}).") from exc
    except RecursionError:
        too_deep = True
    else:
        too_deep = _depth(value) > MAX_JSON_DEPTH
    if too_deep:
        raise error(f"{name} nests deeper than {MAX_JSON_DEPTH} levels, the most this reads.")
    if not _all_text_is_unicode(value):
        raise error(
            f"{name} holds a lone surrogate escape (such as \\ud800), which is no Unicode character.",
            hint="Escape characters past U+FFFF as a pair (\\ud83d\\ude00), or write them as they are.",
        )
    return value


def _all_text_is_unicode(value: object) -> bool:
    """Whether every string and key in ``value`` can be UTF-8: JSON's \\ud800 escape decodes to a lone
    surrogate, which no encoder writes (a traceback wherever the text goes next)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _depth(value: object) -> int:
    """How deeply arrays and objects nest in ``value``, without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:
            pending.extend((child, depth + 1) for child in children)
    return deepest
