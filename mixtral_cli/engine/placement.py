"""Where tensors live: GPU layers, and MoE experts kept in host memory (--cpu-moe, --n-cpu-moe).

llama.cpp places tensors through ``tensor_buft_overrides``: a list of (regex, buffer type) pairs that
llama-cpp-python declares but never fills. Experts are most of a Mixtral (8x7B: 45 of 47B parameters)
but only 2 of 8 run per token, so keeping them in host memory and the rest on the GPU fits a big model
on a small card at a modest cost in speed.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .options import EngineOptions

EXPERT_PATTERN = r"\.ffn_(up|down|gate)_exps"
_GGML_BACKEND_DEVICE_TYPE_CPU = 0


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@dataclass(frozen=True)
class Placement:
    n_gpu_layers: int
    expert_patterns: tuple[str, ...]
    notice: str | None  # a one-line note for the user, when an option cannot take effect


def plan_placement(options: EngineOptions, *, gpu: bool) -> Placement:
    """Decide layers and expert overrides; on a CPU-only build the GPU options only earn a notice."""
    asked_gpu = options.cpu_moe or options.n_cpu_moe > 0 or (options.n_gpu_layers or 0) > 0
    if not gpu:
        notice = "No GPU backend in this llama.cpp build: GPU placement options have no effect." if asked_gpu else None
        return Placement(0, (), notice)
    # llama.cpp reads a negative layer count as "all of them".
    n_gpu_layers = -1 if options.n_gpu_layers is None else options.n_gpu_layers
    if options.cpu_moe:
        patterns: tuple[str, ...] = (EXPERT_PATTERN,)
    else:
        patterns = tuple(rf"blk\.{i}{EXPERT_PATTERN}" for i in range(options.n_cpu_moe))
    return Placement(n_gpu_layers, patterns, None)


class BuftOverrides:
    """The NULL-terminated C array for ``llama_model_params.tensor_buft_overrides``; keep it alive while loading."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        from llama_cpp._ggml import libggml  # llama-cpp-python's handle on the ggml library it ships

        libggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
        libggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
        libggml.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
        libggml.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
        cpu = libggml.ggml_backend_dev_buffer_type(libggml.ggml_backend_dev_by_type(_GGML_BACKEND_DEVICE_TYPE_CPU))
        self._patterns = [p.encode() for p in patterns]
        self.array = (_BuftOverride * (len(patterns) + 1))()
        for slot, pattern in zip(self.array, self._patterns, strict=False):
            slot.pattern = pattern
            slot.buft = cpu

    @property
    def pointer(self) -> int:
        return ctypes.cast(self.array, ctypes.c_void_p).value or 0
