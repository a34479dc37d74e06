"""The --json objects of `mixtral complete` and `mixtral summarize`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.model import Engine, GenerationStats
    from ..summarize import SummaryPlan


def completion_json(engine: Engine, text: str, stats: GenerationStats, *, chat: bool) -> str:
    """The `--json` object of `mixtral complete`; ``chat``: whether the prompt had the chat format."""
    import json

    return json.dumps(
        {
            "text": text,
            "model": engine.info.name,
            "instruct": engine.info.instruct,
            "instruct_source": engine.info.instruct_source,
            "prompt_format": f"chat {engine.info.prompt_format.value}" if chat else "raw",
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "stop_reason": stats.stop_reason,
            "timings": {
                "load_s": round(engine.load_s, 6),
                "prompt_eval_s": round(stats.prompt_eval_s, 6),
                "decode_s": round(stats.decode_s, 6),
                "prompt_tokens_per_second": round(stats.prompt_tokens_per_second, 3),
                "decode_tokens_per_second": round(stats.decode_tokens_per_second, 3),
                "layout": stats.layout,
                "placement": engine.plan.summary() if engine.plan else None,
            },
        },
        ensure_ascii=False,
    )


def summary_json(text: str, plan: SummaryPlan, *, name: str | None, layout: str) -> str:
    """The `--json` object of `mixtral summarize`."""
    import json

    data = {
        "summary": text,
        "chunks": plan.levels[0],
        "depth": plan.depth,
        "levels": plan.levels,
        "model_calls": plan.model_calls,
        "max_levels": plan.bound,
        "max_model_calls": plan.max_model_calls,
        "tokens_in": plan.tokens_in,
        "tokens_out": plan.tokens_out,
        "timings": {
            "prompt_eval_s": round(plan.prompt_eval_s, 6),
            "decode_s": round(plan.decode_s, 6),
            "total_s": round(plan.wall_s, 6),
            "layout": layout,
        },
    }
    if name is not None:
        data = {"file": name, **data}
    return json.dumps(data, ensure_ascii=False)
