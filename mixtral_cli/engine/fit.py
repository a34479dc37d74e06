"""Fitting a model to this machine's GPUs, and refusing a placement that cannot fit before anything loads.

Most GPUs are smaller than a Mixtral, and its experts are most of its weights while only 2 of 8 run per
token. So when the user sets no placement option, the plan is: every layer and expert on the GPU(s) if they
fit; else every layer on the GPU with the experts of the fewest first layers in host memory (llama.cpp's
``--n-cpu-moe``); else fewer layers on the GPU, all their experts in host memory. What counts on each GPU:
its weights (less those too big for it, which llama.cpp keeps on the host: see ``probe``), the KV cache of
its layers at the context size that will be used, the compute buffer, and a margin for the driver and other
programs. Several devices: filled in turn, first with each one's share of the free memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..base.errors import OptionsError, PlacementError
from ..base.units import format_bytes
from ..gguf_format.header import GGUFInfo
from .devices import Device, DeviceKind
from .options import KV_CACHE_TYPES, EngineOptions, kv_bytes_per_token
from .placement import (
    Budget,
    DeviceNeed,
    Placement,
    describe_placement,
    local_gpus,
    placement_devices,
    placement_needs,
    plan_placement,
    tensor_device,
    tensor_layer,
)


@dataclass(frozen=True)
class Plan:
    """The placement a model gets, what it costs each device, and whether the engine chose it."""

    placement: Placement
    needs: tuple[DeviceNeed, ...]
    fitted: bool
    n_ctx: int
    flash_attn: bool  # what the context asks for with this placement (see ``flash_attention``)

    def describe(self) -> str:
        """One line: the placement, and what each local GPU holds against what it has."""
        gpus = [n for n in self.needs if n.device.kind in (DeviceKind.GPU, DeviceKind.IGPU)]
        held = "; ".join(f"{n.device.name} {format_bytes(n.needed)} of {format_bytes(n.available)}" for n in gpus)
        how = " (fitted)" if self.fitted else ""
        return describe_placement(self.placement).rstrip(".") + (f"; {held}{how}." if held else f"{how}.")

    def summary(self) -> dict[str, object]:
        """What ran, for --json: layers per device, experts in host memory, bytes per device."""
        return {
            "fitted": self.fitted,
            "n_gpu_layers": self.placement.n_gpu_layers if self.placement.devices else 0,
            "experts_in_host_memory": len(self.placement.experts_on_host),
            "devices": {n.device.name: {"layers": len(n.layers), "bytes": n.needed} for n in self.needs},
        }


def model_plan(path: Path, info: GGUFInfo, options: EngineOptions) -> Plan:
    """Plan ``info``'s model here: fitted when no placement option is set, else as asked if it fits."""
    from .probe import dry_run, every_layer_on

    meta = info.metadata
    n_layer = int(meta.get("llama.block_count") or 0)  # type: ignore[call-overload]
    n_ctx = options.ctx_size or int(meta.get("llama.context_length") or 0)  # type: ignore[call-overload]
    n_head = int(meta.get("llama.attention.head_count") or 1)  # type: ignore[call-overload]
    n_head_kv = int(meta.get("llama.attention.head_count_kv") or n_head)  # type: ignore[call-overload]
    n_embd_kv = int(meta.get("llama.embedding_length") or 0) // n_head * n_head_kv  # type: ignore[call-overload]
    kv_per_layer = kv_bytes_per_token(
        n_layer=1, n_embd_kv=n_embd_kv, type_k=options.cache_type_k, type_v=options.cache_type_v
    )
    devices = placement_devices(options)
    gpus = local_gpus(devices)
    alone = {
        d.name: dry_run(
            path,
            every_layer_on(d, n_layer),
            context_params=context_params(options, n_ctx, flash_attn=flash_attention(options, [d])),
        )
        for d in gpus
    }
    budget = Budget(
        kv_bytes_per_layer=kv_per_layer * n_ctx * options.sequences,
        compute_bytes={name: run.compute_bytes(name) for name, run in alone.items()},
        largest_tensor={
            name: limit for name, run in alone.items() if (limit := run.largest_tensor(info.tensor_bytes)) is not None
        },
        margin=options.gpu_margin,
    )
    plan = plan_for(options, devices, n_layer=n_layer, tensor_bytes=info.tensor_bytes, budget=budget, n_ctx=n_ctx)
    if gpus and plan.placement.n_gpu_layers:
        # The compute buffers were measured with every layer on each GPU alone; the plan's own can be larger
        # (experts on the host add copies): measure it, and plan again with the larger figures if it is.
        context = context_params(options, n_ctx, flash_attn=plan.flash_attn)
        placed = dry_run(path, plan.placement, context_params=context)
        compute = {d.name: max(placed.compute_bytes(d.name), budget.compute_bytes[d.name]) for d in gpus}
        if compute != budget.compute_bytes:
            budget = replace(budget, compute_bytes=compute)
            plan = plan_for(
                options, devices, n_layer=n_layer, tensor_bytes=info.tensor_bytes, budget=budget, n_ctx=n_ctx
            )
    _check_v_cache(options, plan.placement, plan.flash_attn)
    return plan


