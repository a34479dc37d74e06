"""Devices and placements, as tables, tab-separated lines and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..base.units import format_bytes
from .console import stderr_console, stdout_console
from .table import print_rows

if TYPE_CHECKING:
    from ..engine.devices import Device
    from ..engine.fit import Plan
    from ..engine.placement import DeviceNeed


def print_devices(devices: Sequence[Device], backends: Sequence[str]) -> None:
    rows = [(d.name, d.kind.value, d.description, format_bytes(d.free), format_bytes(d.total)) for d in devices]
    print_rows(("device", "kind", "description", "free", "total"), rows, empty="No devices.")
    if stdout_console().is_terminal:
        stdout_console().print(f"[dim]llama.cpp backends: {', '.join(backends)}[/]")


def print_needs(plan: Plan) -> None:
    rows = [
        (
            n.device.name,
            n.device.kind.value,
            _layers(n),
            str(n.experts_on_host),
            format_bytes(n.weight_bytes),
            format_bytes(n.kv_bytes),
            format_bytes(n.compute_bytes),
            format_bytes(n.needed),
            format_bytes(n.available),
            "yes" if n.fits else "NO",
        )
        for n in plan.needs
    ]
    print_rows(
        ("device", "kind", "layers", "experts in host", "weights", "KV cache", "compute", "needs", "usable", "fits"),
        rows,
        empty="No devices.",
    )
    if stdout_console().is_terminal:
        stdout_console().print(f"[dim]{plan.describe()}[/]", highlight=False)
    short = [n.device.name for n in plan.needs if not n.fits]
    if short:
        stderr_console().print(
            f"[yellow]Note:[/] {', '.join(short)} would not hold its share; change --tensor-split, "
            "--n-gpu-layers or --ctx-size, or add a worker."
        )


def _layers(need: DeviceNeed) -> str:
    if not need.layers:
        text = "-"
    elif len(need.layers) == need.layers[-1] - need.layers[0] + 1:
        text = f"{need.layers[0]}-{need.layers[-1]}" if len(need.layers) > 1 else str(need.layers[0])
    else:
        text = ",".join(map(str, need.layers))
    return text + (" +output" if need.output else "")


def devices_json(backends: Sequence[str], devices: Sequence[Device], plan: Plan | None) -> str:
    document: dict[str, object] = {
        "backends": list(backends),
        "devices": [
            {
                "name": d.name,
                "kind": d.kind.value,
                "description": d.description,
                "endpoint": d.endpoint,
                "free_bytes": d.free,
                "total_bytes": d.total,
            }
            for d in devices
        ],
        "placement": None,
    }
    if plan is not None:
        placement = plan.placement
        document["placement"] = {
            "fitted": plan.fitted,
            "n_ctx": plan.n_ctx,
            "n_gpu_layers": placement.n_gpu_layers,
            "tensor_split": list(placement.tensor_split),
            "layer_devices": placement.layer_devices(),
            "experts_on_host": sorted(placement.experts_on_host),
            "devices": [
                {
                    "name": n.device.name,
                    "layers": list(n.layers),
                    "output": n.output,
                    "experts_on_host": n.experts_on_host,
                    "weight_bytes": n.weight_bytes,
                    "kv_bytes": n.kv_bytes,
                    "compute_bytes": n.compute_bytes,
                    "needed_bytes": n.needed,
                    "free_bytes": n.device.free,
                    "margin_bytes": n.margin,
                    "fits": n.fits,
                }
                for n in plan.needs
            ],
        }
    return json.dumps(document, indent=2)


def print_worker_banner(endpoint: str, devices: Sequence[Device], cache_dir: str | None) -> None:
    """What a starting worker serves: its endpoint on stdout first, so scripts can read it."""
    console = stdout_console()
    console.print(f"Serving at {endpoint}", highlight=False)
    for device in devices:
        console.print(
            f"  {device.name}: {device.description} ({format_bytes(device.free)} free of {format_bytes(device.total)})"
        )
    console.print(f"  tensor cache: {cache_dir or 'off'}")
    console.file.flush()
    stderr_console().print(f"[dim]Use it with --rpc {endpoint}; Ctrl-C stops it.[/]")
