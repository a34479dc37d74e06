"""What llama.cpp will really do with a model on a GPU, learned from a dry load that allocates nothing.

A device has a largest tensor it can take (Vulkan's ``maxStorageBufferRange``: 128 MiB on lavapipe, 2-4 GiB
on many cards), and llama.cpp quietly keeps any weight over it in host memory; the buffer type's reported
maximum is not that limit. A load with ``no_alloc`` and no memory map (with one it asserts) builds the model's
tensors without their data in a few hundredths of a second and logs, at debug level, how many tensors could
not use the device's buffer type. A context created on that model reserves its compute graph without
allocating and logs each device's compute buffer size. Both are read from the log here.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import logs
from .devices import Device

_MOVED = re.compile(r"tensor '([^']+)' \(\S+\) \(and (\d+) others\) cannot be used with preferred buffer type")
_COMPUTE = re.compile(r"^\S+: +(\S+) compute buffer size = +([\d.]+) MiB", re.MULTILINE)
_LOAD_MODE_NONE = 0  # LLAMA_LOAD_MODE_NONE: a memory-mapped dry load asserts


@dataclass(frozen=True)
class DeviceProbe:
    """One GPU as llama.cpp would use it for one model."""

    largest_tensor: int | None  # bytes; bigger weights stay in host memory (None: no limit met)
    compute_bytes: int  # the compute buffer a context of the asked size and batch reserves on it


def probe_device(
    path: Path, device: Device, *, n_layer: int, tensor_bytes: Mapping[str, int], context_params: Mapping[str, int]
) -> DeviceProbe:
    """Dry-load the model with every layer on ``device`` and create a context on it; nothing is allocated."""
    import llama_cpp

    lines: list[str] = []
    devices = (ctypes.c_void_p * 2)(device.handle)
    params = llama_cpp.llama_model_default_params()
    params.devices = ctypes.cast(devices, ctypes.c_void_p).value
    params.n_gpu_layers = n_layer + 1
    params.split_mode = 1  # LLAMA_SPLIT_MODE_LAYER
    params.no_alloc = True
    params.load_mode = _LOAD_MODE_NONE
    # Without the CPU's repacked types, the only weights logged as moved are those the device refused (with
    # them, the input embedding is logged too: the repacked type cannot look rows up).
    params.use_extra_bufts = False
    with logs.log_handler(lambda level, text: lines.append(text)):
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            return DeviceProbe(None, 0)
        try:
            context = llama_cpp.llama_context_default_params()
            for name, value in context_params.items():
                setattr(context, name, value)
            ctx = llama_cpp.llama_init_from_model(model, context)
            if ctx:
                llama_cpp.llama_free(ctx)
        finally:
            llama_cpp.llama_model_free(model)
    log = "".join(lines)
    # The reservation may be logged more than once (prompt and decode graphs): the buffer is the largest.
    compute = max((float(mib) for name, mib in _COMPUTE.findall(log) if name == device.name), default=0.0)
    return DeviceProbe(_largest_kept(log, tensor_bytes), int(compute * 2**20))


def _largest_kept(log: str, tensor_bytes: Mapping[str, int]) -> int | None:
    """The size below which the device took every weight, from the count of tensors it refused.

    The log names the first refused tensor and how many others followed. A size limit refuses the biggest
    ones: of the weights that would have gone to the device (all but the input embedding), the that-many
    biggest; the device takes everything smaller than the smallest of them.
    """
    moved = _MOVED.search(log)
    if not moved:
        return None
    count = int(moved.group(2)) + 1
    sizes = sorted((size for name, size in tensor_bytes.items() if not name.startswith("token_embd")), reverse=True)
    if count >= len(sizes):
        return 0
    smallest_refused = min(sizes[count - 1], tensor_bytes.get(moved.group(1), sizes[count - 1]))
    return smallest_refused - 1
