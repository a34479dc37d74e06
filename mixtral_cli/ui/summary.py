"""One-screen summaries of finished jobs, on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .console import stderr_console
from .progress import format_bytes

if TYPE_CHECKING:
    from ..engine.model import Engine, GenerationStats
    from ..pull import PullPlan
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
                "layout": stats.layout,
            },
        },
        ensure_ascii=False,
    )


def summary_json(text: str, plan: SummaryPlan, *, name: str | None, layout: str) -> str:
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
            "layout": layout,
        },
    }
    if name is not None:
        data = {"file": name, **data}
    return json.dumps(data, ensure_ascii=False)


def print_pull_plan(plan: PullPlan) -> None:
    """What a pull will fetch and need, before anything downloads (stdout: it is the answer to --dry-run)."""
    from rich.markup import escape

    from .console import stdout_console

    console = stdout_console()
    what = "download as is" if plan.kind == "gguf" else f"convert to {plan.quant}"
    console.print(f"[bold]{escape(plan.name)}[/] from {escape(plan.remote.repo)} @ {plan.remote.commit[:12]}: {what}")
    for file in plan.files:
        console.print(f"  {escape(file.path)}  {format_bytes(file.size)}")
    console.print(
        f"  {format_bytes(plan.total_bytes)} in all, {format_bytes(plan.missing_bytes)} not in the Hub cache yet"
    )
    for folder, needed, free in plan.disk:
        console.print(f"  disk: {format_bytes(needed)} needed in {escape(str(folder))}, {format_bytes(free)} free")
    ram = format_bytes(plan.ram) if plan.ram else "unknown"
    gpu = format_bytes(plan.gpu) if plan.gpu else "no GPU found"
    console.print(f"  memory: {ram} RAM, {gpu}")
    for c in plan.candidates:
        moe = f", GPU with --cpu-moe {format_bytes(c.gpu_bytes_cpu_moe)}" if c.gpu_bytes_cpu_moe else ""
        kv = f" + {format_bytes(c.kv_bytes)} KV cache" if c.kv_bytes else ""
        console.print(f"  {c.quant:<7} {format_bytes(c.size)}{kv}{moe}")
    if plan.recommendation:
        console.print(f"  recommended for this machine: {plan.recommendation}")
