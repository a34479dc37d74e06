"""Decode speed and first-token time: `mixtral complete` against llama.cpp's own llama-completion and
llama-cpp-python's high-level streaming API, on the same GGUF, threads, prompt and token count, in one run.

The model is a random Mixtral of 791M parameters (hidden 1024, 8 layers, 8 experts, top-2) quantized to
Q4_K_M by `mixtral quantize`. llama-completion comes from scripts/build-llama-tools.sh, built from the
llama.cpp that llama-cpp-python vendors (the same source as the engine's library), unless --llama-bin
names a folder that has it. Each contender runs in its own process, greedy, several times in turn; the best
run of each is kept. Also times `mixtral --help`.

    python benchmarks/decode.py [--llama-bin DIR] [--work DIR] [--tokens 128] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import bench_checkpoint, greedy_complete_command, llama_tools, measure

PARAGRAPH = (
    "Mixtral is a sparse mixture of experts: each layer holds eight feed-forward blocks and a router that "
    "sends every token to two of them, so a token pays for thirteen billion parameters out of forty-seven. "
)

LLAMA_CPP_PYTHON_RUN = """
import json, sys, time
from llama_cpp import Llama
model, prompt, tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, flash_attn=True, verbose=False)
started = time.perf_counter()
first = None
n = 0
for chunk in llm.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
    n += 1
    if first is None:
        first = time.perf_counter()
end = time.perf_counter()
print(json.dumps({"first_token_s": first - started, "decode_tps": (n - 1) / (end - first), "tokens": n}))
"""


def bench_model(work: Path) -> Path:
    model = work / "bench-Q4_K_M.gguf"
    if not model.exists():
        subprocess.run(
            [sys.executable, "-m", "mixtral_cli", "quantize", bench_checkpoint(work), "--type", "Q4_K_M", "-o", model],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return model


def run_llama_completion(
    bin_dir: Path, model: Path, prompt_file: Path, tokens: int, threads: int, extra: tuple[str, ...] = ()
) -> dict:
    _, _, _, stderr = measure(
        [
            str(bin_dir / "llama-completion"),
            "-m",
            str(model),
            "-f",
            str(prompt_file),
            "-n",
            str(tokens),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "-c",
            "2048",
            "--temp",
            "0",
            "-no-cnv",
            "--no-display-prompt",
            *extra,
        ]
    )
    prompt = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", stderr)
    decode = re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", stderr)
    # Sampling (a grammar included) is timed apart from decoding, for every token of the run.
    sampling = re.search(r"sampling time =\s*([\d.]+) ms", stderr)
    if not prompt or not decode:
        raise SystemExit(f"could not read llama-completion's timings:\n{stderr[-2000:]}")
    return {
        "first_token_s": float(prompt[1]) / 1000,
        "decode_tps": int(decode[2]) / (float(decode[1]) / 1000),
        "tokens": int(decode[2]) + 1,
        "decode_s": float(decode[1]) / 1000,
        "sampling_s": float(sampling[1]) / 1000 if sampling else 0.0,
    }


def run_llama_cpp_python(model: Path, prompt: str, tokens: int, threads: int) -> dict:
    _, _, stdout, _ = measure(
        [sys.executable, "-c", LLAMA_CPP_PYTHON_RUN, str(model), prompt, str(tokens), str(threads)]
    )
    return json.loads(stdout)


def run_mixtral(model: Path, prompt_file: Path, tokens: int, threads: int) -> dict:
    command = greedy_complete_command(model, tokens, "-t", str(threads), "-c", "2048")
    _, _, stdout, _ = measure(command, stdin=prompt_file)
    data = json.loads(stdout)
    return {
        "first_token_s": data["timings"]["prompt_eval_s"],
        "decode_tps": data["timings"]["decode_tokens_per_second"],
        "tokens": data["completion_tokens"],
    }


def help_seconds(repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mixtral_cli", "--help"], check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def parse_arguments(description: str) -> argparse.Namespace:
    """The options of the benchmarks that race llama-completion; the work folder exists afterwards."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--llama-bin", type=Path, help="a folder with llama-completion (default: build-llama-tools.sh's)"
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    return args


def main() -> None:
    args = parse_arguments(__doc__)

    bin_dir = args.llama_bin or llama_tools()
    model = bench_model(args.work)
    prompt = PARAGRAPH * 16
    prompt_file = args.work / "prompt.txt"
    prompt_file.write_text(prompt)

    contenders = {
        "llama-completion": lambda: run_llama_completion(bin_dir, model, prompt_file, args.tokens, args.threads),
        "llama-cpp-python stream": lambda: run_llama_cpp_python(model, prompt, args.tokens, args.threads),
        "mixtral complete": lambda: run_mixtral(model, prompt_file, args.tokens, args.threads),
    }
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, run in contenders.items():
            result = run()
            if name not in best or result["decode_tps"] > best[name]["decode_tps"]:
                best[name] = {
                    **result,
                    "first_token_s": min(result["first_token_s"], best.get(name, result)["first_token_s"]),
                }

    reference = best["llama-completion"]
    print(
        f"model: {model.name} ({model.stat().st_size / 2**20:.0f} MiB), {args.threads} threads, "
        f"prompt {len(prompt)} chars, {args.tokens} tokens, best of {args.repeat}"
    )
    print(f"{'':<26}{'decode tok/s':>14}{'x llama.cpp':>13}{'first token s':>15}{'x llama.cpp':>13}{'tokens':>8}")
    for name, result in best.items():
        print(
            f"{name:<26}{result['decode_tps']:>14.1f}{result['decode_tps'] / reference['decode_tps']:>13.3f}"
            f"{result['first_token_s']:>15.3f}{result['first_token_s'] / reference['first_token_s']:>13.3f}"
            f"{result['tokens']:>8}"
        )
    print("targets: mixtral decode >= 0.98x llama.cpp, first token <= 1.05x")
    print(f"mixtral --help: {help_seconds(5):.3f} s (target < 0.3 s)")


if __name__ == "__main__":
    main()
