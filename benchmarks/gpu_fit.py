"""The fitted placement against every --n-cpu-moe, on one GPU and one model: is the fitted plan the fastest?

For each placement, `mixtral complete --json` runs a long prompt and a short answer and reports prompt and
decode tok/s (each measured in one run, the best of --repeat). The rows: the fitted plan (no placement
option), then `--n-cpu-moe K` for K from 0 to n_layer, those the engine refuses as too big for the GPU
shown as such (on a real card they would fail to allocate). With --llama-bench PATH, llama.cpp's own
`llama-bench --n-cpu-moe K` runs at the same settings beside each row. The fitted plan should be the fastest
that fits, or within 5% of it; the script says whether it is and exits 1 when it is not.

On a software Vulkan device (lavapipe) the speeds mean nothing; this is for a real GPU and for users.

    python benchmarks/gpu_fit.py [--model FILE | --layers 4] [--work DIR] [--ctx 4096] [--tokens 32]
                                 [--repeat 2] [--llama-bench PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import greedy_complete_command, measure, shaped_8x7b_model

PROMPT = "Mixtral routes every token to two of its eight experts in each layer. " * 24
SLACK = 0.05


def run(model: Path, args: argparse.Namespace, options: list[str]) -> dict | str:
    """Prompt and decode tok/s of one placement (best of the repeats), or the engine's refusal."""
    command = greedy_complete_command(model, args.tokens, "-c", str(args.ctx), *options, PROMPT)
    best: dict = {}
    for _ in range(args.repeat):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            refusal = re.search(r"would need (\S+ \S+)", done.stderr)
            if refusal:
                return f"does not fit ({refusal.group(1)})"
            raise SystemExit(f"{' '.join(options) or 'fitted'} failed:\n{done.stderr[-2000:]}")
        timings = json.loads(done.stdout)["timings"]
        if timings["decode_tokens_per_second"] > best.get("decode_tokens_per_second", 0):
            best = timings
    return best


def llama_bench(binary: str, model: Path, args: argparse.Namespace, n_cpu_moe: int) -> str:
    """llama.cpp's own figures at the same settings: prompt and decode tok/s."""
    _, _, out, _ = measure(
        [
            binary,
            "-m",
            str(model),
            "-ngl",
            "99",
            "--n-cpu-moe",
            str(n_cpu_moe),
            "-p",
            "512",
            "-n",
            str(args.tokens),
            "-r",
            str(args.repeat),
            "-o",
            "json",
        ]
    )
    rows = json.loads(out)
    speeds = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in rows}
    return f"{speeds.get('pp', 0):8.1f} {speeds.get('tg', 0):8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a Mixtral GGUF (default: an 8x7B-shaped model of --layers)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--llama-bench", help="llama.cpp's llama-bench built for this GPU, to compare")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or shaped_8x7b_model(args.work, args.layers)

    plan = json.loads(
        subprocess.run(
            [sys.executable, "-m", "mixtral_cli", "devices", "-m", str(model), "-c", str(args.ctx), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["placement"]
    n_layer = len(plan["layer_devices"]) - 1
    if not plan["fitted"] or plan["n_gpu_layers"] == 0:
        raise SystemExit("no GPU here to fit to (see `mixtral devices`)")
    fitted_k = len(plan["experts_on_host"])
    print(
        f"model {model.name}: {n_layer} layers; fitted plan: experts of {fitted_k} layers in host memory, "
        f"{plan['n_gpu_layers']} of {n_layer + 1} layers on the GPU(s)"
    )
    header = f"{'placement':<16} {'prompt t/s':>10} {'decode t/s':>10}"
    print(header + ("   llama-bench pp / tg" if args.llama_bench else ""))

    run(model, argparse.Namespace(**{**vars(args), "tokens": 1, "repeat": 1}), [])  # warm caches: file, shaders
    rows: dict[str, dict | str] = {"fitted": run(model, args, [])}
    for k in range(n_layer + 1):
        rows[f"--n-cpu-moe {k}"] = run(model, args, ["--n-cpu-moe", str(k)])
    for name, result in rows.items():
        line = f"{name:<16} " + (
            result
            if isinstance(result, str)
            else f"{result['prompt_tokens_per_second']:10.1f} {result['decode_tokens_per_second']:10.2f}"
        )
        if args.llama_bench and name != "fitted" and not isinstance(result, str):
            line += "   " + llama_bench(args.llama_bench, model, args, int(name.split()[-1]))
        print(line, flush=True)

    fitting = {name: r for name, r in rows.items() if not isinstance(r, str) and name != "fitted"}
    fitted = rows["fitted"]
    assert not isinstance(fitted, str)
    if not fitting:
        print("no --n-cpu-moe fits with every layer on the GPU: the fitted plan offloads fewer layers")
        return
    for measure_name in ("decode_tokens_per_second", "prompt_tokens_per_second"):
        best_name = max(fitting, key=lambda n: fitting[n][measure_name])
        ratio = fitted[measure_name] / fitting[best_name][measure_name]
        verdict = "ok" if ratio >= 1 - SLACK else "SLOWER than the best that fits"
        print(f"{measure_name.split('_')[0]}: fitted / best that fits ({best_name}) = {ratio:.3f}  {verdict}")
        if ratio < 1 - SLACK:
            sys.exit(1)


if __name__ == "__main__":
    main()
