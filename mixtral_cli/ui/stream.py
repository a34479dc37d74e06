"""Generated text on stdout as it comes: raw text on a pipe, flushed per chunk."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO


def stream_text(chunks: Iterable[str], *, out: TextIO | None = None) -> str:
    """Write each chunk as it arrives and return the whole text; a final newline ends the output.

    Ctrl-C keeps what was written and still ends the line, so the shell prompt starts clean.
    """
    out = out or sys.stdout
    parts: list[str] = []
    try:
        for chunk in chunks:
            out.write(chunk)
            out.flush()
            parts.append(chunk)
    finally:
        out.write("\n")
        out.flush()
    return "".join(parts)
