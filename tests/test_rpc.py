"""Layers on `mixtral worker` processes through llama.cpp's RPC backend: same answers, clear failures."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mixtral_cli.chat.transcript import Transcript

from .helpers import placement_from_log, run_mixtral_process
from .workers import Worker, free_port


@pytest.fixture(autouse=True)
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's CPU is the local reference (and the workers serve it): local GPUs stay hidden."""
    monkeypatch.setenv("GGML_VK_VISIBLE_DEVICES", "")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory):
    log_dir = tmp_path_factory.mktemp("workers")
    pair = [Worker(log_dir, "--no-cache"), Worker(log_dir, "--no-cache")]
    yield pair
    for worker in pair:
        worker.stop()


@pytest.fixture(scope="module")
def f32_model(convert) -> Path:
    # F32 on both sides: the local CPU repacks quantized weights and workers do not, which changes numerics.
    return convert(type_name="F32")


def complete_json(model: Path, *args: str) -> dict:
    result = run_mixtral_process(
        "complete", "-m", model, "--temperature", "0", "-n", "24", "--raw", "--json", *args, "Once upon a time"
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def placement_log(model: Path, *args: str) -> str:
    result = run_mixtral_process("complete", "-m", model, "-n", "1", "--verbose", *args, "Hi")
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_layers_split_over_two_workers_give_the_local_answer(workers, f32_model):
    local = complete_json(f32_model)
    rpc = ",".join(w.endpoint for w in workers)
    remote = complete_json(f32_model, "--rpc", rpc, "--n-gpu-layers", "99", "--tensor-split", "1,1")

    assert remote["text"] == local["text"]
    assert remote["completion_tokens"] == local["completion_tokens"]


def test_layers_really_go_to_both_workers(workers, f32_model):
    rpc = ",".join(w.endpoint for w in workers)
    log = placement_log(f32_model, "--rpc", rpc, "--n-gpu-layers", "99", "--tensor-split", "1,1")

    assigned = dict(re.findall(r"layer +(\d+) assigned to device (\S+),", log))
    assert set(assigned.values()) == {"RPC0", "RPC1"}
    for worker in workers:
        assert re.search(rf"RPC\d\[{worker.endpoint}\] model buffer size = +[1-9]", log)


def test_one_worker_and_the_local_cpu_give_the_local_answer(workers, f32_model):
    local = complete_json(f32_model)
    remote = complete_json(f32_model, "--rpc", workers[0].endpoint, "--n-gpu-layers", "2")

    assert remote["text"] == local["text"]


def test_the_placement_shown_is_the_placement_llama_cpp_makes(workers, f32_model):
    rpc = ",".join(w.endpoint for w in workers)
    log = placement_log(f32_model, "--rpc", rpc, "--n-gpu-layers", "3", "--tensor-split", "1,2")

    planned = re.search(r"Placement: (layers [^;.]*)", log).group(1)
    assert planned == placement_from_log(log), log


def test_chat_over_workers_reuses_the_kv_cache_as_locally(workers, f32_model):
    script = "Hello\nTell me more\n/stats\n"
    args = ("chat", "-m", f32_model, "--temperature", "0", "-n", "8")
    local = run_mixtral_process(*args, input=script)
    remote = run_mixtral_process(*args, "--rpc", workers[0].endpoint, "--n-gpu-layers", "99", input=script)

    assert local.returncode == remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    evaluated = re.compile(r"prompt: (\d+) tokens evaluated of (\d+) sent")
    assert evaluated.search(remote.stderr).groups() == evaluated.search(local.stderr).groups()


def test_nothing_listening_is_one_line(f32_model):
    result = run_mixtral_process("complete", "-m", f32_model, "--rpc", f"127.0.0.1:{free_port()}", "Hi")

    assert result.returncode == 1
    assert "Nothing answers at 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_server_that_is_not_a_worker_is_one_line(f32_model):
    with _garbage_server(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4) as port:
        result = run_mixtral_process("complete", "-m", f32_model, "--rpc", f"127.0.0.1:{port}", "Hi")

    assert result.returncode == 1
    assert f"127.0.0.1:{port} does not answer as a mixtral or llama.cpp RPC worker" in result.stderr


def test_a_server_that_never_answers_is_one_line(f32_model):
    with _garbage_server(b"") as port:
        result = run_mixtral_process("complete", "-m", f32_model, "--rpc", f"127.0.0.1:{port}", "Hi")

    assert result.returncode == 1
    assert "did not answer within" in result.stderr


def test_a_worker_of_another_protocol_version_is_one_line(f32_model):
    # What a worker of protocol 6 answers to HELLO: a 28-byte reply that starts with its version.
    with _garbage_server(b"\x1c" + bytes(7) + bytes([6, 0, 0, 0]) + bytes(24)) as port:
        result = run_mixtral_process("complete", "-m", f32_model, "--rpc", f"127.0.0.1:{port}", "Hi")

    assert result.returncode == 1
    assert "speaks RPC protocol 6.0.0" in result.stderr


def test_a_bad_address_is_one_line(f32_model):
    result = run_mixtral_process("complete", "-m", f32_model, "--rpc", "127.0.0.1", "Hi")

    assert result.returncode == 1
    assert "'127.0.0.1' is not a worker address" in result.stderr


class _garbage_server:
    """A loopback server that answers every connection with fixed bytes (none: it just holds it open)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.done = threading.Event()
        self.connections: list[socket.socket] = []

    def __enter__(self) -> int:
        threading.Thread(target=self._serve, daemon=True).start()
        return self.listener.getsockname()[1]

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.recv(64)
            if self.reply:
                conn.sendall(self.reply)
            self.connections.append(conn)

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for conn in self.connections:
            conn.close()
        self.listener.close()


def test_a_worker_killed_between_turns_ends_in_one_line_and_the_chat_is_saved(f32_model, tmp_path, isolated_home):
    worker = Worker(tmp_path)
    chat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mixtral_cli",
            "chat",
            "-m",
            str(f32_model),
            "--temperature",
            "0",
            "-n",
            "8",
            "--rpc",
            worker.endpoint,
            "--n-gpu-layers",
            "99",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    chat.stdin.write("Hello\n")
    chat.stdin.flush()
    chat.stdout.readline()  # the first answer: the turn is complete and autosaved
    worker.kill()
    out, err = chat.communicate("Tell me more\n", timeout=60)

    assert chat.returncode == 1
    assert f"lost the connection to the worker at {worker.endpoint}" in err
    assert "Traceback" not in err and "backtrace" not in err.lower()
    chats = isolated_home / "mixtral" / "chats"
    (saved,) = chats.iterdir()  # the autosave alone: nothing half-written beside it
    assert [t.content for t in Transcript.load(saved).turns if t.role == "user"] == ["Hello"]


def test_a_worker_killed_mid_answer_ends_in_one_line(f32_model, tmp_path):
    worker = Worker(tmp_path)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mixtral_cli",
            "complete",
            "-m",
            str(f32_model),
            "--raw",
            "--temperature",
            "0",
            "-n",
            "100000",
            "-c",
            "8192",
            "--rpc",
            worker.endpoint,
            "--n-gpu-layers",
            "99",
            "Once",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.read(16)  # it is generating
    worker.kill()
    out, err = process.communicate(timeout=60)

    assert process.returncode == 1
    assert err.count("Error:") == 1 and f"lost the connection to the worker at {worker.endpoint}" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_stops_cleanly_on_signals(tmp_path, sig):
    worker = Worker(tmp_path)
    worker.process.send_signal(sig)

    assert worker.process.wait(timeout=30) == 0
    assert "Worker stopped." in worker.log.read_text()
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", worker.port))


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_mixtral_process("worker", "--port", str(port), timeout=60)

    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_worker_keeps_big_tensors_in_its_cache(tmp_path, convert):
    from mixtral_cli.gguf_format.header import inspect_gguf
    from mixtral_cli.sources.tiny_model import TinyMixtralSpec

    # Experts of 8 x 512 x 1024 F32 values: 16 MiB, over the 10 MiB above which llama.cpp sends hashes first.
    model = convert(TinyMixtralSpec(hidden_size=512, intermediate_size=1024, num_layers=1), "F32")
    cache = tmp_path / "cache"
    worker = Worker(tmp_path, "--cache", str(cache))
    try:
        first = complete_json(model, "--rpc", worker.endpoint, "--n-gpu-layers", "99")
        cached = sorted(p.name for p in cache.iterdir())
        second = complete_json(model, "--rpc", worker.endpoint, "--n-gpu-layers", "99")
    finally:
        worker.stop()

    # Every tensor over 10 MiB that went to the worker (all but the input embedding, which stays local).
    big = [name for name, size in inspect_gguf(model).tensor_bytes.items() if size > 10 * 2**20]
    assert len(cached) == len(big) - 1 == 4  # gate, up and down experts, and the output projection
    assert all(re.fullmatch(r"[0-9a-f]{16}", name) for name in cached)
    assert sorted(p.name for p in cache.iterdir()) == cached
    assert second["text"] == first["text"]