def plan_for(
    options: EngineOptions,
    devices: Sequence[Device],
    *,
    n_layer: int,
    tensor_bytes: dict[str, int],
    budget: Budget,
    n_ctx: int = 0,
) -> Plan:
    """The plan on ``devices`` for a model of ``tensor_bytes``: fitted, or as the options ask if that fits."""
    gpus = {d.name for d in local_gpus(devices)}

    def needs_of(placement: Placement) -> tuple[DeviceNeed, ...]:
        return tuple(placement_needs(placement, devices, tensor_bytes=tensor_bytes, budget=budget))

    def gpus_fit(needs: Sequence[DeviceNeed]) -> bool:
        return all(n.fits for n in needs if n.device.name in gpus)

    if not gpus or options.places_explicitly:
        placement = plan_placement(options, devices, n_layer=n_layer)
        needs = needs_of(placement)
        short = [n for n in needs if n.device.name in gpus and not n.fits]
        if short:
            fitted = fit_placement(options, devices, n_layer, tensor_bytes, budget, needs_of, gpus_fit)
            raise PlacementError(_too_big(short[0]), hint=_what_fits(fitted, n_layer))
        return Plan(placement, needs, False, n_ctx, flash_attention(options, _with_layers(placement)))
    placement = fit_placement(options, devices, n_layer, tensor_bytes, budget, needs_of, gpus_fit)
    return Plan(placement, needs_of(placement), True, n_ctx, flash_attention(options, _with_layers(placement)))


def _with_layers(placement: Placement) -> tuple[Device, ...]:
    return placement.devices if placement.n_gpu_layers else ()


def fit_placement(
    options: EngineOptions,
    devices: Sequence[Device],
    n_layer: int,
    tensor_bytes: dict[str, int],
    budget: Budget,
    needs_of: Callable[[Placement], tuple[DeviceNeed, ...]],
    gpus_fit: Callable[[Sequence[DeviceNeed]], bool],
) -> Placement:
    """All on the GPUs; else the experts of the fewest first layers on the host; else fewer layers on the GPUs."""
    base = replace(options, n_gpu_layers=None, cpu_moe=False, n_cpu_moe=0, tensor_split=None)
    total = n_layer + 1
    candidates = itertools.chain(
        (replace(base, n_gpu_layers=total, n_cpu_moe=k) for k in range(n_layer + 1)),
        (replace(base, n_gpu_layers=g, cpu_moe=True) for g in range(n_layer, 0, -1)),
    )
    gpus = local_gpus(devices)
    targets = [*(d for d in devices if d.kind is DeviceKind.RPC), *gpus]
    gpu_names = {d.name for d in gpus}
    rooms = [
        d.free - (budget.margin + budget.compute_bytes.get(d.name, 0) if d.name in gpu_names else 0) for d in targets
    ]
    for candidate in candidates:
        costs = _layer_costs(candidate, targets, gpus, n_layer, tensor_bytes, budget)
        for counts in _fills(costs, rooms, first=total - candidate.n_gpu_layers):  # type: ignore[operator]
            placement = plan_placement(replace(candidate, tensor_split=counts), devices, n_layer=n_layer)
            if gpus_fit(needs_of(placement)):
                return placement
    return plan_placement(replace(base, n_gpu_layers=0), devices, n_layer=n_layer)


def _layer_costs(
    options: EngineOptions,
    targets: Sequence[Device],
    gpus: Sequence[Device],
    n_layer: int,
    tensor_bytes: dict[str, int],
    budget: Budget,
) -> list[list[int]]:
    """What each layer (the output one last) costs each target under ``options``' experts rule."""
    gpu_names = {d.name for d in gpus}
    costs = []
    for target in targets:
        on_host = n_layer if options.cpu_moe else options.n_cpu_moe
        experts_on_host = frozenset(range(on_host)) if target.name in gpu_names else frozenset()
        layer_costs = [budget.kv_bytes_per_layer] * n_layer + [0]
        names = [target.name] * (n_layer + 1)
        for name, size in tensor_bytes.items():
            layer = tensor_layer(name, n_layer)
            if layer is not None and tensor_device(name, size, names, experts_on_host, budget) == target.name:
                layer_costs[layer] += size
        costs.append(layer_costs)
    return costs


