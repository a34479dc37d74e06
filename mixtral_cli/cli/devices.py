"""`mixtral devices`: what llama.cpp sees here and on the workers, and where a model's layers would go."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
    DEFAULT_GPU_MARGIN_MIB,
    CacheTypeKOption,
    CacheTypeVOption,
    CpuMoeOption,
    CtxSizeOption,
    GpuLayersOption,
    GpuMarginOption,
    KVCacheType,
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
    gpu_margin: GpuMarginOption = DEFAULT_GPU_MARGIN_MIB,
    cache_type_k: CacheTypeKOption = KVCacheType.F16,
    cache_type_v: CacheTypeVOption = KVCacheType.F16,
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
    from ..engine.loading import plan_model
    from ..sources.model_path import resolve_model
    from ..ui.device_table import devices_json, print_devices, print_needs

    options = engine_options_from(
        ctx_size=ctx_size,
        n_gpu_layers=n_gpu_layers,
        cpu_moe=cpu_moe,
        n_cpu_moe=n_cpu_moe,
        rpc=rpc,
        tensor_split=tensor_split,
        gpu_margin=gpu_margin,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
    )
    plan = None
    if model is not None:
        plan = plan_model(resolve_model(model).path, options)
    elif options.rpc:
        from ..engine.rpc import add_workers

        add_workers(options.rpc)
    shown = [d for d in list_devices() if d.endpoint is None or d.endpoint in options.rpc]
    if json_output:
        typer.echo(devices_json(backend_names(), shown, plan))
    elif plan is not None:
        print_needs(plan)
    else:
        print_devices(shown, backend_names())
