"""Moving a sequence's KV cache from one llama.cpp context to another (a hand-over between weight layouts).

The sequence state carries the KV cache but not the logits, so the receiving context evaluates the last
prompt token itself to choose the first new token: the sender evaluates all prompt tokens but the last.
"""

from __future__ import annotations

from ..base.errors import LlamaCppError

_SEQUENCE = 0


def copy_sequence(source, target) -> int:  # noqa: ANN001 - llama_context_p
    """Replace ``target``'s sequence with ``source``'s; returns the bytes moved."""
    import ctypes

    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(source, _SEQUENCE)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(source, buffer, size, _SEQUENCE)
    if written != size or llama_cpp.llama_state_seq_set_data(target, buffer, written, _SEQUENCE) != written:
        raise LlamaCppError("llama.cpp could not hand the KV cache over to the decoding context.")
    return written
