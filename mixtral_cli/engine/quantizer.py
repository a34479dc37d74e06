"""llama.cpp's own quantizer (``llama_model_quantize``), with progress read from its log."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import LlamaCppError
from .logs import LOG_LEVEL_ERROR, log_handler

# llama.cpp logs "[  12/ 291] blk.1.attn_q.weight - ..." as it starts each tensor.
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")


def llama_quantize(
    source: Path,
    output: Path,
    *,
    file_type: int,
    threads: int | None = None,
    on_stage: Callable[[str, int], None] | None = None,
    on_tensor: Callable[[], None] | None = None,
) -> None:
    """Quantize the GGUF ``source`` to llama.cpp file type ``file_type`` into ``output``.

    The call runs in a worker thread so that Ctrl-C reaches the main thread at once; the caller's
    cleanup then removes the half-written output.
    """
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type
    params.nthread = threads or 0
    params.allow_requantize = True
    errors: list[str] = []
    tensors_started = 0

    def on_log(level: int, text: str) -> None:
        nonlocal tensors_started
        match = _TENSOR_LINE.match(text)
        if match:
            if tensors_started == 0 and on_stage:
                on_stage("Quantizing", int(match[2]))
            elif on_tensor:
                on_tensor()
            tensors_started += 1
        elif level == LOG_LEVEL_ERROR and text.strip(" =\n"):
            errors.append(text.strip())

    status: list[int] = []
    worker = threading.Thread(
        target=lambda: status.append(
            llama_cpp.llama_model_quantize(bytes(source), bytes(output), ctypes.byref(params))
        ),
        name="llama-quantize",
        daemon=True,
    )
    with log_handler(on_log):
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
    if status != [0]:
        detail = errors[-1] if errors else "no reason given"
        raise LlamaCppError(f"llama.cpp could not quantize {source.name}: {detail}")
    if tensors_started and on_tensor:
        on_tensor()
