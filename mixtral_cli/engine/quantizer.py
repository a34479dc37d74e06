"""llama.cpp's own quantizer (``llama_model_quantize``), run in a child process, with progress from its log.

The quantizer is one C call that does not return before the whole file is written: in a thread it could
not be stopped. In a child process it can: Ctrl-C (or any failure) in the parent terminates the child at
once, and the caller's cleanup removes the half-written output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from ..errors import LlamaCppError

# llama.cpp logs "[  12/ 291] blk.1.attn_q.weight - ..." as it starts each tensor.
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
_POLL_S = 0.1


def llama_quantize(
    source: Path,
    output: Path,
    *,
    file_type: int,
    threads: int | None = None,
    on_stage: Callable[[str, int], None] | None = None,
    on_tensor: Callable[[], None] | None = None,
) -> None:
    """Quantize the GGUF ``source`` to llama.cpp file type ``file_type`` into ``output``."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or llama state
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_quantize_in_child,
        args=(str(source), str(output), file_type, threads or 0, sender),
        name="llama-quantize",
        daemon=True,
    )
    child.start()
    sender.close()
    tensors_started, status, errors = 0, None, []
    try:
        while True:
            try:
                if not receiver.poll(_POLL_S):
                    if not child.is_alive() and not receiver.poll():
                        break
                    continue
                kind, value = receiver.recv()
            except EOFError:
                break
            if kind == "tensor":
                if tensors_started == 0 and on_stage:
                    on_stage("Quantizing", value)
                elif on_tensor:
                    on_tensor()
                tensors_started += 1
            elif kind == "error":
                errors.append(value)
            else:
                status = value
    finally:
        if child.is_alive():
            child.terminate()
        child.join()
        receiver.close()
    if status != 0:
        detail = errors[-1] if errors else f"the quantizer ended with exit code {child.exitcode}"
        raise LlamaCppError(f"llama.cpp could not quantize {source.name}: {detail}")
    if tensors_started and on_tensor:
        on_tensor()


def _quantize_in_child(source: str, output: str, file_type: int, threads: int, events: Connection) -> None:
    """The child's work: quantize, sending ("tensor", total), ("error", text) and ("status", code)."""
    import ctypes
    import os
    import signal

    import llama_cpp

    from .logs import LOG_LEVEL_ERROR, log_handler

    # Ctrl-C reaches the whole process group; the parent alone decides, and terminates this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type
    params.nthread = threads
    params.allow_requantize = True

    def on_log(level: int, text: str) -> None:
        match = _TENSOR_LINE.match(text)
        if match:
            events.send(("tensor", int(match[2])))
        elif level == LOG_LEVEL_ERROR and text.strip(" =\n"):
            events.send(("error", text.strip()))

    with log_handler(on_log):
        status = llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(output), ctypes.byref(params))
    events.send(("status", int(status)))
    events.close()
