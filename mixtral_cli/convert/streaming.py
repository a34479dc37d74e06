"""Tensors written to a GGUF part by part, so that no whole tensor is ever held in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import gguf
    import numpy as np

ProgressCallback = Callable[[int], None]
"""Called with the number of source bytes just written."""


class StreamedTensor:
    """What ``GGUFWriter.write_tensor_data`` needs of a tensor (``nbytes``, ``tofile``), made of parts.

    Stacking a layer's experts in memory would cost 940 MB per tensor for 8x7B at 16 bits; writing each
    expert in turn gives the same bytes, since the expert index is the outermost dimension.
    """

    def __init__(self, nbytes: int, parts: Callable[[], Iterable[np.ndarray]]) -> None:
        self.nbytes = nbytes
        self._parts = parts

    def tofile(self, fout: BinaryIO) -> None:
        written = 0
        for part in self._parts():
            write_array(fout, part)
            written += part.nbytes
        if written != self.nbytes:
            raise AssertionError(f"wrote {written} bytes of a tensor planned at {self.nbytes}")


@dataclass(frozen=True)
class OutputTensor:
    """A tensor of the GGUF being written: declared up front, its bytes streamed from ``parts`` later."""

    name: str
    shape: tuple[int, ...]  # numpy order, outermost first
    nbytes: int
    ggml_type: int
    parts: Callable[[], Iterable[np.ndarray]]


def write_tensors(writer: gguf.GGUFWriter, tensors: Sequence[OutputTensor]) -> None:
    """Declare ``tensors`` after the writer's key/values, write the header, then each tensor part by part."""
    import numpy as np

    for tensor in tensors:
        # Any dtype but uint8 tells the writer that shapes count elements, not bytes.
        writer.add_tensor_info(
            tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes, raw_dtype=tensor.ggml_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in tensors:
        writer.write_tensor_data(StreamedTensor(tensor.nbytes, tensor.parts))
    writer.close()


def write_array(fout: BinaryIO, array: np.ndarray) -> None:
    """``array``'s bytes, written through the file object: numpy's own ``tofile`` drops the OS error (a full
    disk becomes "N requested and M written"), which the caller needs to say what went wrong."""
    import numpy as np

    fout.write(np.ascontiguousarray(array).data)
