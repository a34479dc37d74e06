"""One-screen summaries of finished jobs, on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .console import stderr_console
from .progress import format_bytes

if TYPE_CHECKING:
    from ..engine.model import Engine, GenerationStats
    from ..quantize import QuantizeResult
    from ..summarize import SummaryPlan


def print_quantize_summary(result: QuantizeResult) -> None:
    from rich.markup import escape

    stderr_console().print(
        f"[green]Wrote[/] {escape(str(result.output))}\n"
        f"  {result.quant.name}: {format_bytes(result.source_bytes)} → {format_bytes(result.output_bytes)}, "
        f"{result.bits_per_weight:.2f} bits per weight, {result.n_params / 1e6:,.1f}M parameters, "
        f"{result.seconds:.1f} s"
    )


def completion_json(engine: Engine, text: str, stats: GenerationStats) -> str:
    """The `--json` object of `mixtral complete`."""
    import json

    return json.dumps(
        {
            "text": text,
            "model": engine.info.name,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "stop_reason": stats.stop_reason,
            "timings": {
                "load_s": round(engine.load_s, 6),
                "prompt_eval_s": round(stats.prompt_eval_s, 6),
                "decode_s": round(stats.decode_s, 6),
                "prompt_tokens_per_second": round(stats.prompt_tokens_per_second, 3),
                "decode_tokens_per_second": round(stats.decode_tokens_per_second, 3),
            },
        },
        ensure_ascii=False,
    )


def summary_json(text: str, plan: SummaryPlan, *, name: str | None) -> str:
    """The `--json` object of `mixtral summarize`."""
    import json

    data = {
        "summary": text,
        "chunks": plan.levels[0],
        "depth": plan.depth,
        "levels": plan.levels,
        "model_calls": plan.model_calls,
        "tokens_in": plan.tokens_in,
        "tokens_out": plan.tokens_out,
        "timings": {
            "prompt_eval_s": round(plan.prompt_eval_s, 6),
            "decode_s": round(plan.decode_s, 6),
            "total_s": round(plan.wall_s, 6),
        },
    }
    if name is not None:
        data = {"file": name, **data}
    return json.dumps(data, ensure_ascii=False)
