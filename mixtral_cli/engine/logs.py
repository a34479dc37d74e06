"""llama.cpp's log, silent unless someone asks for it.

llama.cpp logs through one process-wide callback. This module installs its own once and sends each line to
whatever handler is current, so a command can show the log (--verbose) or read it (quantize progress).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

LogHandler = Callable[[int, str], None]
"""Called with ggml's log level (1 debug, 2 info, 3 warn, 4 error, 5 continued) and the text."""

# ggml_log_level, as ggml.h numbers it.
LOG_LEVEL_WARN = 3
LOG_LEVEL_ERROR = 4

_handler: LogHandler | None = None
_installed = None  # keeps the ctypes callback alive for as long as llama.cpp may call it
_install_lock = threading.Lock()


def install() -> None:
    """Route llama.cpp's log through this module; until a handler is set, it is dropped."""
    global _installed
    with _install_lock:
        if _installed is not None:
            return
        import ctypes

        import llama_cpp

        @llama_cpp.llama_log_callback
        def dispatch(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            handler = _handler
            if handler is not None:
                handler(level, text.decode("utf-8", errors="replace"))

        llama_cpp.llama_log_set(dispatch, ctypes.c_void_p(0))
        _installed = dispatch


@contextlib.contextmanager
def log_handler(handler: LogHandler) -> Iterator[None]:
    """Send llama.cpp's log to ``handler`` inside the block."""
    global _handler
    install()
    previous, _handler = _handler, handler
    try:
        yield
    finally:
        _handler = previous
