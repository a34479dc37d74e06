"""A GGUF file's header: what model it holds, read without touching tensor data.

Both the engine (before loading) and the converter (before rewriting) ask this; it imports neither.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..base.errors import GGUFError, UnsupportedArchitectureError
from .hparams import HyperparameterError, check_hyperparameters

GGUF_MAGIC = b"GGUF"
LEGACY_EXPERT = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight$")
"""A tensor of the pre-April-2024 layout, one per expert: blk.N.ffn_gate.E.weight."""


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str
    file_type: int | None
    expert_count: int
    legacy_experts: bool
    n_params: int
    metadata: dict[str, object]  # scalars and strings; arrays as their length
    tensor_bytes: dict[str, int]  # in this file; a split model's other shards are not read
    tensor_dims: dict[str, tuple[int, ...]]  # innermost first, as ggml counts them

    @property
    def tokenizer_version(self) -> str | None:
        n_vocab = self.metadata.get("tokenizer.ggml.tokens")
        return None if not isinstance(n_vocab, int) else ("v3" if n_vocab >= 32768 else "v1")

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size


def is_gguf(path: Path) -> bool:
    """Whether ``path`` starts as a GGUF does; a file that cannot be read says why (a permission, ...)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except IsADirectoryError:
        return False
    except OSError as exc:
        hint = f"Check its permissions: ls -l {path}" if isinstance(exc, PermissionError) else None
        raise GGUFError(f"Cannot read {path}: {exc.strerror or exc}.", path=path, hint=hint) from exc


# GGUF value types: fixed sizes in bytes, and the two variable ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = 8  # arrays of arrays: deeper than any real file, shallow enough for the stack
_ALIGNMENT_KEY = "general.alignment"


class _HeaderError(ValueError):
    """The header says something the file cannot hold; the message names what."""


class _HeaderReader:
    """Reads a GGUF header's key/values (arrays skipped) and tensor table, without touching tensor data.

    gguf's own reader decodes every array element in Python, the 32000-token vocabulary too: seconds
    per file. This reads only what identifies the model. Every length and count in the header is checked
    against the bytes left in the file before it is used, so a header that lies costs neither memory nor
    time: it ends in a _HeaderError.
    """

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._size = size
        self.data_start = 0  # where tensor data begins, once the header is read
        self.last_element_type = 0
        self.array_types: dict[str, int] = {}  # an array key's element type

    def _left(self) -> int:
        return self._size - self._f.tell()

    def _read(self, n: int) -> bytes:
        if n > self._left():
            raise _HeaderError(f"a field of {n} bytes at byte {self._f.tell()} runs past the end of the file")
        return self._f.read(n)

    def _unpack(self, fmt: str) -> object:
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def _count(self, what: str, least_bytes_each: int) -> int:
        """A count from the header, refused when that many items cannot fit in the rest of the file."""
        count = int(self._unpack("<Q"))
        if count * least_bytes_each > self._left():
            raise _HeaderError(f"{count} {what} cannot fit in the {self._left()} bytes left")
        return count

    def _string(self) -> str:
        return self._read(self._count("string bytes", 1)).decode("utf-8", errors="replace")

    def _value(self, value_type: int, depth: int = 0) -> object:
        if value_type in _SCALARS:
            return self._unpack(_SCALARS[value_type])
        if value_type == _STRING:
            return self._string()
        if value_type == _ARRAY and depth < _MAX_NESTING:
            element_type = self.last_element_type = int(self._unpack("<I"))
            if element_type in _SCALARS:
                count = self._count("array elements", struct.calcsize(_SCALARS[element_type]))
                self._f.seek(count * struct.calcsize(_SCALARS[element_type]), 1)
            elif element_type in (_STRING, _ARRAY):
                count = self._count("array elements", 8 if element_type == _STRING else 12)
                for _ in range(count):
                    self._value(element_type, depth + 1)
            else:
                raise _HeaderError(f"unknown GGUF array element type {element_type}")
            return count  # an array stands for its length
        if value_type == _ARRAY:
            raise _HeaderError(f"arrays nested more than {_MAX_NESTING} deep")
        raise _HeaderError(f"unknown GGUF value type {value_type}")

    def read(self) -> tuple[dict[str, object], list[tuple[str, tuple[int, ...], int]]]:
        """Key/values and, per tensor, its name, dims and offset in the data section."""
        if self._read(4) != GGUF_MAGIC:
            raise _HeaderError("not GGUF")
        self._unpack("<I")  # version
        n_tensors = self._count("tensors", 8 + 4 + 8 + 4 + 8)  # name, dims, one dim, type, offset
        n_values = self._count("key/values", 8 + 4 + 1)  # key, type, the smallest value
        metadata = {}
        for _ in range(n_values):
            key = self._string()
            value_type = int(self._unpack("<I"))
            metadata[key] = self._value(value_type)
            if value_type == _ARRAY:
                self.array_types[key] = self.last_element_type
        tensors = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = int(self._unpack("<I"))
            if not 1 <= n_dims <= _MAX_DIMS:
                raise _HeaderError(f"tensor {name} has {n_dims} dimensions")
            dims = tuple(int(self._unpack("<Q")) for _ in range(n_dims))
            self._unpack("<I")  # type
            tensors.append((name, dims, int(self._unpack("<Q"))))
        self._check_offsets([offset for _, _, offset in tensors], metadata.get(_ALIGNMENT_KEY, 32))
        return metadata, tensors

    def _check_offsets(self, offsets: list[int], alignment: object) -> None:
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise _HeaderError(f"{_ALIGNMENT_KEY} is {alignment!r}, not a power of two")
        self.data_start = -(-self._f.tell() // alignment) * alignment
        for offset in offsets:
            if offset % alignment or self.data_start + offset > self._size:
                raise _HeaderError(f"a tensor's data offset {offset} lies outside the file or off its alignment")


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, object]  # scalars and strings; arrays as their length
    tensors: list[tuple[str, tuple[int, ...], int]]  # name, dims innermost first, offset in the data section
    data_bytes: int  # the size of the data section
    array_types: dict[str, int]  # each array's element type, by key


