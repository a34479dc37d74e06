"""One-screen reports: a finished quantization, a pull's plan, what can be pulled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base.units import format_bytes
from .console import stderr_console
from .eval_report import measured_note

if TYPE_CHECKING:
    from ..convert.pipeline import QuantizeResult
    from ..sources.measured_loss import MeasuredLoss
    from ..sources.pull_plan import Available, PullPlan


def print_quantize_summary(result: QuantizeResult) -> None:
    from rich.markup import escape

    stderr_console().print(
        f"[green]Wrote[/] {escape(str(result.output))}\n"
        f"  {result.quant.name}: {format_bytes(result.source_bytes)} → {format_bytes(result.output_bytes)}, "
        f"{result.bits_per_weight:.2f} bits per weight, {result.n_params / 1e6:,.1f}M parameters, "
        f"{result.seconds:.1f} s"
    )


def print_pull_plan(plan: PullPlan) -> None:
    """What a pull will fetch and need, before anything downloads (stdout: it is the answer to --dry-run)."""
    from rich.markup import escape

    from .console import stdout_console

    console = stdout_console()
    if plan.pulled:
        console.print(f"[bold]{escape(plan.name)}[/] is already in the store: {escape(str(plan.pulled.path))}")
        return
    what = {
        "gguf": "download as is",
        "safetensors": f"download the checkpoint and convert to {plan.quant}",
        "adapter": f"download the LoRA adapter of {plan.base_model} and convert it to a {plan.quant} GGUF adapter",
    }[plan.kind]
    if plan.rewrite:
        what = "download, then rewrite the old one-tensor-per-expert layout into the store"
    console.print(f"[bold]{escape(plan.name)}[/] from {escape(plan.remote.repo)} @ {plan.remote.commit[:12]}")
    console.print(f"  {what}")
    for file in plan.files:
        console.print(f"  {escape(file.path)}  {format_bytes(file.size)}")
    console.print(
        f"  {format_bytes(plan.total_bytes)} in all, {format_bytes(plan.missing_bytes)} not in the Hub cache yet"
    )
    for folder, needed, free in plan.disk:
        console.print(f"  disk: {format_bytes(needed)} needed in {escape(str(folder))}, {format_bytes(free)} free")
    if plan.work_seconds:
        work = "rewriting" if plan.rewrite else "converting"
        console.print(f"  time: about {_duration(plan.work_seconds)} of {work} after the download")
    ram = format_bytes(plan.ram) if plan.ram else "unknown"
    gpu = format_bytes(plan.gpu) if plan.gpu else "no GPU found"
    workers = f", {format_bytes(plan.workers)} on the --rpc workers" if plan.workers else ""
    console.print(f"  memory: {ram} RAM, {gpu}{workers}")
    for c in plan.candidates:
        moe = f", GPU with --cpu-moe {format_bytes(c.gpu_bytes_cpu_moe)}" if c.gpu_bytes_cpu_moe else ""
        kv = f" + {format_bytes(c.kv_bytes)} KV cache" if c.kv_bytes else ""
        measured = f"; {measured_note(c.measured)}" if c.measured else ""
        console.print(f"  {c.quant:<7} {format_bytes(c.size)}{kv}{moe}{escape(measured)}", soft_wrap=True)
    if plan.recommendation:
        console.print(f"  recommended for this machine: {plan.recommendation}")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "a second"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def print_available(rows: list[Available]) -> None:
    """`mixtral pull --list`: what each catalog model can be pulled as."""
    from .table import print_rows

    print_rows(
        ("model", "quant", "size", "repo", "note"),
        [
            (r.model, r.quant, format_bytes(r.size) if r.size is not None else "?", r.repo, _note(r.note, r.measured))
            for r in rows
        ],
        empty="The catalog is empty.",
    )


def _note(note: str, measured: MeasuredLoss | None) -> str:
    return "; ".join(part for part in (note, measured_note(measured) if measured else "") if part)
