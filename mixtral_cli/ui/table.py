"""Lists of things: a table for people, tab-separated lines for scripts."""

from __future__ import annotations

from collections.abc import Sequence

from .console import stdout_console


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str) -> None:
    """A table on a terminal; one tab-separated line per row (no header) on a pipe."""
    console = stdout_console()
    if not console.is_terminal:
        for row in rows:
            console.file.write("\t".join(row) + "\n")
        return
    if not rows:
        console.print(empty)
        return
    from rich.table import Table

    table = Table(*columns, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    console.print(table)
