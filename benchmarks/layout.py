"""Weight layouts on an 8x7B-shaped model: `summarize` and a long-prompt `complete` in each layout, side by side.

The model has Mixtral 8x7B's real tensor shapes (hidden 4096, FFN 14336, 32 heads, 8 KV heads, 8 experts,
top-2) but only a few layers of random weights, built tensor by tensor by the project's tiny builder and
quantized to Q4_K_M by `mixtral quantize`. Each run is its own process with the same threads and context:

- `summarize --json` of an input 5x the context, with `--repack` (today's layout), `--no-repack`, and on
  auto with the calibration cache seeded so that auto takes the hand-over (prompt plain, answer repacked);
- `complete --json` of a 2,000-token prompt with 64 answer tokens in the same three modes, and llama.cpp's
  own llama-completion (built as benchmarks/decode.py builds it) in its default layout.

The auto run's calibration is measured first, in its own process, so the table shows the rates auto
weighs. Targets: summarize >= 1.8x faster than repacked (today); time to first token on the long prompt
<= 0.5x llama-completion's; decode (what chat runs, repacked) no slower than today.

    python benchmarks/layout.py [--work DIR] [--layers 2] [--threads 2] [--ctx 2048] [--llama-bin DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

from common import llama_tools, measure, shaped_8x7b_model
from decode import run_llama_completion

WORDS = (
    "the router sends each token to two experts while the rest stay idle and memory bandwidth sets the pace "
    "of decoding but prompt processing is bound by arithmetic"
).split()


def text_file(path: Path, words: int, *, seed: int) -> Path:
    """Prose-like paragraphs of about ``words`` words (random weights make any text equally hard)."""
    rng = random.Random(seed)
    paragraphs, count = [], 0
    while count < words:
        n = rng.randint(40, 90)
        paragraphs.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        count += n
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def mixtral(*args: str, stdin: Path | None = None) -> tuple[float, dict]:
    seconds, _, stdout, _ = measure([sys.executable, "-m", "mixtral_cli", *args], stdin=stdin)
    return seconds, json.loads(stdout)


# Calibrates as auto does on first use, then stores rates under which auto takes the hand-over (no load cost,
# plain prompts and repacked decoding at least as fast as measured), so the hand-over row runs whatever this
# machine's balance; what auto itself would choose with the measured rates is printed beside.
SEED_HAND_OVER = """
import json, sys, time
from dataclasses import asdict, replace
from pathlib import Path
from mixtral_cli.engine import calibration
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions
model, threads = Path(sys.argv[1]), int(sys.argv[2])
started = time.perf_counter()
options = EngineOptions(ctx_size=512, threads=threads, repack=False)
with Engine(model, options) as plain:
    rates, repacked = calibration.calibrate(plain, lambda: Engine(model, replace(options, repack=True)))
    repacked.close()
