"""What this machine has: cores and free memory (Linux /proc, with portable fallbacks)."""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores() -> int:
    """Physical cores: llama.cpp decodes fastest with one thread per core, not per hyperthread."""
    try:
        cores = set()
        physical_id = core_id = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                physical_id = value.strip()
            elif key == "core id":
                core_id = value.strip()
            elif not line.strip() and core_id is not None:
                cores.add((physical_id, core_id))
                physical_id = core_id = None
        if core_id is not None:
            cores.add((physical_id, core_id))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation, or None where unknown."""
    return _meminfo("MemAvailable")


def total_memory() -> int | None:
    return _meminfo("MemTotal")


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_memory() -> int | None:
    """Bytes of memory of all NVIDIA GPUs, or None when there is none (or no nvidia-smi to ask)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return sum(int(line) for line in out.split()) * 2**20 or None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def offload_devices() -> int:
    """Devices llama.cpp could offload layers to: GPUs, integrated GPUs and RPC servers (not the CPU)."""
    import ctypes

    from llama_cpp._ggml import libggml  # llama-cpp-python's handle on the ggml library it ships

    libggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    libggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    libggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    libggml.ggml_backend_dev_type.restype = ctypes.c_int
    libggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    gpu_types = (1, 2)  # GGML_BACKEND_DEVICE_TYPE_GPU, GGML_BACKEND_DEVICE_TYPE_IGPU
    devices = (libggml.ggml_backend_dev_get(i) for i in range(libggml.ggml_backend_dev_count()))
    return sum(1 for device in devices if libggml.ggml_backend_dev_type(device) in gpu_types)
