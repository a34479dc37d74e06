"""What a JSON schema costs in decode speed: `mixtral complete --json-schema` against the same run
unconstrained, and llama.cpp's own `llama-completion --json-schema` against its unconstrained run, in one go.

Same GGUF (the 791M-parameter random Mixtral at Q4_K_M of benchmarks/decode.py), prompt, threads and
greedy decoding; decode speed counts the time spent sampling (where the grammar works) on both sides.
Each contender runs in its own process, several times in turn; the best run is kept. The schema (32
strings of 8 characters or more) keeps the random model writing until the token budget, so every run
decodes the same number of tokens; `mixtral` reports such a cut answer with exit code 3, expected here.

    python benchmarks/grammar.py [--llama-bin DIR] [--work DIR] [--tokens 128] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import llama_tools
from decode import PARAGRAPH, bench_model, parse_arguments, run_llama_completion

SCHEMA = {"type": "array", "items": {"type": "string", "minLength": 8}, "minItems": 32}
CUT = 3  # mixtral's exit code for an answer cut by --max-tokens


def run_mixtral(model: Path, prompt_file: Path, tokens: int, threads: int, extra: tuple[str, ...] = ()) -> dict:
    command = [sys.executable, "-m", "mixtral_cli", "complete", "-m", str(model), "--raw", "--temperature", "0"]
    command += ["-n", str(tokens), "-t", str(threads), "-c", "2048", "--json", *extra]
    with open(prompt_file, "rb") as prompt:
        result = subprocess.run(command, stdin=prompt, capture_output=True, text=True)
    if result.returncode not in (0, CUT):
        raise SystemExit(f"mixtral failed:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout)
    return {"decode_tps": data["timings"]["decode_tokens_per_second"], "tokens": data["completion_tokens"]}


def run_llama_completion_with_sampling(*args: object) -> dict:
    """llama-completion's decode speed with its sampling time counted, as mixtral's decode time counts it."""
    result = run_llama_completion(*args)
    return {**result, "decode_tps": result["tokens"] / (result["decode_s"] + result["sampling_s"])}


def main() -> None:
    args = parse_arguments(__doc__)

    bin_dir = args.llama_bin or llama_tools()
    model = bench_model(args.work)
    prompt_file = args.work / "grammar-prompt.txt"
    prompt_file.write_text(PARAGRAPH * 4 + "\nThe experts, as a JSON list of names:\n")
    schema = json.dumps(SCHEMA)
    n, threads = args.tokens, args.threads
    contenders = {
        "llama-completion": lambda: run_llama_completion_with_sampling(bin_dir, model, prompt_file, n, threads),
        "llama-completion schema": lambda: run_llama_completion_with_sampling(
            bin_dir, model, prompt_file, n, threads, ("--json-schema", schema)
        ),
        "mixtral": lambda: run_mixtral(model, prompt_file, n, threads),
        "mixtral schema": lambda: run_mixtral(
            model, prompt_file, n, threads, ("--json-schema", schema, "--no-schema-prompt")
        ),
    }
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, run in contenders.items():
            result = run()
            if name not in best or result["decode_tps"] > best[name]["decode_tps"]:
                best[name] = result

    print(f"model: {model.name}, {threads} threads, {n} greedy tokens, schema {schema}, best of {args.repeat}")
    print(f"{'':<26}{'decode tok/s':>14}{'x unconstrained':>17}{'x llama.cpp':>13}{'tokens':>8}")
    for name, result in best.items():
        unconstrained = best[name.removesuffix(" schema")]["decode_tps"]
        llama_cpp = best["llama-completion" + (" schema" if name.endswith(" schema") else "")]["decode_tps"]
        print(
            f"{name:<26}{result['decode_tps']:>14.1f}{result['decode_tps'] / unconstrained:>17.3f}"
            f"{result['decode_tps'] / llama_cpp:>13.3f}{result['tokens']:>8}"
        )
    print("target: mixtral schema >= 0.95x mixtral unconstrained")


if __name__ == "__main__":
    main()