seconds = time.perf_counter() - started
forced = replace(
    rates,
    plain_prompt=max(rates.plain_prompt, 1.01 * rates.repacked_prompt),
    repacked_decode=max(rates.repacked_decode, 1.01 * rates.plain_decode),
    repack_load_s=0.0,
)
calibration.store_rates(calibration.cache_key(model, threads=threads), forced)
print(json.dumps({**asdict(rates), "seconds": seconds}))
"""


def auto_choice(rates: dict, prompt_tokens: int, answer_tokens: int) -> str:
    from mixtral_cli.base.system import available_memory
    from mixtral_cli.engine.layout import LayoutRates, Memory, Work, choose_layout

    measured = LayoutRates(**{k: v for k, v in rates.items() if k != "seconds"})
    # Model and KV sizes do not matter here beyond fitting: the bench model is small next to the RAM.
    memory = Memory(model_bytes=0, kv_bytes=0, available=available_memory())
    return choose_layout(Work(prompt_tokens, answer_tokens), measured, memory).layout.value


MODES = {"repacked": ["--repack"], "plain": ["--no-repack"], "hand-over": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument(
        "--llama-bin", type=Path, help="a folder with llama-completion (default: build-llama-tools.sh's)"
    )
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--prompt-words", type=int, default=1500, help="about 2,000 tokens")
    parser.add_argument("--answer-tokens", type=int, default=64)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    bin_dir = args.llama_bin or llama_tools()
    model = shaped_8x7b_model(args.work, args.layers)
    os.environ["MIXTRAL_HOME"] = str(args.work / "home")
    _, _, stdout, _ = measure([sys.executable, "-c", SEED_HAND_OVER, str(model), str(args.threads)])
    rates = json.loads(stdout)
    common = ["-m", str(model), "-t", str(args.threads), "-c", str(args.ctx), "--temperature", "0", "--json"]

    long_prompt = text_file(args.work / "long-prompt.txt", args.prompt_words, seed=1)
    document = text_file(args.work / "summarize-5x.txt", int(5 * args.ctx * 0.75), seed=2)

    completes = {}
    for mode, flags in MODES.items():
        _, data = mixtral("complete", "--raw", "-n", str(args.answer_tokens), *common, *flags, stdin=long_prompt)
        completes[mode] = data
    reference = run_llama_completion(bin_dir, model, long_prompt, args.answer_tokens, args.threads)

    summaries = {}
    for mode, flags in MODES.items():
        seconds, data = mixtral("summarize", "--max-words", "20", *common, *flags, str(document))
        summaries[mode] = (seconds, data)

    print(f"model: {model.name} ({model.stat().st_size / 2**30:.2f} GiB), {args.threads} threads, context {args.ctx}")
    print(
        "calibration (tok/s): plain prompt {plain_prompt:.1f} decode {plain_decode:.1f}, repacked prompt "
        "{repacked_prompt:.1f} decode {repacked_decode:.1f}, repacking costs {repack_load_s:.2f} s; "
        "calibrating took {seconds:.1f} s".format(**rates)
    )
    prompt_tokens = completes["repacked"]["prompt_tokens"]
    print(
        f"\ncomplete: {prompt_tokens}-token prompt, {args.answer_tokens} answer tokens "
        f"(auto would choose {auto_choice(rates, prompt_tokens, args.answer_tokens)})"
    )
    print(f"{'':<18}{'layout ran':>12}{'first token s':>15}{'x llama.cpp':>13}{'decode tok/s':>14}{'x today':>9}")
    today = completes["repacked"]["timings"]["decode_tokens_per_second"]
    rows = {mode: data["timings"] for mode, data in completes.items()}
    for mode, timings in rows.items():
        print(
            f"{'mixtral ' + mode:<18}{timings['layout']:>12}{timings['prompt_eval_s']:>15.2f}"
            f"{timings['prompt_eval_s'] / reference['first_token_s']:>13.3f}"
            f"{timings['decode_tokens_per_second']:>14.1f}{timings['decode_tokens_per_second'] / today:>9.3f}"
        )
    print(
        f"{'llama-completion':<18}{'default':>12}{reference['first_token_s']:>15.2f}{1:>13.3f}"
        f"{reference['decode_tps']:>14.1f}{reference['decode_tps'] / today:>9.3f}"
    )
    _, first = summaries["repacked"]
    print(
        f"\nsummarize: {first['tokens_in']} prompt tokens in {first['model_calls']} calls, levels {first['levels']} "
        f"(auto would choose {auto_choice(rates, first['tokens_in'], first['tokens_out'])})"
    )
    print(f"{'':<18}{'layout ran':>12}{'wall s':>9}{'prompt s':>10}{'decode s':>10}{'x faster than today':>21}")
    base = summaries["repacked"][0]
    for mode, (seconds, data) in summaries.items():
        timings = data["timings"]
        print(
            f"{'mixtral ' + mode:<18}{timings['layout']:>12}{seconds:>9.1f}{timings['prompt_eval_s']:>10.1f}"
            f"{timings['decode_s']:>10.1f}{base / seconds:>21.2f}"
        )
    print(
        "targets: summarize >= 1.8x faster than today; first token <= 0.5x llama-completion's; "
        "decode (chat, repacked) >= 1.0x today"
    )


if __name__ == "__main__":
    main()
