"""Text users give: files and stdin, as UTF-8 or refused with the offset of the first byte that is not.

Bytes that are not UTF-8 are never replaced: a prompt or a summary built on guessed characters would
look right and be wrong, so the tool says where the text stops being UTF-8 and what to do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import InputError

STDIN = "stdin"


def decode_text(name: str, data: bytes, *, offset: int = 0) -> str:
    """``data`` as UTF-8; ``offset`` is where ``data`` starts in what ``name`` names (for the message)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name} is not UTF-8 text (byte {offset + exc.start} is invalid).",
            hint="Convert it to UTF-8 first, e.g. with iconv -f LATIN1 -t UTF-8.",
        ) from exc


def read_text_file(path: Path) -> str:
    return decode_text(str(path), read_file_bytes(path))


def read_file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


def read_stdin() -> str:
    return decode_text(STDIN, sys.stdin.buffer.read())
