"""Batched decoding: `mixtral serve --parallel 8` against llama.cpp's own `llama-server -np 8`, and `mixtral batch`.

Side by side in one run (both servers up at once, measured in ``--repeat`` pairs of runs, one server then the
other with the order alternating, so that a pair shares the machine's load of the moment; the medians count), on
the same GGUF, threads, context per sequence (512) and greedy prompts:

- aggregate generated tokens per second, time to first token and the steady decode rate (tokens per second
  while every client decodes: no prompts, as llama-batched-bench's S_TG) with 1, 2, 4 and 8 concurrent clients,
  each streaming one /v1/completions answer of ``--tokens`` tokens, against `mixtral serve --parallel 8` and
  against `llama-server -np 8` (built from the llama.cpp llama-cpp-python vendors, scripts/build-llama-tools.sh),
  with the ratio; and what llama-batched-bench measures for the same model, its B=8 over B=1 decode gain printed
  beside both servers' (the target: at every B, ≥ 0.95× llama-server; B=8 over B=1 at least
  llama-batched-bench's). Each server evaluates every prompt whole (llama-server's prompt cache is off
  per request: `mixtral serve` reuses a KV prefix only for the conversation a sequence holds);
- `mixtral batch` of ``--requests`` requests against the same requests one `mixtral complete` at a time, and
  through `mixtral serve --parallel 1`.

The mini model is a random Mixtral of 791M parameters (hidden 1024, 8 layers, 8 experts, top-2); the 8x7B-shaped
one has 8x7B's real tensors but ``--layers`` of its 32 layers; both Q4_K_M, repacked (both servers' default).

    python benchmarks/batch.py [--model mini|8x7b] [--layers 4] [--work DIR] [--threads 2] [--tokens 48] [--repeat 5]
                               [--requests 64] [--batch-tokens 16] [--parts serve,batch-file]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import bench_checkpoint, llama_tools, measure, shaped_8x7b_model

CLIENTS = (1, 2, 4, 8)
CTX_PER_SEQUENCE = 512
PROMPT = "Write one line about expert number {i}, and why the router sends tokens to it."


def mini_model(work: Path) -> Path:
    model = work / "bench-Q4_K_M.gguf"
    if not model.exists():
        print("quantizing the mini model to Q4_K_M ...", flush=True)
        measure([sys.executable, "-m", "mixtral_cli", "quantize", str(bench_checkpoint(work)), "--type", "Q4_K_M",
                 "-o", str(model)])  # fmt: skip
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server failed:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server never became ready")


def start_mixtral(model: Path, work: Path, threads: int, parallel: int) -> tuple[subprocess.Popen, str]:
    port, log = free_port(), work / f"mixtral-serve-{parallel}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "serve", "-m", str(model), "--port", str(port), "--threads",
         str(threads), "--parallel", str(parallel), "--ctx-size", str(CTX_PER_SEQUENCE), "--repack"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, log)
    return process, url


def start_llama_server(model: Path, work: Path, threads: int, parallel: int) -> tuple[subprocess.Popen, str]:
    port, log = free_port(), work / "llama-server.log"
    process = subprocess.Popen(
        [str(llama_tools() / "llama-server"), "-m", str(model), "--port", str(port), "-t", str(threads), "-tb",
         str(threads), "-np", str(parallel), "-c", str(CTX_PER_SEQUENCE * parallel), "--no-kv-unified",
         "--no-webui", "-fa", "auto"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, log)
    return process, url


def one_answer(url: str, i: int, tokens: int, fields: dict | None = None) -> tuple[float, list[float], float, int]:
    """When it started, when each piece of text came and when it ended (perf_counter), and the completion tokens
    of one greedy streamed answer (``fields``: the server's own request fields)."""
    body = {"prompt": PROMPT.format(i=i), "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **(fields or {})}  # fmt: skip
    request = urllib.request.Request(
        f"{url}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    started, arrivals, used = time.perf_counter(), [], 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                arrivals.append(time.perf_counter())
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
    ended = time.perf_counter()
    return started, arrivals or [ended], ended, used or len(arrivals)  # llama-server: a token a chunk


def steady_decode_rate(results: list[tuple[float, list[float], float, int]]) -> float:
    """Tokens per second while every client decodes (from the last first token to the first end): what
    llama-batched-bench's S_TG measures, B sequences decoding together, without the prompts. A piece of text may
    hold several tokens (or a token none): each client's pieces count its tokens in proportion."""
    start, end = max(r[1][0] for r in results), min(r[2] for r in results)
    if end <= start:
        return 0.0
    tokens = sum(sum(start < t <= end for t in r[1]) * r[3] / len(r[1]) for r in results)
    return tokens / (end - start)


def clients_at_once(url: str, clients: int, tokens: int, offset: int, fields: dict | None = None) -> tuple[float, ...]:
    """Of ``clients`` at once: aggregate generated tokens per second, the mean time to first token, and the
    steady decode rate (``steady_decode_rate``)."""
    results: list[tuple[float, list[float], float, int]] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(one_answer(url, offset + i, tokens, fields)))
        for i in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return (
        sum(r[3] for r in results) / wall,
        sum(r[1][0] - r[0] for r in results) / len(results),
        steady_decode_rate(results),
    )


def serve_side_by_side(model: Path, work: Path, threads: int, tokens: int, repeat: int) -> dict[str, dict[int, list]]:
    """Both servers up at once, measured in pairs (each B, each repeat: one server then the other, the order
    alternating), so that a pair shares the machine's load of the moment: every run's results, per server."""
    servers = {"mixtral serve --parallel 8": start_mixtral, "llama-server -np 8": start_llama_server}
    started = {name: start(model, work, threads, 8) for name, start in servers.items()}
    # Every prompt evaluated whole by both: mixtral serve reuses a sequence's KV prefix only for the conversation
    # it holds (an answer must not depend on what else was asked), llama-server for any prompt sharing a start.
    fields = {"mixtral serve --parallel 8": {}, "llama-server -np 8": {"cache_prompt": False}}
    measured: dict[str, dict[int, list]] = {name: {b: [] for b in CLIENTS} for name in servers}
    try:
        for _, url in started.values():
            one_answer(url, 999, 4)  # warm: weights paged in, kernels ready
        for b in CLIENTS:
            for run in range(repeat):
                turns = list(started.items())
                for name, (_, url) in turns if run % 2 == 0 else reversed(turns):
                    # prompts no run used before: llama-server's prompt cache would answer a repeat's at once
                    result = clients_at_once(url, b, tokens, offset=1000 * run + 100 * b, fields=fields[name])
                    measured[name][b].append(result)
            print(f"  {b} clients measured", flush=True)
    finally:
        for process, _ in started.values():
            process.terminate()
            process.wait()
    return measured


def batched_bench(model: Path, threads: int, tokens: int) -> tuple[str, dict[int, float]]:
    """llama-batched-bench's table for the same model and its decode tok/s at each B.

    Its first row is B=8 again, unread: the first rows after loading fault in the pages of every expert they
    route to for the first time (the servers are warm), which made B=1 look slow and B=8 over B=1 large."""
    warm_first = ",".join(map(str, (CLIENTS[-1], *CLIENTS)))
    done = subprocess.run(
        [str(llama_tools() / "llama-batched-bench"), "-m", str(model), "-c", str(CTX_PER_SEQUENCE * 8), "-b", "512",
         "-ub", "512", "-npp", "24", "-ntg", str(tokens), "-npl", warm_first, "-t", str(threads),
         "-tb", str(threads), "-fa", "auto", "--no-kv-unified"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    rates = {}
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rates[int(cells[2])] = float(cells[7])  # B, and S_TG t/s (cells: PP, TG, B, N_KV, T_PP, S_PP, T_TG, S_TG, ...)
    return "\n".join(table), rates


def batch_file_side_by_side(model: Path, work: Path, threads: int, requests: int, tokens: int) -> dict[str, float]:
    """Seconds for ``requests`` answers: `mixtral batch`, one `complete` process each, `serve --parallel 1`."""
    lines = [
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
                    "body": {"prompt": PROMPT.format(i=i), "max_tokens": tokens, "temperature": 0}})
        for i in range(requests)
    ]  # fmt: skip
    batch_input = work / "requests.jsonl"
    batch_input.write_text("\n".join(lines) + "\n")
    seconds = {}
    output = work / "answers.jsonl"
    output.unlink(missing_ok=True)
    wall, _, _, said = measure(
        [sys.executable, "-m", "mixtral_cli", "batch", str(batch_input), "-o", str(output), "-m", str(model),
         "--threads", str(threads), "--parallel", "8", "--ctx-size", str(CTX_PER_SEQUENCE), "--yes"]
    )  # fmt: skip
    seconds["mixtral batch --parallel 8"] = wall
    print(f"  mixtral batch: {wall:.1f} s; its own summary: {said.strip().splitlines()[-1]}", flush=True)
    started = time.perf_counter()
    for i in range(requests):
        measure([sys.executable, "-m", "mixtral_cli", "complete", "-m", str(model), "--raw", "--temperature", "0",
                 "-n", str(tokens), "--threads", str(threads), "--ctx-size", str(CTX_PER_SEQUENCE), "--repack",
                 PROMPT.format(i=i)])  # fmt: skip
    seconds["one `complete` at a time"] = time.perf_counter() - started
    print(f"  one complete at a time: {seconds['one `complete` at a time']:.1f} s", flush=True)
    process, url = start_mixtral(model, work, threads, 1)
    try:
        started = time.perf_counter()
        for i in range(requests):
            one_answer(url, i, tokens)
        seconds["serve --parallel 1, one request at a time"] = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mini", "8x7b"), default="mini")
    parser.add_argument("--layers", type=int, default=4, help="of the 8x7B-shaped model's 32")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=48, help="greedy tokens per client")
    parser.add_argument("--repeat", type=int, default=5, help="pairs of runs of each measurement; medians count")
    parser.add_argument("--requests", type=int, default=64, help="requests of the batch-file comparison")
    parser.add_argument("--batch-tokens", type=int, default=16, help="tokens per request there")
    parser.add_argument(
        "--parts", default="serve,batch-file", help="serve (the servers, llama-batched-bench), batch-file, or both"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = mini_model(args.work) if args.model == "mini" else shaped_8x7b_model(args.work, args.layers)
    print(f"model {model.name}, {args.threads} threads, {CTX_PER_SEQUENCE} tokens of context per sequence, "
          f"{args.tokens} greedy tokens per client\n", flush=True)  # fmt: skip

    parts = set(args.parts.split(","))
    if "serve" in parts:
        serve_part(model, args)
    if "batch-file" in parts:
        batch_file_part(model, args)


def serve_part(model: Path, args: argparse.Namespace) -> None:
    measured = serve_side_by_side(model, args.work, args.threads, args.tokens, args.repeat)
    ours, theirs = measured["mixtral serve --parallel 8"], measured["llama-server -np 8"]
    print(f"{'clients':>7}  {'mixtral tok/s':>13}  {'llama-server tok/s':>18}  {'ratio':>5}  {'ratio range':>11}  "
          f"{'mixtral TTFT s':>14}  {'llama-server TTFT s':>19}  {'mixtral decode':>14}  "
          f"{'llama-server decode':>19}")  # fmt: skip
    for b in CLIENTS:
        # the median of each pair's ratio: the machine's load drifts between pairs more than within one
        ratios = [o[0] / t[0] for o, t in zip(ours[b], theirs[b], strict=True)]
        mine, its = median_of(ours[b]), median_of(theirs[b])
        print(f"{b:>7}  {mine[0]:>13.1f}  {its[0]:>18.1f}  {statistics.median(ratios):>5.2f}  "
              f"{min(ratios):>5.2f}-{max(ratios):<5.2f}  {mine[1]:>14.3f}  {its[1]:>19.3f}  {mine[2]:>14.1f}  "
              f"{its[2]:>19.1f}")  # fmt: skip
    table, rates = batched_bench(model, args.threads, args.tokens)
    print(f"\nllama-batched-bench (same model, threads, context):\n{table}")
    top, mine, its = CLIENTS[-1], {b: median_of(ours[b]) for b in CLIENTS}, {b: median_of(theirs[b]) for b in CLIENTS}
    print(
        f"\nB={top} over B=1 (medians): aggregate tok/s, mixtral serve {mine[top][0] / mine[1][0]:.2f}x, llama-server "
        f"{its[top][0] / its[1][0]:.2f}x; steady decode (no prompts), mixtral serve "
        f"{mine[top][2] / mine[1][2]:.2f}x, llama-server {its[top][2] / its[1][2]:.2f}x, "
        f"llama-batched-bench (S_TG) {rates[top] / rates[1]:.2f}x"
    )


def median_of(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    """Each measure's median over ``runs``."""
    return tuple(statistics.median(column) for column in zip(*runs, strict=True))


def batch_file_part(model: Path, args: argparse.Namespace) -> None:
    seconds = batch_file_side_by_side(model, args.work, args.threads, args.requests, args.batch_tokens)
    base = seconds["mixtral batch --parallel 8"]
    print(f"\n{args.requests} requests of {args.batch_tokens} greedy tokens:")
    for name, value in seconds.items():
        print(f"  {name:<45} {value:8.1f} s  ({value / base:.2f}x mixtral batch's time)")


if __name__ == "__main__":
    main()
