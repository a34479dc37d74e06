"""`mixtral eval`'s report: a short table for people, one JSON object for scripts, one line for `mixtral pull`."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.units import format_bytes
from .console import stdout_console

if TYPE_CHECKING:
    from ..quality.run import EvalReport
    from ..quality.statistics import Estimate
    from ..sources.measured_loss import MeasuredLoss

_LAYERS_SHOWN = 5  # the most divergent; --json has them all


def eval_json(report: EvalReport) -> str:
    """The whole report: every statistic, every layer's routing, as fractions and bytes."""

    def plain(value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    data = dataclasses.asdict(report, dict_factory=lambda items: {key: plain(value) for key, value in items})
    if report.routing:
        worst = report.routing.most_divergent
        data["routing"] |= {
            "most_divergent_layer": worst.layer,
            "same_set": report.routing.same_set,
            "same_first": report.routing.same_first,
        }
    return json.dumps(data, indent=2)


def print_eval_report(report: EvalReport, *, recorded_as: str | None = None) -> None:
    """The numbers a user comparing quantizations reads, the routing's weakest layer first."""
    from rich.markup import escape

    console = stdout_console()
    say = functools.partial(console.print, soft_wrap=True)  # lines a script can grep, unwrapped on a pipe
    losses, routing = report.losses, report.routing
    lora = f" with {', '.join(report.model_loras)}" if report.model_loras else ""
    ref_lora = f" with {', '.join(report.reference_loras)}" if report.reference_loras else ""
    say(f"[bold]{escape(report.model.name)}[/]{escape(lora)} against {escape(report.reference.name)}{escape(ref_lora)}")
    done = f"{report.chunks} of {report.chunks_total}" if report.interrupted else str(report.chunks)
    scored = losses.positions if losses else 0
    say(
        f"  {escape(report.text)}: {report.tokens} tokens, {done} chunks of {report.n_ctx}, {scored} positions scored"
        + (" [yellow](interrupted: what was measured so far)[/]" if report.interrupted else "")
    )
    if routing:
        worst = routing.most_divergent
        say(
            f"  [bold]routing diverges most in layer {worst.layer}[/]: same experts {_pct(worst.same_set)}, "
            f"same first {_pct(worst.same_first)} (all layers: {_pct(routing.same_set)}, {_pct(routing.same_first)})"
        )
    elif report.routing_note:
        say(f"  {escape(report.routing_note)}")
    if losses:
        say(
            f"  PPL {_est(losses.ppl, 4)}, reference {_est(losses.ppl_reference, 4)}, ratio {_est(losses.ppl_ratio, 6)}"
        )
        say(
            f"  KLD mean {_est(losses.kld, 6)}, median {losses.kld_median:.6f}, 99% {losses.kld_p99:.6f}, "
            f"99.9% {losses.kld_p999:.6f}, max {losses.kld_max:.6f}"
        )
        say(
            f"  same top token {_est_pct(losses.same_top)}; Δp mean {_est_pct(losses.p_diff)}, "
            f"RMS {_est_pct(losses.p_diff_rms)}, 1% {100 * losses.p_diff_p1:.3f}%"
        )
    if routing:
        layers = sorted(routing.layers, key=lambda layer: (layer.same_set, layer.same_first, layer.layer))
        shown = layers[:_LAYERS_SHOWN]
        say(f"  routing, top-{routing.experts_used} experts, the {len(shown)} most divergent layers:")
        for layer in shown:
            say(f"    layer {layer.layer:>3}: same experts {_pct(layer.same_set)}, same first {_pct(layer.same_first)}")
    say(
        f"  memory: peak {format_bytes(report.peak_memory)} (both models, contexts, statistics); the statistics "
        f"held {format_bytes(report.held_bytes)} at most; disk: {format_bytes(report.disk_bytes)} written; "
        f"{report.seconds:.1f} s"
    )
    if recorded_as:
        say(f"  kept for `mixtral pull --list` as {escape(recorded_as)}'s measured loss")


def measured_note(loss: MeasuredLoss) -> str:
    """One line for `mixtral pull`: what `mixtral eval` measured of a quantization here."""
    routing = f", routing {_pct(loss.routing_same_set)}" if loss.routing_same_set is not None else ""
    return (
        f"measured here vs {loss.reference}: KLD {loss.kld_mean:.4f}, same top {_pct(loss.same_top)}, "
        f"PPL ×{loss.ppl_ratio:.4f}{routing}"
    )


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _est(estimate: Estimate, digits: int) -> str:
    return f"{estimate.value:.{digits}f} ± {estimate.error:.{digits}f}"


def _est_pct(estimate: Estimate) -> str:
    return f"{100 * estimate.value:.3f} ± {100 * estimate.error:.3f}%"
