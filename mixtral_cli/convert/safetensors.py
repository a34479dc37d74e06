"""The safetensors file format, read and written with plain file I/O.

Reading goes through ``np.fromfile`` per tensor instead of a memory map: a map keeps every page it has
touched resident, so converting a 93 GB checkpoint would grow the process to the checkpoint's size.
numpy has no bfloat16, so BF16 data travels as its raw ``uint16`` bits.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.atomic import atomic_path
from .streaming import write_array

if TYPE_CHECKING:
    import numpy as np

# safetensors dtype name -> (numpy dtype of the raw bits, bytes per element)
DTYPES = {"BF16": ("uint16", 2), "F16": ("float16", 2), "F32": ("float32", 4)}
_MAX_HEADER = 100 * 2**20


class SafetensorsFormatError(ValueError):
    """A file is not valid safetensors; the message names the file and the fault."""


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes lie in a safetensors file."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    def read_raw(self) -> np.ndarray:
        """The tensor as stored: float16/float32, or uint16 bits for BF16."""
        import numpy as np

        raw_dtype, _ = DTYPES[self.dtype]
        count = self.nbytes // np.dtype(raw_dtype).itemsize
        array = np.fromfile(self.path, dtype=raw_dtype, count=count, offset=self.offset)
        if array.size != count:
            raise SafetensorsFormatError(f"{self.path} is truncated inside tensor {self.name}")
        return array.reshape(self.shape)

    def read_f32(self) -> np.ndarray:
        return to_float32(self.read_raw(), self.dtype)


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    import numpy as np

    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32, copy=False)


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16 (ties to even) and return the bits as uint16."""
    import numpy as np

    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (0x7FFF + ((bits >> 16) & 1))
    return (rounded >> 16).astype(np.uint16)


def read_index(path: Path) -> dict[str, TensorRef]:
    """The tensors of one safetensors file, by name, checked against the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsFormatError(f"{path} is too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER, size - 8):
            raise SafetensorsFormatError(f"{path} has a corrupt header")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise SafetensorsFormatError(f"{path} has a corrupt header") from exc
    if not isinstance(header, dict):
        raise SafetensorsFormatError(f"{path} has a corrupt header")
    data_start = 8 + header_len
    tensors: dict[str, TensorRef] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, begin, end = _checked_entry(path, name, entry)
        if data_start + end > size:
            raise SafetensorsFormatError(f"{path} is truncated: {_shown(name)} ends past the end of the file")
        tensors[name] = TensorRef(name, path, dtype, shape, data_start + begin, end - begin)
    _check_no_overlap(path, tensors.values())
    return tensors


def _checked_entry(path: Path, name: str, entry: object) -> tuple[str, tuple[int, ...], int, int]:
    """One header entry's dtype, shape and data offsets, each checked for type and for agreeing with the rest."""
    corrupt = SafetensorsFormatError(f"{path} has a corrupt entry for {_shown(name)}")
    if not isinstance(entry, dict):
        raise corrupt
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise corrupt
    if dtype not in DTYPES:
        raise SafetensorsFormatError(
            f"{path} stores {_shown(name)} as {_shown(dtype)}; only BF16, F16 and F32 are read"
        )
    if not (isinstance(shape, list) and all(_is_count(dim) for dim in shape)):
        raise corrupt
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise corrupt
    begin, end = offsets
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    if end - begin != n_elements * DTYPES[dtype][1]:
        raise corrupt
    return dtype, tuple(shape), begin, end


def _shown(name: str) -> str:
    """A name from the file, cut where a hostile one would flood the message."""
    return name if len(name) <= 80 else name[:77] + "..."


def _is_count(value: object) -> bool:
    """A JSON whole number of 0 or more (JSON's true is a Python int too, and no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_no_overlap(path: Path, tensors: Iterable[TensorRef]) -> None:
    previous: TensorRef | None = None
    for tensor in sorted(tensors, key=lambda t: (t.offset, t.nbytes)):
        if previous is not None and tensor.offset < previous.offset + previous.nbytes:
            raise SafetensorsFormatError(
                f"{path} has tensors {_shown(previous.name)} and {_shown(tensor.name)} in the same bytes"
            )
        previous = tensor


def write_file(
    path: Path,
    tensors: Mapping[str, tuple[str, np.ndarray]],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``{name: (dtype, raw array)}`` as a safetensors file, atomically."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, array) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data section to 8 bytes
    with atomic_path(path) as partial, open(partial, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for _, array in tensors.values():
            write_array(f, array)
