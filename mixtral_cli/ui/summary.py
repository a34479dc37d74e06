"""One-screen summaries of finished jobs, on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .console import stderr_console
from .progress import format_bytes

if TYPE_CHECKING:
    from ..quantize import QuantizeResult


def print_quantize_summary(result: QuantizeResult) -> None:
    from rich.markup import escape

    stderr_console().print(
        f"[green]Wrote[/] {escape(str(result.output))}\n"
        f"  {result.quant.name}: {format_bytes(result.source_bytes)} → {format_bytes(result.output_bytes)}, "
        f"{result.bits_per_weight:.2f} bits per weight, {result.n_params / 1e6:,.1f}M parameters, "
        f"{result.seconds:.1f} s"
    )
