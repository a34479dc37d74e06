"""Workers that misbehave after a good hello, and `mixtral worker` options that name nothing here: one line
each, never llama.cpp's abort with a C backtrace (exit 134). The fake worker is a real loopback server that
speaks the RPC hello (see /work/shared/reference/rpc.md) and then breaks off or sends garbage."""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from mixtral_cli.engine.rpc import REPLY_TIMEOUT_ENV

from .helpers import run_mixtral_process

HELLO, DEVICE_COUNT = 14, 15
HELLO_REPLY = struct.pack("<Q", 28) + bytes([7, 0, 0, 0]) + bytes(24)  # protocol 7.0.0, plain TCP
DEVICE_COUNT_REPLY = struct.pack("<Q", 4) + struct.pack("<I", 1)


class FakeWorker:
    """Answers HELLO and DEVICE_COUNT as a worker does; on llama.cpp's connection (the second: mixtral
    checks a worker on a connection of its own first) it misbehaves after ``good`` answers, or at the first
    command it has no answer for."""

    def __init__(self, misbehave: str, good: int) -> None:
        self.misbehave, self.good = misbehave, good
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._answer(conn, good=None if self.connections == 1 else self.good)

    def _answer(self, conn: socket.socket, *, good: int | None) -> None:
        answered = 0
        while True:
            header = _receive(conn, 9)
            if header is None:
                return
            command, size = struct.unpack("<BQ", header)
            if _receive(conn, size) is None:
                return
            if (good is not None and answered >= good) or command not in (HELLO, DEVICE_COUNT):
                break
            conn.sendall(HELLO_REPLY if command == HELLO else DEVICE_COUNT_REPLY)
            answered += 1
        if self.misbehave == "garbage":
            conn.sendall(struct.pack("<Q", 3) + b"\xff\xfe\xfd")  # a reply of a size no command has
        elif self.misbehave == "noise":
            conn.sendall(bytes(range(256)) * 4)
        elif self.misbehave == "goes silent":
            while _receive(conn, 1) is not None:  # reads on, answers nothing, keeps the connection open
                pass

    def close(self) -> None:
        self.listener.close()


def _receive(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@pytest.fixture
def f32_model(convert):
    return convert(type_name="F32")


@pytest.mark.parametrize("misbehave", ["hangs up", "garbage", "noise"])
@pytest.mark.parametrize("good", [1, 2], ids=["after HELLO", "after DEVICE_COUNT"])
def test_a_worker_that_misbehaves_after_a_good_hello_is_one_line(misbehave, good, f32_model):
    worker = FakeWorker(misbehave, good)
    try:
        result = run_mixtral_process(
            "complete", "-m", f32_model, "--rpc", f"127.0.0.1:{worker.port}", "-n", "2", "Hi", timeout=120
        )
    finally:
        worker.close()

    assert result.returncode == 1, result.stderr
    assert result.stderr.count("Error:") == 1
    assert f"the worker at 127.0.0.1:{worker.port}" in result.stderr
    assert "backtrace" not in result.stderr.lower() and "Traceback" not in result.stderr
    assert worker.connections >= 2  # the check's, then llama.cpp's


@pytest.mark.parametrize("good", [1, 2], ids=["after HELLO", "after DEVICE_COUNT"])
def test_a_worker_that_goes_silent_after_a_good_hello_is_one_line_once_the_timeout_passes(good, f32_model):
    worker = FakeWorker("goes silent", good)
    try:
        result = run_mixtral_process(
            "complete", "-m", f32_model, "--rpc", f"127.0.0.1:{worker.port}", "-n", "2", "Hi",
            env={**os.environ, REPLY_TIMEOUT_ENV: "2"},
            timeout=60,
        )  # fmt: skip
    finally:
        worker.close()

    assert result.returncode == 1, result.stderr
    assert result.stderr.count("Error:") == 1
    assert f"the worker at 127.0.0.1:{worker.port}" in result.stderr and "no answer for 2 s" in result.stderr
    assert "backtrace" not in result.stderr.lower() and "Traceback" not in result.stderr


@pytest.mark.parametrize("host", ["999.1.1.1", "no-such-host.invalid", "a" * 300, "1.2.3.4.5"])
def test_a_worker_host_that_is_no_address_is_a_usage_error_in_one_line(host):
    result = run_mixtral_process("worker", "--host", host, "--port", "1")

    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: --host {host[:80]!r} is no address of this machine")
    assert "Traceback" not in result.stderr and "Listening on" not in result.stderr


def test_an_unknown_worker_device_is_a_usage_error_in_one_line():
    result = run_mixtral_process("worker", "--device", "NoSuchGPU", "--port", "1")

    assert result.returncode == 2
    assert result.stderr.startswith("Error: No device named NoSuchGPU here.")
    assert "Traceback" not in result.stderr
