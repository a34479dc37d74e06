"""Sizes in bytes as people read them: one spelling for every message, table and progress bar."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB")


def format_bytes(n_bytes: float, *, digits: int = 1) -> str:
    """``n_bytes`` in the largest binary unit (up to GiB) it is at least one of, e.g. ``1.5 GiB``; bytes are
    whole. ``digits=0`` suits limits that are whole units (``64 MiB``)."""
    power = 0
    while abs(n_bytes) >= 1024 and power < len(_UNITS) - 1:
        n_bytes /= 1024
        power += 1
    return f"{n_bytes:.0f} B" if power == 0 else f"{n_bytes:.{digits}f} {_UNITS[power]}"
