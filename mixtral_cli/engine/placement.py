"""Where tensors live: layers on local GPUs, on workers or on the CPU, and MoE experts kept in host memory.

llama.cpp places whole layers: the first ``n_layer + 1 - n_gpu_layers`` stay on the CPU, the rest are cut
into consecutive runs, one per offload device, in proportion to ``tensor_split`` (the output layer counts as
one more layer; the input embedding always stays on the CPU). ``Placement.layer_devices`` repeats that rule
so the plan shown is the placement made.

Experts are most of a Mixtral (8x7B: 45 of 47B parameters) but only 2 of 8 run per token, so keeping them in
host memory and the rest on a small GPU fits a big model at a modest cost in speed (``--cpu-moe``,
``--n-cpu-moe``). That applies to layers on local GPUs only: a worker is there to hold experts too, and
pulling a remote layer's experts back to this host would send activations over the network twice per layer.
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..base.errors import PlacementError
from .devices import Device, DeviceKind, ggml, list_devices
from .options import EngineOptions

EXPERT_TENSORS = r"\.ffn_(up|down|gate)_exps"


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@dataclass(frozen=True)
class Placement:
    devices: tuple[Device, ...]  # where layers may go, in llama.cpp's order: workers first, then local GPUs
    n_gpu_layers: int  # layers (the output layer counting as one) on those devices; the rest on the CPU
    tensor_split: tuple[float, ...]  # each device's share of those layers
    n_layer: int
    experts_on_host: frozenset[int]  # layers on a local GPU whose experts stay in host memory
    notice: str | None = None  # one line for the user, when an option cannot take effect

    def layer_devices(self) -> list[str]:
        """The device of each layer, 0 to n_layer - 1, then the output layer."""
        total = self.n_layer + 1
        on_devices = min(self.n_gpu_layers, total) if self.devices else 0
        first = total - on_devices
        sums = list(itertools.accumulate(_f32(s) for s in self.tensor_split))
        bounds = [_f32(s / sums[-1]) for s in sums] if sums else []
        names = []
        for layer in range(total):
            if layer < first:
                names.append("CPU")
                continue
            index = bisect.bisect_right(bounds, _f32((layer - first) / on_devices))
            names.append(self.devices[min(index, len(self.devices) - 1)].name)
        return names

    @property
    def expert_patterns(self) -> tuple[str, ...]:
        if not self.experts_on_host:
            return ()
        layers = "|".join(str(i) for i in sorted(self.experts_on_host))
        return (rf"blk\.({layers}){EXPERT_TENSORS}",)


def _f32(value: float) -> float:
    """``value`` rounded as llama.cpp's float arithmetic rounds it, so that boundaries fall the same way."""
    return struct.unpack("f", struct.pack("f", value))[0]


def plan_placement(options: EngineOptions, devices: Sequence[Device], *, n_layer: int) -> Placement:
    """Place ``n_layer`` layers on ``devices`` (the registry's, workers included) as the options ask."""
    gpus = local_gpus(devices)
    workers = [d for d in devices if d.kind is DeviceKind.RPC]
    targets = (*workers, *gpus)
    asked_gpu = options.cpu_moe or options.n_cpu_moe > 0 or (options.n_gpu_layers or 0) > 0
    if not targets:
        notice = "No GPU or worker to place layers on: GPU placement options have no effect." if asked_gpu else None
        return Placement((), 0, (), n_layer, frozenset(), notice)

    if options.tensor_split:
        if len(options.tensor_split) != len(targets) or not any(options.tensor_split):
            raise PlacementError(
                f"--tensor-split has {len(options.tensor_split)} values for {len(targets)} devices "
                f"({', '.join(d.name for d in targets)}).",
                hint="Give one share per device, in the order `mixtral devices` lists them.",
            )
        split = tuple(options.tensor_split)
    else:
        split = tuple(float(d.free) for d in targets)

    if options.n_gpu_layers is not None:
        n_gpu_layers = options.n_gpu_layers if options.n_gpu_layers >= 0 else n_layer + 1
    elif gpus:
        n_gpu_layers = n_layer + 1
    else:
        # Workers only: this machine's memory takes its share of the layers too.
        cpu = next((d.free for d in devices if d.kind is DeviceKind.CPU), 0)
        offloaded = sum(d.free for d in workers)
        n_gpu_layers = round((n_layer + 1) * offloaded / (offloaded + cpu))
    placement = Placement(targets, n_gpu_layers, split, n_layer, frozenset())

    local_names = {d.name for d in gpus}
    on_local_gpu = [i for i, name in enumerate(placement.layer_devices()[:n_layer]) if name in local_names]
    if options.cpu_moe:
        host = frozenset(on_local_gpu)
    else:
        host = frozenset(i for i in on_local_gpu if i < options.n_cpu_moe)
    notice = None
    if (options.cpu_moe or options.n_cpu_moe) and not gpus:
        notice = "--cpu-moe and --n-cpu-moe apply to layers on a local GPU, and there is none: they have no effect."
    return Placement(targets, n_gpu_layers, split, n_layer, host, notice)


def placement_devices(options: EngineOptions) -> list[Device]:
    """The devices a model may use here: local ones, and the workers ``options.rpc`` names."""
    if options.rpc:
        from .rpc import add_workers

        workers = {d.handle for d in add_workers(options.rpc)}
        return [d for d in list_devices() if d.kind is not DeviceKind.RPC or d.handle in workers]
    return [d for d in list_devices() if d.kind is not DeviceKind.RPC]


def local_gpus(devices: Sequence[Device]) -> list[Device]:
    """The GPUs layers go to on this machine: discrete ones, else integrated ones."""
    return [d for d in devices if d.kind is DeviceKind.GPU] or [d for d in devices if d.kind is DeviceKind.IGPU]


