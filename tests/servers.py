"""`mixtral serve` child processes on free loopback ports: real servers, real sockets, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class Server:
    """One `mixtral serve` child process; ``url`` once it listens (it loads the model first)."""

    def __init__(self, model: Path, home: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.model = model
        self.log = home / f"serve-{time.monotonic_ns()}.log"
        home.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mixtral_cli", "serve", "-m", str(model), "--port", "0", "--threads", "1", *extra],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            env={**os.environ, "MIXTRAL_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r" at (http://\S+) ", self.log.read_text())
            if match:
                return match[1]
            if self.process.poll() is not None:
                raise RuntimeError(f"mixtral serve exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise TimeoutError(f"mixtral serve never listened: {self.log.read_text()}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self, timeout: float) -> socket.socket:
        """A raw connection to the server, every read and write on it bounded by ``timeout``."""
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        conn.settimeout(timeout)
        return conn

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/health", timeout=10) as response:
            return json.loads(response.read())

    def openai_client(self, api_key: str = "unused"):  # noqa: ANN201 - an openai.OpenAI
        """The official client, against this server's /v1, with no retries (a refusal must show as it is)."""
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        return self.process.returncode


def raw_post(path: str, body: bytes, *, length: int | None = None) -> bytes:
    """A POST of ``body`` as JSON, its Content-Length ``length`` where given (a body sent in parts, or a lie)."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body) if length is None else length}\r\n\r\n".encode() + body


def raw_response(conn: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of one answer (Content-Length framed), read in a bounded loop."""
    data = b""
    for _ in range(10_000):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            )
            if len(rest) >= length:
                return int(head.split()[1]), json.loads(rest[:length])
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    raise AssertionError(f"no complete answer: {data!r}")
