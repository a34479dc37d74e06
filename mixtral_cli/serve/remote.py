"""A served model as the engine `mixtral chat` and `mixtral summarize` drive: the same calls, over HTTP.

The chat session and the summarizer decide what to send from token counts (context windows, chunk
budgets), so they ask the server for ids (``tokenize``, ``chat_ids``, built by the server's engine with
the same code as locally) and send ids to generate from; every other part of them runs here unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..base.errors import ChatError
from ..engine.layout import Layout, LayoutPlan, Work
from ..engine.loading import ModelInfo
from ..engine.lora import AdapterInfo
from ..engine.model import Generation, GenerationStats
from ..engine.options import LoraSpec, SamplingOptions
from ..family.prompt_ids import Message, PromptFormat, SpecialIds
from .client import ServerClient
from .work import GENERATE_ROUTE, IDS_ROUTE, MODEL_ROUTE, sampling_body, stats_from


class RemoteEngine:
    """What commands use of ``Engine`` (info, n_ctx, ids, generate), answered by a `mixtral serve`."""

    def __init__(self, url: str) -> None:
        self._client = ServerClient(url)
        self._client.check()
        facts = self._client.call("GET", MODEL_ROUTE)
        self.info = _model_info(facts["info"])
        self.n_ctx: int = facts["n_ctx"]
        self.special = SpecialIds(**facts["special"])
        self.load_s: float = facts["load_s"]
        self.layout = Layout(facts["layout"])
        self.adapters = tuple(AdapterInfo(**{**a, "path": Path(a["path"])}) for a in facts["adapters"])

    def tokenize(self, text: str, *, parse_special: bool = False) -> list[int]:
        return self._client.call("POST", IDS_ROUTE, {"text": text, "parse_special": parse_special})["ids"]

    def chat_ids(self, messages: Sequence[Message]) -> list[int]:
        body = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
        return self._client.call("POST", IDS_ROUTE, body)["ids"]

    def generate(self, prompt_ids: Sequence[int], sampling: SamplingOptions, *, answer: bool = False) -> Generation:
        body = {"ids": list(prompt_ids), "sampling": sampling_body(sampling), "answer": answer}
        return Generation(lambda stats: self._stream(body, stats))

    def _stream(self, body: dict[str, Any], stats: GenerationStats) -> Iterator[str]:
        for item in self._client.stream(GENERATE_ROUTE, body):
            if isinstance(item, str):
                yield item
            else:
                for field in fields(GenerationStats):
                    setattr(stats, field.name, getattr(stats_from(item["stats"]), field.name))

    def set_loras(self, specs: Sequence[LoraSpec]) -> None:
        raise ChatError("With --server, the server's adapters answer: start it with the --lora you want.")

    def expected_seconds(self, work: Work) -> float | None:
        return None  # rates are measured on the server's machine, not here: the plan's size alone decides

    def prepare(self, work: Work) -> LayoutPlan | None:
        return None  # the server's engine keeps the layout it was started with

    def close(self) -> None:
        pass  # the model stays loaded: that is the server's purpose

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _model_info(data: dict[str, Any]) -> ModelInfo:
    return ModelInfo(**{**data, "path": Path(data["path"]), "prompt_format": PromptFormat(data["prompt_format"])})
