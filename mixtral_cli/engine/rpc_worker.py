"""Running a worker: llama.cpp's RPC server in a thread, stopped by Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ..base.errors import WorkerError, WorkerOptionError
from .devices import Device


def run_worker(
    *,
    host: str,
    port: int,
    device_names: Sequence[str] | None,
    threads: int | None,
    cache_dir: Path | None,
    verbose: bool,
    on_ready: Callable[[str, Sequence[Device], str | None], None],
) -> None:
    """Serve until SIGINT or SIGTERM; returns then, with nothing left behind."""
    from ..base.system import physical_cores
    from .rpc import require_rpc, serve, worker_devices

    require_rpc()
    address = listen_address(host)
    endpoint = f"{address}:{port}"
    _check_port_free(address, port)
    devices = worker_devices(device_names)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)  # ggml's server does not create it
    on_ready(endpoint, devices, str(cache_dir) if cache_dir else None)
    if not verbose:
        _silence_c_stdout()

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    # The server's accept loop never returns while it serves, and ctypes releases the GIL around it: it runs
    # in a daemon thread, so the main thread stays free to take signals, and process exit ends it.
    server = threading.Thread(
        target=serve,
        args=(endpoint, devices),
        kwargs={"threads": threads or physical_cores(), "cache_dir": str(cache_dir) if cache_dir else None},
        daemon=True,
        name="rpc-server",
    )
    server.start()
    try:
        while not stop.wait(0.2):
            if not server.is_alive():
                raise WorkerError(f"llama.cpp's RPC server at {endpoint} stopped.", endpoint=endpoint)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def listen_address(host: str) -> str:
    """``host`` as the IPv4 address ggml's server takes (it resolves no names); a usage error if it is none."""
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError) as exc:  # gaierror; UnicodeError for a name IDNA cannot encode
        raise WorkerOptionError(
            f"--host {host[:80]!r} is no address of this machine: {_reason(exc)}.",
            endpoint=host,
            hint="Give an IPv4 address this machine has (`ip -4 addr`), or 127.0.0.1 for this machine alone.",
        ) from None


def is_loopback(address: str) -> bool:
    """Whether only this machine can reach ``address`` (as listen_address gives it)."""
    import ipaddress

    return ipaddress.ip_address(address).is_loopback


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__


def _check_port_free(address: str, port: int) -> None:
    """Bind once from Python: ggml's server would only print 'Failed to create server socket' and return."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))
    except OSError as exc:
        raise WorkerError(
            f"Cannot listen on {address}:{port}: {exc.strerror or exc}.",
            endpoint=f"{address}:{port}",
            hint="Choose another --port, or stop what uses this one.",
        ) from exc
    finally:
        probe.close()


def _silence_c_stdout() -> None:
    """ggml's server prints a line per client to C's stdout; our own output is already out."""
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
