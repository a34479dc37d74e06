"""OpenAI's Responses API, stateless (as llama-server and Ollama answer it): text in, text out.

A request's ``input`` (a text, or messages of text parts) and ``instructions`` (a system message) become the
same conversation, and so the same answer job, as a chat completion; ``text.format`` the same output shape
as ``response_format``. Nothing is stored: ``previous_response_id`` is refused, and so are tools and other
input items than messages. A streamed answer is OpenAI's sequence of Responses events.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

from ..answer.request import AnswerEnd, AnswerRequest
from ..base.errors import InvalidRequestError
from ..engine.options import SamplingOptions
from ..family.prompt_ids import PromptMode
from .openai_api import OpenAIRequest, message_of, response_format_of, sampling_of, unsupported
from .work import conversation_from

_UNSUPPORTED = ("previous_response_id", "conversation", "tools", "reasoning", "background", "prompt")


def parse_responses_request(data: object, base: SamplingOptions) -> OpenAIRequest:
    if not isinstance(data, dict):
        raise InvalidRequestError("The request must be a JSON object.")
    if data.get("previous_response_id") is not None:
        raise InvalidRequestError(
            'This server keeps no responses: send the whole conversation as "input", not "previous_response_id".',
            param="previous_response_id",
            code="unsupported_parameter",
        )
    for name in _UNSUPPORTED:
        if data.get(name) not in (None, []):
            raise unsupported(name)
    messages = [*_instructions(data.get("instructions")), *_input(data.get("input"))]
    text = data.get("text")
    shape = response_format_of(text.get("format") if isinstance(text, dict) else None, flat=True)
    sampling = sampling_of({**data, "max_tokens": data.get("max_output_tokens")}, base)
    answer = AnswerRequest(
        prompt=conversation_from(messages, param="input"), sampling=sampling, mode=PromptMode.CHAT, shape=shape
    )
    return OpenAIRequest((answer,), bool(data.get("stream")), include_usage=True)


def _instructions(value: object) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, str):
        raise InvalidRequestError('"instructions" must be a string.', param="instructions")
    return [{"role": "system", "content": value}]


def _input(value: object) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequestError('"input" must be a text or a non-empty list of messages.', param="input")
    messages = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise InvalidRequestError(
                f"Input item {index + 1} is not a message: only messages are taken.", param="input"
            )
        messages.append(message_of(item, index, param="input"))
    return messages


class ResponseAnswer:
    """One answer as a Responses object, whole or as its stream of events."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.id = f"resp_{secrets.token_hex(12)}"
        self.message_id = f"msg_{secrets.token_hex(12)}"
        self.created = int(time.time())
        self._sequence = 0

    def whole(self, text: str, end: AnswerEnd | None) -> dict[str, Any]:
        complete = end is not None and not end.cut and end.stats.stop_reason not in ("length", "context")
        status = "completed" if end is None or complete else "incomplete"
        output = [] if end is None else [self._message(text, "completed" if complete else "incomplete")]
        usage = None
        if end is not None:
            stats = end.stats
            usage = {
                "input_tokens": stats.prompt_tokens,
                "input_tokens_details": {"cached_tokens": stats.prompt_tokens - stats.prompt_tokens_evaluated},
                "output_tokens": stats.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": stats.prompt_tokens + stats.completion_tokens,
            }
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": "in_progress" if end is None else status,
            "model": self.model,
            "output": output,
            "error": None,
            "incomplete_details": None if status == "completed" else {"reason": "max_output_tokens"},
            "parallel_tool_calls": False,
            "tool_choice": "none",
            "tools": [],
            "usage": usage,
        }

    def _message(self, text: str, status: str) -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant", "content": [part]}

    def start_events(self) -> Iterator[dict[str, Any]]:
        yield self._event("response.created", response=self.whole("", None))
        yield self._event("response.in_progress", response=self.whole("", None))
        message = {**self._message("", "in_progress"), "content": []}
        yield self._event("response.output_item.added", output_index=0, item=message)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield self._event("response.content_part.added", **self._place(), part=part)

    def delta_event(self, text: str) -> dict[str, Any]:
        return self._event("response.output_text.delta", **self._place(), delta=text, logprobs=[])

    def end_events(self, text: str, end: AnswerEnd) -> Iterator[dict[str, Any]]:
        whole = self.whole(text, end)
        yield self._event("response.output_text.done", **self._place(), text=text, logprobs=[])
        yield self._event("response.content_part.done", **self._place(), part=whole["output"][0]["content"][0])
        yield self._event("response.output_item.done", output_index=0, item=whole["output"][0])
        kind = "response.completed" if whole["status"] == "completed" else "response.incomplete"
        yield self._event(kind, response=whole)

    def error_event(self, error: dict[str, Any]) -> dict[str, Any]:
        return self._event("error", code=error["code"], message=error["message"], param=error["param"])

    def _place(self) -> dict[str, Any]:
        return {"item_id": self.message_id, "output_index": 0, "content_index": 0}

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._sequence += 1
        return {"type": kind, "sequence_number": self._sequence - 1, **fields}
