"""The devices llama.cpp sees, read from ggml's device registry.

llama-cpp-python declares none of ggml's backend functions, so this module gives them ctypes prototypes
on the libggml handle it ships. ``llama_supports_gpu_offload()`` is no substitute: it is true in any build
with a second backend (RPC on a machine without a GPU, say) and says nothing about memory.
"""

from __future__ import annotations

import ctypes
import enum
import functools
from dataclasses import dataclass

from ..base.system import available_memory


class DeviceKind(str, enum.Enum):
    CPU = "cpu"
    GPU = "gpu"
    IGPU = "igpu"  # an integrated GPU, in host memory
    ACCEL = "accel"  # BLAS, AMX: helps the CPU, holds no layers
    RPC = "rpc"  # a `mixtral worker` (or llama.cpp's rpc-server) on this or another machine


# ggml_backend_dev_type, in ggml-backend.h's order.
_TYPE_KINDS = {0: DeviceKind.CPU, 1: DeviceKind.GPU, 2: DeviceKind.IGPU, 3: DeviceKind.ACCEL}


@dataclass(frozen=True)
class Device:
    name: str  # llama.cpp's name: CPU, CUDA0, RPC0, ...
    description: str  # the hardware, or a worker's HOST:PORT
    kind: DeviceKind
    free: int  # bytes; the local CPU's is the memory available now, not ggml's "all of it"
    total: int
    handle: int  # ggml_backend_dev_t, valid for the process's lifetime

    @property
    def endpoint(self) -> str | None:
        return self.description if self.kind is DeviceKind.RPC else None


@functools.cache
def ggml():  # noqa: ANN201 - the ctypes library
    """llama-cpp-python's handle on libggml, with the prototypes of the registry functions used here."""
    from llama_cpp._ggml import libggml

    p, s, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    prototypes = {
        "ggml_backend_dev_count": ([], size),
        "ggml_backend_dev_get": ([size], p),
        "ggml_backend_dev_name": ([p], s),
        "ggml_backend_dev_description": ([p], s),
        "ggml_backend_dev_type": ([p], ctypes.c_int),
        "ggml_backend_dev_memory": ([p, ctypes.POINTER(size), ctypes.POINTER(size)], None),
        "ggml_backend_dev_backend_reg": ([p], p),
        "ggml_backend_dev_buffer_type": ([p], p),
        "ggml_backend_dev_by_type": ([ctypes.c_int], p),
        "ggml_backend_reg_count": ([], size),
        "ggml_backend_reg_get": ([size], p),
        "ggml_backend_reg_name": ([p], s),
        "ggml_backend_reg_by_name": ([s], p),
        "ggml_backend_reg_get_proc_address": ([p, s], p),
        "ggml_backend_register": ([p], None),
    }
    for name, (argtypes, restype) in prototypes.items():
        function = getattr(libggml, name)
        function.argtypes, function.restype = argtypes, restype
    return libggml


@functools.cache
def init_backend() -> None:
    """Initialise llama.cpp's backends once per process."""
    import llama_cpp

    from . import logs

    logs.install()
    llama_cpp.llama_backend_init()


def backend_names() -> list[str]:
    """The backends this llama.cpp build registered (CPU, RPC, CUDA, Metal, ...), workers excluded."""
    lib = ggml()
    regs = (lib.ggml_backend_reg_get(i) for i in range(lib.ggml_backend_reg_count()))
    names = [lib.ggml_backend_reg_name(reg).decode() for reg in regs]
    return [name for name in names if not name.startswith("RPC[")]


def list_devices() -> list[Device]:
    """Every device in the registry, workers added with ``rpc.add_workers`` included, in registry order."""
    init_backend()
    lib = ggml()
    devices = []
    for index in range(lib.ggml_backend_dev_count()):
        handle = lib.ggml_backend_dev_get(index)
        devices.append(_device(lib, handle))
    return devices


def _device(lib, handle: int) -> Device:  # noqa: ANN001
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    lib.ggml_backend_dev_memory(handle, ctypes.byref(free), ctypes.byref(total))
    kind = _TYPE_KINDS.get(lib.ggml_backend_dev_type(handle), DeviceKind.ACCEL)
    # Workers' devices belong to the generic "RPC" registry entry and report themselves as GPUs.
    if lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(handle)) == b"RPC":
        kind = DeviceKind.RPC
    free_bytes = free.value
    if kind is DeviceKind.CPU:
        # ggml's CPU device calls all memory free; what the OS says is available is what a load can use.
        free_bytes = available_memory() or free.value
    return Device(
        name=lib.ggml_backend_dev_name(handle).decode(),
        description=lib.ggml_backend_dev_description(handle).decode(errors="replace"),
        kind=kind,
        free=free_bytes,
        total=total.value,
        handle=handle,
    )


def has_gpu_backend() -> bool:
    """Whether this build has a local GPU backend with a device (workers do not count)."""
    return any(d.kind in (DeviceKind.GPU, DeviceKind.IGPU) for d in list_devices())
