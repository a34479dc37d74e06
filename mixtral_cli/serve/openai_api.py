"""OpenAI's chat and text completion requests as ``AnswerRequest``s, and their answers in OpenAI's shapes.

A chat request's messages go through the same id-building code as `mixtral chat` (mixtral_cli/family/prompt_ids.py);
a text completion is a raw completion, as OpenAI's legacy route means it. ``response_format`` becomes the
same output shape, and so the same grammar, as `--json-schema` and `--json-object`.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..answer.request import AnswerEnd, AnswerRequest
from ..base.errors import InvalidRequestError
from ..engine.options import SamplingOptions
from ..family.prompt_ids import PromptMode
from .work import conversation_from, sampling_from

if TYPE_CHECKING:
    from ..answer.shapes import OutputShape
    from ..engine.model import GenerationStats

_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class OpenAIRequest:
    answer: AnswerRequest
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage


def parse_chat_request(data: object, base: SamplingOptions) -> OpenAIRequest:
    data = _object(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError('"messages" must be a non-empty list.')
    conversation = conversation_from([_message(item, i) for i, item in enumerate(messages)])
    answer = AnswerRequest(
        prompt=conversation,
        sampling=_sampling(data, base),
        mode=PromptMode.CHAT,
        shape=_response_format(data.get("response_format")),
    )
    return _request(data, answer)


def parse_text_request(data: object, base: SamplingOptions) -> OpenAIRequest:
    data = _object(data)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequestError('"prompt" must be a string (one prompt per request).')
    return _request(data, AnswerRequest(prompt=prompt, sampling=_sampling(data, base), mode=PromptMode.RAW))


def _object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequestError("The request must be a JSON object.")
    if data.get("n", 1) != 1:
        raise InvalidRequestError('"n" must be 1: this server answers one choice per request.')
    return data


def _request(data: dict[str, Any], answer: AnswerRequest) -> OpenAIRequest:
    options = data.get("stream_options") or {}
    return OpenAIRequest(
        answer, bool(data.get("stream")), isinstance(options, dict) and bool(options.get("include_usage"))
    )


def _sampling(data: dict[str, Any], base: SamplingOptions) -> SamplingOptions:
    if data.get("max_completion_tokens") is not None:
        data = {**data, "max_tokens": data["max_completion_tokens"]}
    return sampling_from(data, base)


def _message(item: object, index: int) -> dict[str, str]:
    """An OpenAI message as role and text; content given as parts keeps its text parts."""
    if not isinstance(item, dict) or item.get("role") not in _ROLES:
        raise InvalidRequestError(f"Message {index + 1} must have a role: system, developer, user or assistant.")
    content = item.get("content")
    if isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise InvalidRequestError(f"Message {index + 1} may hold text parts only.")
        content = "".join(p["text"] for p in content)
    return {"role": _ROLES[item["role"]], "content": content}


def _response_format(value: object) -> OutputShape | None:
    from ..answer.shapes import json_object_shape, schema_shape

    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return json_object_shape()
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequestError('"response_format.json_schema.schema" must be a JSON schema object.')
        return schema_shape(json.dumps(schema))
    raise InvalidRequestError('"response_format.type" must be text, json_object or json_schema.')


# -- answers --------------------------------------------------------------------------------------------


class Answer:
    """The ids and shapes of one request's answer, chunk by chunk or whole."""

    def __init__(self, *, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
        self.created = int(time.time())

    def _envelope(self, choices: list[dict], *, chunk: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": f"{kind}.chunk" if chunk and self.chat else kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def chunk(self, text: str | None = None, *, finish: AnswerEnd | None = None, first: bool = False) -> dict:
        reason = _finish_reason(finish) if finish is not None else None
        if self.chat:
            delta: dict[str, str] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        return self._envelope([choice], chunk=True)

    def usage_chunk(self, stats: GenerationStats) -> dict:
        return {**self._envelope([], chunk=True), "usage": usage(stats)}

    def whole(self, text: str, end: AnswerEnd) -> dict:
        reason = _finish_reason(end)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason}
        return {**self._envelope([{**choice, "logprobs": None}], chunk=False), "usage": usage(end.stats)}


def usage(stats: GenerationStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        # The conversation's earlier turns, which the KV cache still held: not evaluated again.
        "prompt_tokens_details": {"cached_tokens": stats.prompt_tokens - stats.prompt_tokens_evaluated},
    }


def _finish_reason(end: AnswerEnd) -> str:
    """OpenAI's finish reason; a cut shaped answer is "length", whatever cut it (docs/answers.md)."""
    return "length" if end.cut else _FINISH_REASONS.get(end.stats.stop_reason, "stop")


def models_list(model_id: str) -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "mixtral"}]}
