"""Running the server: the model loaded, a listening socket, uvicorn, and a clean stop on SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from ..base.errors import ServerError
from .app import create_app
from .limits import KEEP_ALIVE_S, DeadlineHTTPProtocol
from .scheduler import ModelHost

if TYPE_CHECKING:
    from ..engine.model import Engine
    from .app import ServeConfig

_GRACE_S = 10  # after a stop, how long requests have to send their error before their connections are closed


def run_server(
    config: ServeConfig,
    *,
    load: Callable[[], Engine],
    keep_alive: float | None,
    sequences: int,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
) -> None:
    """Serve until SIGINT or SIGTERM: no new requests then, the ones in flight end with an error, the port is freed."""
    _log_to_stderr(config.verbose)
    listener = _listen(host, port)
    try:
        model_host = ModelHost(load, keep_alive=keep_alive, sequences=sequences)
        model_host.start()
        try:
            app = create_app(model_host, config)
            level = "info" if config.verbose else "warning"
            server = _Server(
                uvicorn.Config(
                    app,
                    log_level=level,
                    lifespan="off",
                    timeout_graceful_shutdown=_GRACE_S,
                    http=DeadlineHTTPProtocol,
                    timeout_keep_alive=KEEP_ALIVE_S,
                ),
                on_stop=model_host.stop,
            )
            address, bound_port = listener.getsockname()[:2]
            on_ready(f"http://{_url_host(address)}:{bound_port}")
            server.run(sockets=[listener])
        finally:
            model_host.stop()
            model_host.join()
    finally:
        listener.close()


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServerError(f"Cannot listen on {host}: {exc.strerror or exc}.", url=f"{host}:{port}") from exc
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise ServerError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
            url=f"{host}:{port}",
            hint="Choose another --port, or stop what uses this one.",
        ) from exc
    listener.set_inheritable(True)
    return listener


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _log_to_stderr(verbose: bool) -> None:
    log = logging.getLogger("mixtral.serve")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO if verbose else logging.WARNING)


class _Server(uvicorn.Server):
    """uvicorn's server, which also fails the requests in flight when told to stop, and then exits normally
    (uvicorn's own re-raises the signal once it has shut down, which would end the process by it)."""

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_stop()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C stops waiting for connections
        else:
            self.should_exit = True
