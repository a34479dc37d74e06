"""Decode speed and first-token time with layers on `mixtral worker` processes, against the local run.

The model has 8x7B's real tensor shapes (hidden 4096, FFN 14336, 32 heads, 8 KV heads, 8 experts) but only
a few of its 32 layers, at Q4_K_M. The workers run on this machine, on loopback: what this measures is the
RPC path's own cost (serialisation, round trips, a graph per device), not a network's. Every worker sits
behind a byte-counting proxy, so the bytes sent per generated token are counted, not estimated: a run of
1 token and a run of 1 + N tokens from the same prompt differ by exactly N tokens of traffic. Every run
uses llama.cpp's default (repacked) CPU layout, so the local rows decode as `mixtral complete` does today;
workers keep weights in the file's layout, as llama.cpp's RPC server always does.

    python benchmarks/rpc.py [--work DIR] [--layers 2] [--tokens 64] [--threads 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import greedy_complete_command, measure, shaped_8x7b_model

PROMPT = (
    "Mixtral is a sparse mixture of experts: each layer holds eight feed-forward blocks and a router that "
    "sends every token to two of them. "
) * 6


class CountingProxy:
    """Forwards one loopback port to a worker and counts the bytes each way."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sent = self.received = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for end in (client, upstream):  # as ggml's own sockets: no Nagle delay on small messages
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for source, sink, outbound in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(source, sink, outbound), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        try:
            while data := source.recv(1 << 20):
                if outbound:
                    self.sent += len(data)
                else:
                    self.received += len(data)
                sink.sendall(data)
            # Pass the end on: a worker serves one client at a time and must see this one leave. (close()
            # would not do it while the other direction's thread still waits in recv on the same socket.)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    @property
    def total(self) -> int:
        return self.sent + self.received


def start_worker(work: Path, name: str, threads: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = work / f"rpc-cache-{name}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mixtral_cli",
            "worker",
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--cache",
            str(cache),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    process.stdout.readline()
    time.sleep(1)
    return process, port


def complete(model: Path, tokens: int, threads: int, extra: list[str]) -> dict:
    command = greedy_complete_command(model, tokens, "-t", str(threads), "-c", "1024", "--repack", *extra, PROMPT)
    _, _, stdout, _ = measure(command)
    return json.loads(stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MIXTRAL_HOME", str(args.work / "home"))
    model = shaped_8x7b_model(args.work, args.layers)

    workers = [start_worker(args.work, name, args.threads) for name in ("a", "b")]
    proxies = [CountingProxy(port) for _, port in workers]
    endpoints = [f"127.0.0.1:{p.port}" for p in proxies]
    configs = {
        "local": [],
        "1 worker + local CPU (default split)": ["--rpc", endpoints[0]],
        "1 worker (every layer)": ["--rpc", endpoints[0], "-ngl", "99"],
        "2 workers (every layer, 1:1)": ["--rpc", ",".join(endpoints), "-ngl", "99", "-ts", "1,1"],
    }
    try:
        for extra in configs.values():  # fills the workers' tensor caches: later loads send hashes only
            complete(model, 1, args.threads, extra)
        results: dict[str, dict] = {}
        for _ in range(args.repeat):
            for name, extra in configs.items():
                before = sum(p.total for p in proxies)
                short = complete(model, 1, args.threads, extra)
                middle = sum(p.total for p in proxies)
                full = complete(model, 1 + args.tokens, args.threads, extra)
                after = sum(p.total for p in proxies)
                per_token = ((after - middle) - (middle - before)) / args.tokens
                timings = full["timings"]
                best = results.get(name)
                if best is None or timings["decode_tokens_per_second"] > best["decode_tps"]:
                    results[name] = {
                        "decode_tps": timings["decode_tokens_per_second"],
                        # Graphs run asynchronously on workers: the first token is there once it is sampled.
                        "first_token_s": short["timings"]["prompt_eval_s"] + short["timings"]["decode_s"],
                        "bytes_per_token": per_token,
                    }
    finally:
        for process, _ in workers:
            process.terminate()
            process.wait()

    local = results["local"]
    print(
        f"\n{model.name} ({model.stat().st_size / 2**30:.2f} GiB), {args.tokens} greedy tokens, "
        f"{args.threads} threads, best of {args.repeat}, workers on loopback"
    )
    print(f"{'':40} {'decode tok/s':>12} {'x local':>8} {'first token':>12} {'x local':>8} {'bytes/token':>12}")
    for name, r in results.items():
        print(
            f"{name:40} {r['decode_tps']:12.2f} {r['decode_tps'] / local['decode_tps']:8.3f} "
            f"{r['first_token_s']:11.2f}s {r['first_token_s'] / local['first_token_s']:8.3f} "
            f"{r['bytes_per_token']:12,.0f}"
        )


if __name__ == "__main__":
    main()
