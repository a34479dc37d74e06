"""What llama.cpp will really do with a model on a GPU, learned from a dry load that allocates nothing.

A device has a largest tensor it can take (Vulkan's ``maxStorageBufferRange``: 128 MiB on lavapipe, 2-4 GiB
on many cards), and llama.cpp quietly keeps any weight over it in host memory; the buffer type's reported
maximum is not that limit. A load with ``no_alloc`` and no memory map (with one it asserts) builds the model's
tensors without their data in a few hundredths of a second and logs, at debug level, how many tensors could
not use the device's buffer type. A context created on that model reserves its compute graph without
allocating and logs each device's compute buffer size, which depends on the placement (experts kept on the
host add copies). Both are read from the log here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import logs
from .devices import Device
from .placement import LoadParams, Placement

_MOVED = re.compile(r"tensor '([^']+)' \(\S+\) \(and (\d+) others\) cannot be used with preferred buffer type")
_COMPUTE = re.compile(r"^\S+: +(\S+) compute buffer size = +([\d.]+) MiB", re.MULTILINE)
_LOAD_MODE_NONE = 0  # LLAMA_LOAD_MODE_NONE: a memory-mapped dry load asserts


@dataclass(frozen=True)
class DryRun:
    """What llama.cpp would allocate for one placement, read from its log."""

    log: str

    def compute_bytes(self, device: str) -> int:
        """The compute buffer a context of the asked size and batch reserves on ``device``."""
        # The reservation may be logged more than once (prompt and decode graphs): the buffer is the largest.
        mib = max((float(size) for name, size in _COMPUTE.findall(self.log) if name == device), default=0.0)
        return int(mib * 2**20)

    def largest_tensor(self, tensor_bytes: Mapping[str, int]) -> int | None:
        """With every layer on one device: the biggest weight it takes (None: it took them all)."""
        return _largest_kept(self.log, tensor_bytes)


def every_layer_on(device: Device, n_layer: int) -> Placement:
    return Placement((device,), n_layer + 1, (1.0,), n_layer, frozenset())


def dry_run(path: Path, placement: Placement, *, context_params: Mapping[str, int]) -> DryRun:
    """Load the model with ``placement`` and create a context on it, allocating nothing."""
    import llama_cpp

    lines: list[str] = []
    load_params = LoadParams(placement)
    params = llama_cpp.llama_model_default_params()
    load_params.apply(params)
    params.no_alloc = True
    params.load_mode = _LOAD_MODE_NONE
    # Without the CPU's repacked types, the only weights logged as moved are those the device refused (with
    # them, the input embedding is logged too: the repacked type cannot look rows up).
    params.use_extra_bufts = False
    with logs.log_handler(lambda level, text: lines.append(text)):
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if model:
            try:
                context = llama_cpp.llama_context_default_params()
                for name, value in context_params.items():
                    setattr(context, name, value)
                ctx = llama_cpp.llama_init_from_model(model, context)
                if ctx:
                    llama_cpp.llama_free(ctx)
            finally:
                llama_cpp.llama_model_free(model)
    return DryRun("".join(lines))


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
