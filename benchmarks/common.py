"""What the benchmarks share: the model shape, a work folder, timing of child processes, llama.cpp's own tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from mixtral_cli.sources.tiny_model import TinyMixtralSpec, build_tiny_mixtral

LLAMA_CPP_PYTHON_NAME, LLAMA_CPP_PYTHON_VERSION = "llama-cpp-python", "0.3.36"
LLAMA_TOOLS_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build-llama-tools.sh"
# The shape of the reference figures in shared/reference/testing-with-real-parts.md: 791M parameters.
BENCH_SPEC = TinyMixtralSpec(
    hidden_size=1024, intermediate_size=3584, num_layers=8, num_experts=8, num_heads=8, num_kv_heads=2
)


def bench_checkpoint(work: Path) -> Path:
    """The 1.58 GB bf16 checkpoint of BENCH_SPEC, built once into ``work``."""
    checkpoint = work / "checkpoint"
    if not (checkpoint / "model.safetensors").exists():
        print("building the checkpoint ...", flush=True)
        build_tiny_mixtral(checkpoint, BENCH_SPEC)
    return checkpoint


def greedy_complete_command(model: Path, tokens: int, *options: str) -> list[str]:
    """`mixtral complete` on a raw prompt, greedy, with --json timings; ``options`` then the prompt (or stdin)."""
    return [sys.executable, "-m", "mixtral_cli", "complete", "-m", str(model), "--raw", "--json", "--temperature", "0",
            "-n", str(tokens), *options]  # fmt: skip


def measure(command: list[str], *, stdin: Path | None = None) -> tuple[float, int, str, str]:
    """Wall seconds, peak RSS in bytes, stdout and stderr of one child process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(stdin or os.devnull, "rb") as inp:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=inp)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss * 1024, stdout, stderr


def fetch_llama_cpp(work: Path) -> Path:
    """llama.cpp's source tree, from llama-cpp-python's sdist as pip downloads it (from the registry pip is set
    up for, checked by pip against the registry's hashes)."""
    tree = work / "llama.cpp"
    if tree.exists():
        return tree
    sdists = work / "sdist"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", sdists,
         f"{LLAMA_CPP_PYTHON_NAME}=={LLAMA_CPP_PYTHON_VERSION}"],
        check=True,
    )  # fmt: skip
    with tarfile.open(sdists / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz") as tar:
        tar.extractall(work / "src", filter="data")
    shutil.move(next((work / "src").glob("*/vendor/llama.cpp")), tree)
    return tree


def llama_tools() -> Path:
    """The folder of llama.cpp's own tools (llama-completion, llama-bench, ...): scripts/build-llama-tools.sh
    builds them from the llama.cpp that llama-cpp-python vendors, once per version, and prints the folder."""
    done = subprocess.run(
        ["bash", LLAMA_TOOLS_SCRIPT],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    return Path(done.stdout.strip().splitlines()[-1])


def shaped_8x7b_model(work: Path, layers: int) -> Path:
    """A random Mixtral with 8x7B's real tensor shapes but only ``layers`` of its 32 layers, at Q4_K_M."""
    model = work / f"8x7b-shaped-{layers}-layers-Q4_K_M.gguf"
    if model.exists():
        return model
    spec = TinyMixtralSpec(
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=layers,
        num_experts=8,
        num_heads=32,
        num_kv_heads=8,
        shards=4 * layers + 2,  # a few tensors per shard: one shard is in memory while it is written
    )
    checkpoint = work / f"8x7b-shaped-{layers}-layers"
    if not (checkpoint / "config.json").exists():
        print(f"building the {layers}-layer 8x7B-shaped checkpoint ...", flush=True)
        build_tiny_mixtral(checkpoint, spec)
    print("quantizing to Q4_K_M ...", flush=True)
    measure([sys.executable, "-m", "mixtral_cli", "quantize", str(checkpoint), "--type", "Q4_K_M", "-o", str(model)])
    return model
