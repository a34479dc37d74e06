"""Existing GGUF files: what they hold, and rewriting the old one-tensor-per-expert Mixtral layout.

GGUF files written before April 2024 keep each expert in its own tensor (``blk.N.ffn_gate.E.weight``).
llama.cpp still loads them, but cannot map them from disk and copies every expert instead: about 30x
slower to load. Stacking them gives the current layout with the very same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GGUFError, UnsupportedArchitectureError
from .streaming import ProgressCallback, StreamedTensor

if TYPE_CHECKING:
    import gguf
    import numpy as np

GGUF_MAGIC = b"GGUF"
_LEGACY_EXPERT = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight$")


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str
    file_type: int | None
    expert_count: int
    legacy_experts: bool
    n_params: int
    nbytes: int


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _open(path: Path) -> gguf.GGUFReader:
    import gguf

    if not path.is_file():
        raise GGUFError(f"{path} does not exist.", path=path)
    if not is_gguf(path):
        raise GGUFError(f"{path} is not a GGUF file.", path=path)
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError) as exc:
        # The reader maps the whole file and walks its tables: a cut-off file fails here.
        raise GGUFError(f"{path} is truncated or corrupt.", path=path, hint="Download or convert it again.") from exc


def _field(reader: gguf.GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def inspect_gguf(path: Path) -> GGUFInfo:
    """Read a GGUF's tables and refuse anything but a Mixtral."""
    reader = _open(path)
    architecture = str(_field(reader, "general.architecture") or "unknown")
    expert_count = int(_field(reader, f"{architecture}.expert_count") or 0)
    if architecture != "llama" or expert_count == 0:
        raise UnsupportedArchitectureError(architecture if architecture != "llama" else "dense llama", path=path)
    file_type = _field(reader, "general.file_type")
    return GGUFInfo(
        path=path,
        architecture=architecture,
        file_type=None if file_type is None else int(file_type),
        expert_count=expert_count,
        legacy_experts=any(_LEGACY_EXPERT.match(t.name) for t in reader.tensors),
        n_params=sum(int(t.n_elements) for t in reader.tensors),
        nbytes=sum(int(t.n_bytes) for t in reader.tensors),
    )


def rewrite_legacy_layout(source: Path, output: Path, *, on_progress: ProgressCallback | None = None) -> None:
    """Write ``source`` with each layer's experts stacked into ``ffn_*_exps``; every byte is kept."""
    import gguf
    import numpy as np

    reader = _open(source)
    writer = gguf.GGUFWriter(output, str(_field(reader, "general.architecture")))
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type)

    groups: dict[str, list[gguf.ReaderTensor]] = {}
    for tensor in reader.tensors:
        match = _LEGACY_EXPERT.match(tensor.name)
        key = f"blk.{match[1]}.ffn_{match[2]}_exps.weight" if match else tensor.name
        groups.setdefault(key, []).append(tensor)
    for name, parts in groups.items():
        parts.sort(key=lambda t: int(_LEGACY_EXPERT.match(t.name)[3]) if _LEGACY_EXPERT.match(t.name) else 0)
        first = parts[0]
        # The reader lists shapes innermost first; the writer takes numpy order, outermost first.
        shape = tuple(int(d) for d in reversed(first.shape))
        if len(parts) > 1:
            shape = (len(parts), *shape)
        nbytes = sum(int(p.n_bytes) for p in parts)
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=first.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for parts in groups.values():
        nbytes = sum(int(p.n_bytes) for p in parts)
        writer.write_tensor_data(StreamedTensor(nbytes, partial(_copied_parts, source, parts, on_progress)))
    writer.close()


def _copied_parts(
    source: Path, parts: list[gguf.ReaderTensor], on_progress: ProgressCallback | None
) -> Iterator[np.ndarray]:
    import numpy as np

    for part in parts:
        n_bytes = int(part.n_bytes)
        yield np.fromfile(source, dtype=np.uint8, count=n_bytes, offset=int(part.data_offset))
        if on_progress:
            on_progress(n_bytes)
