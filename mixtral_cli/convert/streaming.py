"""Tensors written to a GGUF part by part, so that no whole tensor is ever held in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
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


def write_array(fout: BinaryIO, array: np.ndarray) -> None:
    """``array``'s bytes, written through the file object: numpy's own ``tofile`` drops the OS error (a full
    disk becomes "N requested and M written"), which the caller needs to say what went wrong."""
    import numpy as np

    fout.write(np.ascontiguousarray(array).data)
