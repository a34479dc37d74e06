"""`mixtral devices`: what llama.cpp sees here and on the workers, and where a model's layers would go."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
    CpuMoeOption,
    CtxSizeOption,
    GpuLayersOption,
    ModelOption,
    NCpuMoeOption,
    RpcOption,
    TensorSplitOption,
    engine_options_from,
)


def devices(
    rpc: RpcOption = None,
    model: ModelOption = None,
    ctx_size: CtxSizeOption = None,
    n_gpu_layers: GpuLayersOption = None,
    cpu_moe: CpuMoeOption = False,
    n_cpu_moe: NCpuMoeOption = 0,
    tensor_split: TensorSplitOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """List the devices llama.cpp can use, with their memory; with -m, where a model would go.

    Devices come from ggml's device registry: the CPU, local GPUs, and with --rpc each worker's devices.
    With -m, the placement the engine would make with the same options (layers, experts, KV cache per
    device) and the memory each device needs against what it has free. A table on a terminal,
    tab-separated lines on a pipe.

    \b
    Examples:
        mixtral devices
        mixtral devices --rpc 192.168.1.20:50052 -m 8x22b-instruct:Q4_K_M
    """
    from ..engine.devices import backend_names, list_devices
    from ..engine.placement import model_needs
    from ..model_path import resolve_model
    from ..ui.devices import devices_json, print_devices, print_needs

    options = engine_options_from(
        ctx_size=ctx_size,
        n_gpu_layers=n_gpu_layers,
        cpu_moe=cpu_moe,
        n_cpu_moe=n_cpu_moe,
        rpc=rpc,
        tensor_split=tensor_split,
    )
    placement = needs = None
    if model is not None:
        placement, needs = model_needs(resolve_model(model).path, options)
    elif options.rpc:
        from ..engine.rpc import add_workers

        add_workers(options.rpc)
    shown = [d for d in list_devices() if d.endpoint is None or d.endpoint in options.rpc]
    if json_output:
        typer.echo(devices_json(backend_names(), shown, placement, needs))
    elif needs is not None:
        print_needs(needs)
    else:
        print_devices(shown, backend_names())
