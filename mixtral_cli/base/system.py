"""What this machine has, as the OS tells it: cores, memory, an NVIDIA GPU (llama.cpp's devices: engine/devices.py)."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
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


def peak_memory() -> int:
    """The most memory this process has held at once (its peak resident set), in bytes.

    On Linux from /proc (VmHWM): getrusage's maxrss carries the peak of the parent that forked this process
    over exec, so a big parent would be reported as ours.
    """
    import resource
    import sys

    peak = _meminfo("VmHWM", Path("/proc/self/status"))
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts KiB, macOS bytes


def _meminfo(key: str, path: Path = Path("/proc/meminfo")) -> int | None:
    """A ``KEY: N kB`` line of /proc/meminfo (or of a /proc status file), in bytes."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class LocalGpu:
    description: str  # e.g. "an NVIDIA GPU (NVIDIA H100 80GB HBM3)"
    backend: str  # the llama.cpp build that uses it: cuda, metal
    memory: int | None  # bytes, all such GPUs together; None where the OS does not say


@functools.cache
def gpu_on_this_machine() -> LocalGpu | None:
    """A GPU the operating system shows, whatever llama.cpp was built for: NVIDIA's through nvidia-smi, Apple's."""
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return LocalGpu("Apple silicon (Metal)", "metal", None)
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        rows = [line.rsplit(",", 1) for line in out.strip().splitlines() if "," in line]
        if not rows:
            return None
        return LocalGpu(f"an NVIDIA GPU ({rows[0][0].strip()})", "cuda", sum(int(m) for _, m in rows) * 2**20)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def gpu_memory() -> int | None:
    """Bytes of memory of this machine's GPUs, or None when there is none (or no way to ask)."""
    gpu = gpu_on_this_machine()
    return gpu.memory if gpu else None
