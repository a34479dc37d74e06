"""llama.cpp's own quantizer (``llama_model_quantize``), run in a child process, with progress from its log.

The quantizer is one C call that does not return before the whole file is written: in a thread it could
not be stopped. In a child process it can: Ctrl-C (or any failure) in the parent terminates the child at
once, and the caller's cleanup removes the half-written output.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from ..base.errors import LlamaCppError

# llama.cpp logs "[  12/ 291] blk.1.attn_q.weight - ..." as it starts each tensor.
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
_POLL_S = 0.1
# What ends a command (Ctrl-C, and SIGTERM and SIGHUP, see cli.main), and the alarm that raises one of
# them that came during an import: held while the child starts.
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM}


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
        args=(str(source), str(output), file_type, threads or 0, sender, os.getpid()),
        name="llama-quantize",
        daemon=True,
    )
    tensors_started, status, errors = 0, None, []
    held = _SignalsHeld()
    try:
        with held:
            # A signal that ended this process while it starts the child would leave the child running,
            # unseen; the child starts with them held as well, until it is ready for them (_quantize_in_child).
            child.start()
        sender.close()
        held.deliver()  # one that came meanwhile takes effect here, where the child is stopped below
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
        if child.pid is not None:  # started
            child.join()
        receiver.close()
    if status != 0:
        detail = errors[-1] if errors else f"the quantizer ended with exit code {child.exitcode}"
        raise LlamaCppError(f"llama.cpp could not quantize {source.name}: {detail}")
    if tensors_started and on_tensor:
        on_tensor()


class _SignalsHeld:
    """Hold the signals that end a command for a block, in the main thread, which runs Python's handlers.

    They are blocked, which a child started in the block inherits; and as another thread of this process
    may take them all the same, their handlers only note them meanwhile. ``deliver`` hands those noted
    to the handlers they were meant for.
    """

    def __init__(self) -> None:
        self.arrived: list[int] = []
        self.handlers: dict[int, object] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can be set in the main thread alone; a command's signals reach it there
        for signum in _HELD_SIGNALS:
            self.handlers[signum] = signal.signal(signum, lambda signum, frame: self.arrived.append(signum))
        signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)

    def __exit__(self, *exc: object) -> None:
        if not self.handlers:
            return
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)  # runs the noting handlers for what waited
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def deliver(self) -> None:
        for signum in self.arrived:
            handler = self.handlers[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
        self.arrived.clear()


def _quantize_in_child(source: str, output: str, file_type: int, threads: int, events: Connection, parent: int) -> None:
    """The child's work: quantize, sending ("tensor", total), ("error", text) and ("status", code)."""
    # Ctrl-C reaches the whole process group; the parent alone decides, and terminates this process. The
    # signals were held since this process started: ignoring Ctrl-C now drops one that came meanwhile, and
    # SIGTERM or SIGHUP, released once this process dies with its parent, end it as they would have.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)

    import ctypes

    import llama_cpp

    from .logs import LOG_LEVEL_ERROR, log_handler

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


def _die_with(parent: int) -> None:
    """End this process when ``parent`` ends, however it ends (SIGKILL included): Linux's parent-death
    signal. Elsewhere the parent's own cleanup is all there is."""
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: not Linux
        return
    if os.getppid() != parent:  # the parent ended before the signal was asked for
        os._exit(1)
