"""Streaming Markdown in a terminal: finished blocks are printed once, only the last one stays live.

Redrawing the whole answer in a rich Live region flickers and, once it is taller than the screen,
leaves duplicated lines in the scrollback. Here a block (a paragraph, a list, a closed code fence) is
printed for good as soon as a blank line ends it, and the Live region only ever holds the block being
written.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def split_finished(text: str) -> tuple[str, str]:
    """(finished blocks, the block still being written): split at the last blank line outside a code fence."""
    in_fence = False
    split_at = 0
    position = 0
    for line in text.splitlines(keepends=True):
        position += len(line)
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and not line.strip() and position < len(text):
            split_at = position
    return text[:split_at], text[split_at:]


class MarkdownStream:
    """Feed chunks; the answer renders as Markdown as it grows."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live

        self._console = console
        self._text = ""
        self._live = Live(console=console, refresh_per_second=12, transient=True, vertical_overflow="crop")

    def __enter__(self) -> MarkdownStream:
        self._live.start()
        return self

    def feed(self, chunk: str) -> None:
        from rich.markdown import Markdown

        self._text += chunk
        finished, self._text = split_finished(self._text)
        if finished.strip():
            self._live.update("")
            self._console.print(Markdown(finished))
        self._live.update(Markdown(self._text))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        from rich.markdown import Markdown

        self._live.update("")
        self._live.stop()
        if self._text.strip():
            self._console.print(Markdown(self._text))
