"""Text users give: files and stdin, as UTF-8 or refused with the offset of the first byte that is not.

Bytes that are not UTF-8 are never replaced: a prompt or a summary built on guessed characters would
look right and be wrong, so the tool says where the text stops being UTF-8 and what to do.

Every read has a size bound (``/dev/zero`` is a file too), and JSON a depth bound: Python's JSON reader
recurses once per level, so a file nested 100,000 deep would end in RecursionError.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO

from .errors import InputError, LimitError, MixtralError
from .units import format_bytes

STDIN = "stdin"
MAX_TEXT_BYTES = 64 * 2**20  # a prompt, a document to summarize: about 16 million tokens, past any context
MAX_JSON_DEPTH = 64  # far deeper than any request, message list or schema a person writes


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
        with open(path, "rb") as f:
            return read_bounded(str(path), f, limit=limit)
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


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
    return value


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
