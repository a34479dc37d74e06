"""`mixtral worker` processes on loopback ports, as llama.cpp's own CI tests RPC: real servers, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Worker:
    """One `mixtral worker` child process serving this machine's CPU on a free loopback port."""

    def __init__(self, log_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log = log_dir / f"worker-{self.port}.log"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mixtral_cli",
                "worker",
                "--port",
                str(self.port),
                "--device",
                "CPU",
                "--threads",
                "1",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            # Our own SIGINT handling, whatever the parent's (a background job ignores SIGINT).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        self.banner = self.process.stdout.readline()  # "Serving at HOST:PORT", once it is ready
        assert self.banner.startswith("Serving at"), self.banner + self.log.read_text()
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                # That probe took the worker's one client slot for a moment: let it go back to accept().
                time.sleep(0.2)
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"worker on {self.endpoint} never listened: {self.log.read_text()}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