def _fills(costs: list[list[int]], rooms: list[int], *, first: int) -> list[tuple[float, ...]]:
    """Layers ``first``.. cut into consecutive runs, one per target: as counts of layers, llama.cpp's split.

    First in proportion to each target's room, then filling each to its room in turn.
    """
    layers = range(first, len(costs[0]))
    total_room = sum(max(r, 0) for r in rooms)
    total_cost = sum(costs[0][i] for i in layers)
    scale = min(total_cost / total_room, 1.0) if total_room > 0 else 1.0
    fills = []
    for capacities in ([r * scale for r in rooms], rooms):
        counts, target, used = [0] * len(rooms), 0, 0
        for layer in layers:
            while target < len(rooms) - 1 and used + costs[target][layer] > capacities[target]:
                target, used = target + 1, 0
            used += costs[target][layer]
            counts[target] += 1
        fills.append(tuple(float(c) for c in counts))
    return fills


def _too_big(need: DeviceNeed) -> str:
    return (
        f"{need.device.name} would need {format_bytes(need.needed)} (weights {format_bytes(need.weight_bytes)}, "
        f"KV cache {format_bytes(need.kv_bytes)}, compute {format_bytes(need.compute_bytes)}) and has "
        f"{format_bytes(need.device.free)} free, less a {format_bytes(need.margin)} margin."
    )


def _what_fits(placement: Placement, n_layer: int) -> str:
    """The options that give ``placement``, the fitted one, as a user would type them."""
    if not placement.devices or placement.n_gpu_layers == 0:
        return "Nothing fits on the GPU: use --n-gpu-layers 0, or a smaller --ctx-size."
    if placement.n_gpu_layers <= n_layer:
        options = f"--cpu-moe --n-gpu-layers {placement.n_gpu_layers}"
    elif placement.experts_on_host:
        options = f"--n-cpu-moe {max(placement.experts_on_host) + 1}"
    else:
        options = "--n-gpu-layers -1"
    if len(placement.devices) > 1:
        options += " --tensor-split " + ",".join(f"{s:g}" for s in placement.tensor_split)
    return f"{options} fits (or leave the placement options out: the engine fits the model by itself)."


def context_params(options: EngineOptions, n_ctx: int, *, flash_attn: bool) -> dict[str, int]:
    """The llama_context_params fields a context of ``n_ctx`` tokens a sequence gets: in the dry run and the real
    one."""
    import llama_cpp

    return {
        "n_ctx": n_ctx * options.sequences,
        "n_seq_max": options.sequences,
        # Every sequence has a whole context of its own (llama.cpp's per-sequence streams). A unified pool would let
        # a sequence's cells fall out of position order once others free theirs, and attention sum in another
        # order: an answer would depend on what else ran. The price: llama.cpp evaluates together only sequences
        # with consecutive ids, which Engine.sequence_for keeps running side by side.
        "kv_unified": False,
        # A batch holds one decoding token of every sequence (engine/batch.py).
        "n_batch": max(options.batch_size, options.sequences),
        "n_ubatch": max(options.batch_size, options.sequences),
        "type_k": KV_CACHE_TYPES[options.cache_type_k][0],
        "type_v": KV_CACHE_TYPES[options.cache_type_v][0],
        "flash_attn_type": (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ),
    }


def flash_attention(options: EngineOptions, devices: Sequence[Device]) -> bool:
    """Whether a context with layers on ``devices`` asks for flash attention: as the options say, except on
    Mesa's software Vulkan device (llvmpipe; 22.3 crashes on the second decoded token with it)."""
    return options.flash_attn and not any(_software(d) for d in devices)


def _software(device: Device) -> bool:
    return "llvmpipe" in device.description


def _check_v_cache(options: EngineOptions, placement: Placement, flash_attn: bool) -> None:
    """llama.cpp needs flash attention for a quantized V cache: refuse the pair in one line."""
    if options.cache_type_v == "f16" or flash_attn:
        return
    software = next((d.name for d in placement.devices if _software(d)), None)
    reason = f"{software} is Mesa's llvmpipe, which runs without it" if options.flash_attn else "--no-flash-attn"
    raise OptionsError(
        f"--cache-type-v {options.cache_type_v} needs flash attention in llama.cpp, and it is off ({reason}).",
        hint="Use --cache-type-v f16, or allow flash attention.",
    )
