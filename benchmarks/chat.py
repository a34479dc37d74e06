"""Time per chat turn as the history grows: with KV-cache reuse a turn costs its new tokens only.

Twenty turns of equal-size messages on the 791M-parameter random Mixtral at Q4_K_M (built by
benchmarks/decode.py, or here). Prints the prompt-eval time of each turn, the ratio of turn 20 to turn 1
(target under 1.5), what turn 20 would cost without reuse (its whole prompt evaluated on a fresh
context), and decode tok/s in chat against a one-shot completion of the same length.

    python benchmarks/chat.py [--work DIR] [--threads 2] [--turns 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from decode import bench_model

from mixtral_cli.chat.session import ChatSession
from mixtral_cli.chat.transcript import Transcript
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions

MESSAGE = "Here is question number {n:02d} about experts and routers in sparse models; answer briefly please."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixtral-bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = bench_model(args.work)
    options = EngineOptions(ctx_size=8192, threads=args.threads)
    sampling = SamplingOptions(temperature=0, max_tokens=32)

    with Engine(model, options) as engine:
        session = ChatSession(
            engine, Transcript(model=str(model), sampling=sampling), autosave_path=args.work / "chat.json"
        )
        rows = []
        for n in range(1, args.turns + 1):
            chunks, finish = session.send(MESSAGE.format(n=n))
            for _ in chunks:
                pass
            result = finish()
            rows.append((n, len(result.prompt_ids), result.stats))
        last_prompt = rows[-1][1]
        one_shot = engine.generate(engine.raw_ids(MESSAGE.format(n=0)), sampling)
        for _ in one_shot:
            pass

    with Engine(model, options) as fresh:
        # The same turn-20 prompt on an empty cache: what every turn would cost without reuse.
        cold = fresh.generate(session.last_prompt_ids, SamplingOptions(temperature=0, max_tokens=1))
        for _ in cold:
            pass

    print(f"model: {model.name}, {args.threads} threads, {args.turns} turns, answers of at most 32 tokens")
    print(f"{'turn':>4}{'prompt tokens':>15}{'evaluated':>11}{'prompt eval s':>15}{'decode tok/s':>14}")
    for n, prompt_tokens, stats in rows:
        print(
            f"{n:>4}{prompt_tokens:>15}{stats.prompt_tokens_evaluated:>11}{stats.prompt_eval_s:>15.3f}"
            f"{stats.decode_tokens_per_second:>14.1f}"
        )
    first, last = rows[0][2], rows[-1][2]
    chat_decode = sum(s.completion_tokens for *_, s in rows) / sum(s.decode_s for *_, s in rows)
    print(f"turn {args.turns} / turn 1 prompt eval: {last.prompt_eval_s / first.prompt_eval_s:.2f}x (target < 1.5)")
    print(
        f"turn {args.turns} without reuse: {cold.stats.prompt_tokens_evaluated} of {last_prompt} tokens evaluated, "
        f"{cold.stats.prompt_eval_s:.3f} s = {cold.stats.prompt_eval_s / first.prompt_eval_s:.1f}x turn 1"
    )
    print(
        f"decode: chat {chat_decode:.1f} tok/s, complete {one_shot.stats.decode_tokens_per_second:.1f} tok/s "
        f"({chat_decode / one_shot.stats.decode_tokens_per_second:.2f}x)"
    )


if __name__ == "__main__":
    main()
