"""Existing GGUF files: copying their metadata, and rewriting the old one-tensor-per-expert Mixtral layout.

GGUF files written before April 2024 keep each expert in its own tensor (``blk.N.ffn_gate.E.weight``).
The llama.cpp mixtral builds on no longer loads them (``tensor 'blk.0.ffn_down_exps.weight' not found``).
Stacking them gives the current layout with the very same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..gguf_format.header import LEGACY_EXPERT
from .streaming import OutputTensor, ProgressCallback, write_tensors

if TYPE_CHECKING:
    import gguf
    import numpy as np


def copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Every key/value of ``reader`` into ``writer``, but those the writer sets itself."""
    import gguf

    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type)


def rewrite_legacy_layout(source: Path, output: Path, *, on_progress: ProgressCallback | None = None) -> None:
    """Write ``source`` with each layer's experts stacked into ``ffn_*_exps``; every byte is kept."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(output, str(reader.get_field("general.architecture").contents()))
    copy_metadata(reader, writer)

    groups: dict[str, list[gguf.ReaderTensor]] = {}
    for tensor in reader.tensors:
        match = LEGACY_EXPERT.match(tensor.name)
        key = f"blk.{match[1]}.ffn_{match[2]}_exps.weight" if match else tensor.name
        groups.setdefault(key, []).append(tensor)
    tensors = []
    for name, parts in groups.items():
        parts.sort(key=lambda t: int(LEGACY_EXPERT.match(t.name)[3]) if LEGACY_EXPERT.match(t.name) else 0)
        first = parts[0]
        # The reader lists shapes innermost first; the writer takes numpy order, outermost first.
        shape = tuple(int(d) for d in reversed(first.shape))
        if len(parts) > 1:
            shape = (len(parts), *shape)
        nbytes = sum(int(p.n_bytes) for p in parts)
        copied = partial(_copied_parts, source, parts, on_progress)
        tensors.append(OutputTensor(name, shape, nbytes, first.tensor_type, copied))
    write_tensors(writer, tensors)


def _copied_parts(
    source: Path, parts: list[gguf.ReaderTensor], on_progress: ProgressCallback | None
) -> Iterator[np.ndarray]:
    import numpy as np

    for part in parts:
        n_bytes = int(part.n_bytes)
        yield np.fromfile(source, dtype=np.uint8, count=n_bytes, offset=int(part.data_offset))
        if on_progress:
            on_progress(n_bytes)
