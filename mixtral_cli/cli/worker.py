"""`mixtral worker`: serve this machine's devices to other mixtral processes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import ThreadsOption


def worker(
    host: Annotated[
        str, typer.Option(help="Address to listen on (an IPv4 address); anything but loopback is reachable by others.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 50052,
    device: Annotated[
        list[str] | None,
        typer.Option("--device", "-d", show_default="every GPU, else the CPU", help="A device to serve; repeatable."),
    ] = None,
    threads: ThreadsOption = None,
    cache: Annotated[
        Path | None,
        typer.Option(show_default="XDG cache dir/mixtral/rpc", help="Keep received weights here for the next load."),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Keep no tensor cache.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's server log.")] = False,
) -> None:
    """Serve this machine's devices to `mixtral --rpc` on other machines, until Ctrl-C or SIGTERM.

    llama.cpp's RPC server: a client places whole layers on the devices served here. It has no
    authentication and no encryption, so it listens on 127.0.0.1 unless --host says otherwise: put it on
    a trusted network only (or reach it through an SSH tunnel or a VPN). A worker serves one client at a
    time. Weights of 10 MiB and more that clients send are kept in the cache, so the next load of the same
    model sends only their hashes.

    \b
    Examples:
        mixtral worker                                  # this machine only, port 50052
        mixtral worker --host 192.168.1.20 --port 50052 # then: mixtral chat --rpc 192.168.1.20:50052 -m ...
    """
    from ..base.paths import worker_cache_dir
    from ..engine.rpc_worker import is_loopback, listen_address, run_worker
    from ..ui.console import print_notice
    from ..ui.device_table import print_worker_banner

    cache_dir = None if no_cache else (cache or worker_cache_dir())
    if not is_loopback(listen_address(host)):
        print_notice(
            f"Listening on {host}: the RPC protocol has no authentication and no encryption; anyone who reaches "
            "this port can use these devices and read what they compute. Use it on a trusted network only."
        )
    run_worker(
        host=host,
        port=port,
        device_names=device or None,
        threads=threads,
        cache_dir=cache_dir,
        verbose=verbose,
        on_ready=print_worker_banner,
    )
    print_notice("Worker stopped.")