def describe_placement(placement: Placement) -> str:
    """One line: which layers went where, e.g. ``layers 0-3 on CPU, 4-7 on RPC0, output on RPC0``."""
    names = placement.layer_devices()
    runs = []
    for device, group in itertools.groupby(enumerate(names[:-1]), key=lambda item: item[1]):
        layers = [i for i, _ in group]
        span = f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
        runs.append(f"{span} on {device}")
    host = len(placement.experts_on_host)
    experts = f"; experts of {host} GPU layers in host memory" if host else ""
    return f"Placement: layers {', '.join(runs)}, output on {names[-1]}{experts}."


class LoadParams:
    """The C arrays a placement puts into ``llama_model_params``; keep this alive while the model loads."""

    def __init__(self, placement: Placement) -> None:
        self._devices = (ctypes.c_void_p * (len(placement.devices) + 1))(*(d.handle for d in placement.devices))
        self._split = (ctypes.c_float * 128)(*placement.tensor_split)  # llama.cpp reads one per device
        self._patterns = [p.encode() for p in placement.expert_patterns]
        self._overrides = (_BuftOverride * (len(self._patterns) + 1))()
        if self._patterns:
            lib = ggml()
            cpu = lib.ggml_backend_dev_buffer_type(lib.ggml_backend_dev_by_type(0))  # GGML_BACKEND_DEVICE_TYPE_CPU
            for slot, pattern in zip(self._overrides, self._patterns, strict=False):
                slot.pattern, slot.buft = pattern, cpu
        self.placement = placement

    def apply(self, params) -> None:  # noqa: ANN001 - llama_model_params
        """Fill ``params``: an explicit device list (a NULL one would ignore workers added after init)."""
        params.devices = ctypes.cast(self._devices, ctypes.c_void_p).value
        params.n_gpu_layers = self.placement.n_gpu_layers
        params.split_mode = 1  # LLAMA_SPLIT_MODE_LAYER
        if self.placement.tensor_split:
            params.tensor_split = self._split
        if self._patterns:
            params.tensor_buft_overrides = ctypes.cast(self._overrides, ctypes.c_void_p).value


@dataclass(frozen=True)
class DeviceNeed:
    """What one device holds under a placement, against what it has."""

    device: Device
    layers: tuple[int, ...]
    output: bool  # the output layer (norm and vocabulary projection)
    experts_on_host: int  # of its layers, how many keep their experts in host memory
    weight_bytes: int
    kv_bytes: int
    compute_bytes: int = 0  # llama.cpp's compute buffer (measured on local GPUs only)
    margin: int = 0  # kept free for the driver and other programs (local GPUs only)

    @property
    def needed(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.compute_bytes

    @property
    def available(self) -> int:
        return self.device.free - self.margin

    @property
    def fits(self) -> bool:
        return self.needed <= self.available


@dataclass(frozen=True)
class Budget:
    """What a model costs on each device besides its share of the weights, and which weights no device takes."""

    kv_bytes_per_layer: int
    compute_bytes: dict[str, int]  # device name -> its compute buffer
    largest_tensor: dict[str, int]  # device name -> the biggest weight it takes; bigger ones stay on the host
    margin: int  # on each local GPU

    def stays_on_host(self, device: str, size: int) -> bool:
        limit = self.largest_tensor.get(device)
        return limit is not None and size > limit


def placement_needs(
    placement: Placement, devices: Sequence[Device], *, tensor_bytes: dict[str, int], budget: Budget
) -> list[DeviceNeed]:
    """Each device's layers, weights, KV cache and buffers under ``placement``: the CPU, then placement order."""
    layer_devices = placement.layer_devices()
    cpu = next(d for d in devices if d.kind is DeviceKind.CPU)
    order = [cpu, *placement.devices]
    gpus = {d.name for d in local_gpus(devices)}
    weights = dict.fromkeys((d.name for d in order), 0)
    for name, size in tensor_bytes.items():
        weights[tensor_device(name, size, layer_devices, placement.experts_on_host, budget)] += size
    needs = []
    for device in order:
        layers = tuple(i for i, d in enumerate(layer_devices[:-1]) if d == device.name)
        output = layer_devices[-1] == device.name
        # A GPU given no layer (--n-gpu-layers 0) is not asked for room: nothing of the model's is sized to it.
        holds = device.name in gpus and bool(layers or output)
        needs.append(
            DeviceNeed(
                device=device,
                layers=layers,
                output=output,
                experts_on_host=len(placement.experts_on_host.intersection(layers)),
                weight_bytes=weights[device.name],
                kv_bytes=budget.kv_bytes_per_layer * len(layers),
                compute_bytes=budget.compute_bytes.get(device.name, 0) if holds else 0,
                margin=budget.margin if holds else 0,
            )
        )
    return needs


def tensor_layer(tensor: str, n_layer: int) -> int | None:
    """The layer a tensor belongs to (``n_layer``: the output layer; None: the input embedding)."""
    parts = tensor.split(".")
    if parts[0] == "blk":
        return int(parts[1])
    if parts[0].startswith("output"):
        return n_layer
    return None  # the input embedding always stays on the CPU


def tensor_device(
    tensor: str, size: int, layer_devices: list[str], experts_on_host: frozenset[int], budget: Budget
) -> str:
    """Where llama.cpp puts a weight: its layer's device, unless it is an expert kept on the host or too big."""
    layer = tensor_layer(tensor, len(layer_devices) - 1)
    if layer is None:
        return "CPU"
    device = layer_devices[layer]
    if layer in experts_on_host and tensor.split(".")[2].endswith("_exps"):
        return "CPU"
    return "CPU" if budget.stays_on_host(device, size) else device
