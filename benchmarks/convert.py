"""Conversion time and peak memory: `mixtral quantize` against llama.cpp's own convert_hf_to_gguf.py.

Both convert the same bf16 checkpoint (a random Mixtral of about 1.6 GB from `mixtral tiny`) to F16 in one
run, each in its own process, and the script prints both and the ratios. The reference converter comes
from llama-cpp-python's source distribution, as pip downloads it (unless --llama-cpp names a tree), and needs
torch and transformers, which the test extra installs.

    python benchmarks/convert.py [--llama-cpp DIR] [--work DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import BENCH_SPEC, bench_checkpoint, fetch_llama_cpp, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-cpp", type=Path, help="a llama.cpp source tree (default: from the sdist)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best time is kept")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    checkpoint = bench_checkpoint(args.work)
    size = (checkpoint / "model.safetensors").stat().st_size
    script = (args.llama_cpp or fetch_llama_cpp(args.work)) / "convert_hf_to_gguf.py"
    # The reference imports its own gguf-py from the tree it ships in.
    env_path = str(script.parent / "gguf-py")
    ours_out, theirs_out = args.work / "ours.gguf", args.work / "theirs.gguf"
    commands = {
        "mixtral quantize": [
            sys.executable,
            "-m",
            "mixtral_cli",
            "quantize",
            str(checkpoint),
            "--type",
            "F16",
            "-o",
            str(ours_out),
            "--force",
        ],
        "convert_hf_to_gguf.py": [
            "env",
            f"PYTHONPATH={env_path}",
            sys.executable,
            str(script),
            str(checkpoint),
            "--outtype",
            "f16",
            "--outfile",
            str(theirs_out),
        ],
    }
    results: dict[str, tuple[float, int]] = {}
    for _ in range(args.repeat):
        for name, command in commands.items():
            seconds, rss, _, _ = measure(command)
            best = results.get(name, (float("inf"), 0))
            results[name] = (min(best[0], seconds), max(best[1], rss))

    print(f"checkpoint: {size / 1e9:.2f} GB bf16, {BENCH_SPEC}")
    print(f"{'converter':<24}{'time (s)':>10}{'peak RSS (MB)':>16}{'output (MB)':>14}")
    for name, (seconds, rss) in results.items():
        out = ours_out if name.startswith("mixtral") else theirs_out
        print(f"{name:<24}{seconds:>10.1f}{rss / 1e6:>16.0f}{out.stat().st_size / 1e6:>14.0f}")
    (ours_t, ours_rss), (ref_t, ref_rss) = results["mixtral quantize"], results["convert_hf_to_gguf.py"]
    print(
        f"ratios mixtral/reference: time {ours_t / ref_t:.2f}x (target <= 1.2), "
        f"peak RSS {ours_rss / ref_rss:.2f}x (target < 1)"
    )


if __name__ == "__main__":
    main()
