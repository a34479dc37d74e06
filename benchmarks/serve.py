"""`mixtral serve` against `mixtral complete`: a loop of short calls, first-token time, concurrent clients.

The model has 8x7B's real tensor shapes but only a few of its 32 layers, at Q4_K_M (benchmarks/common.py).
Three comparisons, side by side in one run:

- ``--calls`` short `mixtral complete` calls in a loop, each a new process: loading the model every time,
  against sending the same work to one `mixtral serve` with `--server` (most of the difference is loading);
- the time to the first token of an answer: `complete`'s own (its engine already loaded, in this process)
  against a request through the server (HTTP, the queue, the engine thread);
- one client against four at once, in answered tokens per second (`--parallel` of the server).

Every run uses the repacked CPU layout (the server's, and `complete --repack`'s) and the same threads.

    python benchmarks/serve.py [--work DIR] [--layers 2] [--calls 20] [--tokens 8] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import measure, shaped_8x7b_model

from mixtral_cli.answer.request import AnswerRequest
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions
from mixtral_cli.serve.client import ServerClient

PROMPT = "Write one line about experts number {i}."


def start_server(model: Path, work: Path, threads: int, *extra: str) -> tuple[subprocess.Popen, str]:
    log = work / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "serve", "-m", str(model), "--port", "0", "--threads", str(threads)]
        + list(extra),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        match = re.search(r" at (http://\S+) ", log.read_text())
        if match:
            return process, match[1]
        if process.poll() is not None:
            raise SystemExit(f"mixtral serve failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise SystemExit("mixtral serve never listened")


def loop_of_calls(model: Path, url: str | None, *, calls: int, tokens: int, threads: int) -> float:
    """Seconds for ``calls`` `mixtral complete` processes in a row, each loading the model or using ``url``."""
    where = ["--server", url] if url else ["-m", str(model), "--repack", "--threads", str(threads)]
    started = time.perf_counter()
    for i in range(calls):
        measure([sys.executable, "-m", "mixtral_cli", "complete", *where, "-n", str(tokens), PROMPT.format(i=i)])
    return time.perf_counter() - started


def first_token_here(engine: Engine, i: int, sampling: SamplingOptions) -> float:
    from mixtral_cli.answer.job import AnswerJob

    engine.reset_cache()
    started = time.perf_counter()
    job = AnswerJob(AnswerRequest(PROMPT.format(i=i) * 8, sampling), model_path=engine.path)
    next(engine.run_alone(job.run(engine)))
    return time.perf_counter() - started


def first_token_served(client: ServerClient, i: int, sampling: SamplingOptions) -> tuple[float, float]:
    """Seconds to the first token through the server, and of those the server's own prompt evaluation."""
    started = time.perf_counter()
    answer = client.complete(AnswerRequest(prompt=PROMPT.format(i=i) * 8, sampling=sampling))
    next(answer)
    elapsed = time.perf_counter() - started
    done = [item for item in answer if not isinstance(item, str)]
    return elapsed, done[0].stats.prompt_eval_s


def tokens_per_second(url: str, clients: int, tokens: int) -> float:
    """Answered tokens per second of ``clients`` clients asking at once, each for ``tokens`` tokens."""
    sampling = SamplingOptions(temperature=0, max_tokens=tokens)
    answered = [0] * clients

    def ask(k: int) -> None:
        for item in ServerClient(url).complete(AnswerRequest(prompt=PROMPT.format(i=100 + k), sampling=sampling)):
            if not isinstance(item, str):
                answered[k] = item.stats.completion_tokens

    started = time.perf_counter()
    threads = [threading.Thread(target=ask, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(answered) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MIXTRAL_HOME", str(args.work / "home"))
    model = shaped_8x7b_model(args.work, args.layers)
    print(f"model: {model.name} ({model.stat().st_size / 2**30:.2f} GiB), threads {args.threads}", flush=True)

    server, url = start_server(model, args.work, args.threads)
    try:
        if args.calls:  # --calls 0 skips the loop
            direct = loop_of_calls(model, None, calls=args.calls, tokens=args.tokens, threads=args.threads)
            served = loop_of_calls(model, url, calls=args.calls, tokens=args.tokens, threads=args.threads)
            print(f"{args.calls} complete calls of {args.tokens} tokens in a loop:")
            print(f"  each loads the model   {direct:7.2f} s")
            print(f"  --server               {served:7.2f} s   ({direct / served:.2f}x faster)")

        sampling = SamplingOptions(temperature=0, max_tokens=4)
        options = EngineOptions(repack=True, threads=args.threads)
        client = ServerClient(url)
        here, there, served_prompt = [], [], []
        with Engine(model, options) as engine:
            # In turns, so that the machine's other load weighs on both alike; every prompt is new to both.
            for i in range(args.repeat):
                here.append(first_token_here(engine, i, sampling))
                elapsed, prompt_s = first_token_served(client, i, sampling)
                there.append(elapsed)
                served_prompt.append(prompt_s)
        here_s, there_s = statistics.median(here), statistics.median(there)
        overhead_s = statistics.median(t - p for t, p in zip(there, served_prompt, strict=True))
        print(f"first token (median of {args.repeat}, a prompt of ~{len(PROMPT.split()) * 8} words):")
        print(f"  complete's own engine  {here_s * 1000:7.1f} ms")
        print(f"  through the server     {there_s * 1000:7.1f} ms   ({there_s / here_s:.2f}x)")
        print(f"  of which not the server's prompt evaluation (HTTP, queue, first sample): {overhead_s * 1000:.1f} ms")
    finally:
        server.terminate()
        server.wait()

    server, url = start_server(model, args.work, args.threads, "--parallel", str(args.parallel))
    try:
        tokens = args.tokens * 4
        one = tokens_per_second(url, 1, tokens)
        many = tokens_per_second(url, args.parallel, tokens)
        print(f"answered tokens per second, --parallel {args.parallel}, {tokens} tokens per client:")
        print(f"  one client             {one:7.2f}")
        print(f"  {args.parallel} clients at once     {many:7.2f}   ({many / one:.2f}x)")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
