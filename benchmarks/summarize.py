"""Summarizing inputs 2x and 10x the context: peak RSS stays flat, and the model calls match the plan.

Runs `mixtral summarize --json` on the built-in demo model with a 512-token context, each input in its own
process, and reads the peak RSS of each. The first level's chunk count is also planned here, with the
model's own tokenizer, and compared with what the command did; the calls must equal the sum of the
levels and stay within the bound the command reports (`max_model_calls`, fixed before its first call).

    python benchmarks/summarize.py [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from common import measure

from mixtral_cli.answer.summarize import Summarizer
from mixtral_cli.answer.summary_plan import SummaryOptions, plan_chunks
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions
from mixtral_cli.sources.demo import ensure_demo_model

CTX = 512
WORDS = "the router sends each token to two experts while the rest stay idle and bandwidth sets the pace".split()


def text_of(tokens: int, count_tokens) -> str:  # noqa: ANN001
    rng = random.Random(tokens)
    paragraphs: list[str] = []
    while count_tokens("\n\n".join(paragraphs)) < tokens:
        paragraphs.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 80))).capitalize() + ".")
    return "\n\n".join(paragraphs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = ensure_demo_model()
    options, sampling = SummaryOptions(max_words=20), SamplingOptions(temperature=0)

    with Engine(model, EngineOptions(ctx_size=CTX)) as engine:
        summarizer = Summarizer(engine, options, sampling)
        budget = summarizer.budget(dialogue=False).part
        inputs = {}
        for factor in (2, 10):
            text = text_of(factor * CTX, summarizer.count_tokens)
            path = args.work / f"summarize-{factor}x.txt"
            path.write_text(text)
            inputs[factor] = (
                path,
                summarizer.count_tokens(text),
                len(plan_chunks(text, budget, summarizer.count_tokens)),
            )

    print(f"model: demo ({model.name}), context {CTX} tokens, summaries of at most 20 words")
    print(
        f"{'input':>6}{'tokens':>8}{'planned chunks':>16}{'levels':>14}{'model calls':>13}{'at most':>9}"
        f"{'peak RSS MB':>13}"
    )
    rss = {}
    for factor, (path, tokens, planned) in inputs.items():
        _, rss[factor], stdout, _ = measure(
            [
                sys.executable,
                "-m",
                "mixtral_cli",
                "summarize",
                "-m",
                str(model),
                "--ctx-size",
                str(CTX),
                "--max-words",
                "20",
                "--temperature",
                "0",
                "--json",
                str(path),
            ]
        )
        data = json.loads(stdout)
        assert data["levels"][0] == planned and data["model_calls"] == sum(data["levels"]) <= data["max_model_calls"]
        print(
            f"{factor:>5}x{tokens:>8}{planned:>16}{str(data['levels']):>14}{data['model_calls']:>13}"
            f"{data['max_model_calls']:>9}"
            f"{rss[factor] / 1e6:>13.0f}"
        )
    print(f"peak RSS 10x / 2x: {rss[10] / rss[2]:.3f} (flat: close to 1)")


if __name__ == "__main__":
    main()
