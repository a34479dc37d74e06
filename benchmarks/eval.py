"""`mixtral eval` against llama-perplexity's two passes on the same pair and text, side by side.

The pair: an 8x7B-shaped model (Mixtral 8x7B's real tensor shapes, a few layers of random weights; see
common.py) at Q8_0 as the reference and Q4_K_M as the model. llama-perplexity runs as its README says:
``--kl-divergence-base FILE`` over the reference (it writes every scored position's log-probabilities), then
``--kl-divergence`` over the model; both tools get the same text, context, batch and threads. Printed: wall
time, peak RSS and disk of each, and the ratios. Targets: time <= 1.1x llama-perplexity's, disk <= 0.01x.

Then the memory does not grow with the text: `mixtral eval` of a small pair over the text and over 10x the
text, peak RSS and what the statistics held for each.

    python benchmarks/eval.py [--work DIR] [--layers 1] [--threads 2] [--ctx 512] [--chunks 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import measure, shaped_8x7b_model

from mixtral_cli.quality.run import default_text

ROOT = Path(__file__).resolve().parent.parent


def llama_perplexity() -> Path:
    """scripts/build-llama-tools.sh's llama-perplexity: the llama.cpp llama-cpp-python vendors."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build-llama-tools.sh")], check=True, capture_output=True)
    return Path(done.stdout.decode().strip().splitlines()[-1]) / "llama-perplexity"


def quantized(checkpoint: Path, type_name: str, output: Path) -> Path:
    if not output.exists():
        print(f"quantizing to {type_name} ...", flush=True)
        measure(
            [sys.executable, "-m", "mixtral_cli", "quantize", str(checkpoint), "--type", type_name, "-o", str(output)]
        )
    return output


def run_eval(
    model: Path, reference: Path, text: Path, *, ctx: int, chunks: int | None, threads: int
) -> tuple[float, int, dict]:
    limit = ["--chunks", str(chunks)] if chunks else []
    command = [sys.executable, "-m", "mixtral_cli", "eval", str(model), "-a", str(reference), str(text),
               "-c", str(ctx), "-t", str(threads), "--json", *limit]  # fmt: skip
    seconds, peak, stdout, _ = measure(command)
    return seconds, peak, json.loads(stdout)


def run_llama_perplexity(
    tool: Path, model: Path, reference: Path, text: Path, work: Path, *, ctx: int, chunks: int | None, threads: int
) -> tuple[float, int, int, str]:
    """Both passes: seconds, the larger peak RSS, the reference file's bytes, the second pass's output."""
    base = work / "reference-logprobs.bin"
    common = [
        "-f",
        str(text),
        "-c",
        str(ctx),
        "-b",
        str(ctx),
        "-t",
        str(threads),
        *(["--chunks", str(chunks)] if chunks else []),
    ]
    first = measure([str(tool), "-m", str(reference), "--kl-divergence-base", str(base), *common])
    disk = base.stat().st_size
    second = measure([str(tool), "-m", str(model), "--kl-divergence-base", str(base), "--kl-divergence", *common])
    base.unlink()
    return first[0] + second[0], max(first[1], second[1]), disk, second[2] + second[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=4, help="chunks of the built-in text to score (it has 5)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["MIXTRAL_HOME"] = str(args.work / "home")
    tool = llama_perplexity()
    text = args.work / "eval-text.txt"
    text.write_text(default_text(), encoding="utf-8")

    model = shaped_8x7b_model(args.work, args.layers)  # built here once; run again for clean peak RSS figures
    reference = quantized(
        args.work / f"8x7b-shaped-{args.layers}-layers", "Q8_0", model.with_name(model.name.replace("Q4_K_M", "Q8_0"))
    )
    options = {"ctx": args.ctx, "chunks": args.chunks, "threads": args.threads}
    print(
        f"pair: {model.name} against {reference.name}; {args.threads} threads, context {args.ctx}, "
        f"{args.chunks} chunks",
        flush=True,
    )
    ours_s, ours_peak, report = run_eval(model, reference, text, **options)
    theirs_s, theirs_peak, theirs_disk, printed = run_llama_perplexity(
        tool, model, reference, text, args.work, **options
    )
    kld_line = next((line for line in printed.splitlines() if line.startswith("Mean    KLD")), "no KLD printed")
    print(f"{'':<18}{'seconds':>9}{'peak RSS MiB':>14}{'disk MiB':>10}")
    print(f"{'mixtral eval':<18}{ours_s:>9.1f}{ours_peak / 2**20:>14.0f}{report['disk_bytes'] / 2**20:>10.1f}")
    print(f"{'llama-perplexity':<18}{theirs_s:>9.1f}{theirs_peak / 2**20:>14.0f}{theirs_disk / 2**20:>10.1f}")
    print(f"ratios: time {ours_s / theirs_s:.2f}x (target <= 1.1x), disk {report['disk_bytes'] / theirs_disk:.3f}x "
          f"(target <= 0.01x), peak RSS {ours_peak / theirs_peak:.2f}x")  # fmt: skip
    print(f"KLD: mixtral eval {report['losses']['kld']['value']:.6f}; llama-perplexity {kld_line}")

    checkpoint = args.work / "mini"
    if not (checkpoint / "config.json").exists():
        # In a child: a child's peak RSS starts at its parent's (Linux copies the high-water mark at fork).
        measure([sys.executable, "-m", "mixtral_cli", "tiny", str(checkpoint), "--hidden-size", "512",
                 "--intermediate-size", "1024", "--layers", "4"])  # fmt: skip
    mini_model = quantized(checkpoint, "Q4_K_M", args.work / "mini-Q4_K_M.gguf")
    mini_reference = quantized(checkpoint, "Q8_0", args.work / "mini-Q8_0.gguf")
    long_text = args.work / "eval-text-10x.txt"
    long_text.write_text(default_text() * 10, encoding="utf-8")
    print(f"memory against the text's length ({mini_model.name} against {mini_reference.name}, context {args.ctx}):")
    peaks = []
    for name, path in (("1x", text), ("10x", long_text)):
        seconds, peak, result = run_eval(
            mini_model, mini_reference, path, ctx=args.ctx, chunks=None, threads=args.threads
        )
        peaks.append(peak)
        print(f"  {name:>3}: {result['tokens']:>6} tokens, {result['chunks']:>3} chunks, "
              f"peak RSS {peak / 2**20:.0f} MiB, statistics held {result['held_bytes'] / 2**20:.1f} MiB, "
              f"{seconds:.1f} s")  # fmt: skip
    print(f"  peak RSS 10x / 1x: {peaks[1] / peaks[0]:.3f}")


if __name__ == "__main__":
    main()