def read_header(path: Path) -> GGUFHeader:
    """Any GGUF's key/values and tensor table (a model's or an adapter's), checked against the file's size."""
    if not path.is_file():
        raise GGUFError(f"{path} does not exist.", path=path)
    if not is_gguf(path):
        raise GGUFError(f"{path} is not a GGUF file.", path=path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            reader = _HeaderReader(f, size)
            metadata, tensors = reader.read()
    except (_HeaderError, struct.error) as exc:
        raise GGUFError(
            f"{path} is truncated or corrupt: {exc}.", path=path, hint="Download or convert it again."
        ) from exc
    except OSError as exc:
        raise GGUFError(f"Cannot read {path}: {exc.strerror or exc}.", path=path) from exc
    return GGUFHeader(metadata, tensors, size - reader.data_start, reader.array_types)


def inspect_gguf(path: Path) -> GGUFInfo:
    """Read a GGUF's header and refuse anything but a Mixtral."""
    header = read_header(path)
    metadata, tensors = header.metadata, header.tensors
    if metadata.get("general.type") == "adapter":
        raise GGUFError(
            f"{path} is a LoRA adapter, not a model.", path=path, hint=f"Apply it to a model with --lora {path}."
        )
    architecture = str(metadata.get("general.architecture") or "unknown")
    expert_count = metadata.get(f"{architecture}.expert_count")
    if architecture != "llama" or not expert_count:
        raise UnsupportedArchitectureError(architecture if architecture != "llama" else "dense llama", path=path)
    try:
        check_hyperparameters(metadata, header.array_types)
    except HyperparameterError as exc:
        raise GGUFError(f"{path} is corrupt: {exc}.", path=path, hint="Download or convert it again.") from exc
    file_type = metadata.get("general.file_type")
    return GGUFInfo(
        path=path,
        architecture=architecture,
        file_type=file_type,  # type: ignore[arg-type]
        expert_count=expert_count,  # type: ignore[arg-type]
        legacy_experts=any(LEGACY_EXPERT.match(name) for name, _, _ in tensors),
        n_params=sum(math.prod(dims) for _, dims, _ in tensors),
        metadata=metadata,
        tensor_bytes=_tensor_bytes(tensors, data_bytes=header.data_bytes),
        tensor_dims={name: dims for name, dims, _ in tensors},
    )


def _tensor_bytes(tensors: list[tuple[str, tuple[int, ...], int]], *, data_bytes: int) -> dict[str, int]:
    """Each tensor's size on disk (alignment padding included): from one offset to the next."""
    ordered = sorted(tensors, key=lambda t: t[2])
    ends = [offset for _, _, offset in ordered[1:]] + [data_bytes]
    return {name: max(end - offset, 0) for (name, _, offset), end in zip(ordered, ends, strict=True)}
