"""The --json objects of `mixtral complete` and `mixtral summarize`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.lora import AdapterInfo
    from ..engine.model import Engine, GenerationStats
    from .summarize import SummaryPlan
    from .tool_calls import ToolCallAnswer


def adapters_json(adapters: Sequence[AdapterInfo]) -> list[dict[str, object]]:
    """The LoRA adapters a model ran with, in the order applied."""
    return [{"path": str(a.path), "scale": a.scale, "name": a.name, "base_model": a.base_model} for a in adapters]


def completion_json(text: str, report: dict, tool_calls: Sequence[ToolCallAnswer] = ()) -> str:
    """The `--json` object of `mixtral complete`: the text, and its ``completion_report`` (made here or by a
    server); an answer that called tools has its calls, and the stop reason "tool_calls"."""
    import json

    data = {"text": text, **report}
    if tool_calls:
        data |= {"tool_calls": [call.as_openai() for call in tool_calls], "stop_reason": "tool_calls"}
    return json.dumps(data, ensure_ascii=False)


def completion_report(engine: Engine, stats: GenerationStats, *, chat: bool) -> dict:
    """Everything of the `--json` object but the text: the model, its adapters, the token counts, the timings."""
    info = engine.info
    return {
        "model": info.name,
        "instruct": info.instruct,
        "instruct_source": info.instruct_source,
        "loras": adapters_json(engine.adapters),
        "prompt_format": f"chat {info.prompt_format.value}" if chat else "raw",
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
    }


def summary_json(
    text: str, plan: SummaryPlan, *, name: str | None, layout: str, adapters: Sequence[AdapterInfo] = ()
) -> str:
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
        "loras": adapters_json(adapters),
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
