"""OpenAI's chat and text completion requests as ``AnswerRequest``s, and their answers in OpenAI's shapes.

A chat request's messages go through the same id-building code as `mixtral chat` (mixtral_cli/family/prompt_ids.py);
a text completion is a raw completion, as OpenAI's legacy route means it. ``response_format`` becomes the
same output shape, and so the same grammar, as `--json-schema` and `--json-object`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..answer.logprobs import ReadableToken
from ..answer.request import AnswerEnd, AnswerRequest
from ..answer.tool_calls import ToolCallDelta
from ..base.errors import InvalidRequestError
from ..engine.options import SamplingOptions
from ..family.prompt_ids import PromptMode
from .request_rules import MAX_ANSWERS_PER_REQUEST
from .tool_calls import answer_message, delta_json, is_tool_message, request_tools
from .work import conversation_from, request_number, sampling_from

if TYPE_CHECKING:
    from ..answer.shapes import OutputShape
    from ..engine.model import Engine

_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}
_TEXT_PARTS = ("text", "input_text", "output_text")  # the chat API's, and the Responses API's two
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


# Parameters that would change the answer and that this server cannot honour: a 400 naming each, as OpenAI
# answers a parameter its model does not take. (Ones that change nothing here, such as "user" or "store", pass.)
_UNSUPPORTED = ("suffix", "audio", "prediction", "web_search_options", "reasoning_effort", "verbosity")


@dataclass(frozen=True)
class OpenAIRequest:
    answers: tuple[AnswerRequest, ...]  # one per prompt (a text completion may send several)
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage

    @property
    def answer(self) -> AnswerRequest:
        return self.answers[0]

    @property
    def logprobs(self) -> bool:
        return self.answer.sampling.logprobs is not None

    @property
    def answer_count(self) -> int:
        """Every answer asked for: n of each prompt."""
        return sum(answer.n for answer in self.answers)


def parse_chat_request(data: object, base: SamplingOptions) -> OpenAIRequest:
    data = _object(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError('"messages" must be a non-empty list.', param="messages")
    conversation = conversation_from([message_of(item, i) for i, item in enumerate(messages)])
    top = data.get("top_logprobs")
    if top is not None and data.get("logprobs") is not True:
        raise InvalidRequestError('"top_logprobs" needs "logprobs": true.', param="top_logprobs")
    if data.get("logprobs") not in (None, True, False):
        raise InvalidRequestError('"logprobs" must be true or false.', param="logprobs")
    logprobs = request_number("top_logprobs", top or 0, int) if data.get("logprobs") else None
    answer = AnswerRequest(
        prompt=conversation,
        sampling=replace(sampling_of(data, base), logprobs=logprobs),
        mode=PromptMode.CHAT,
        shape=response_format_of(data.get("response_format")),
        tools=request_tools(data),
        n=_choices(data),
    )
    return _request(data, (answer,))


def parse_text_request(data: object, base: SamplingOptions) -> OpenAIRequest:
    data = _object(data)
    logprobs = data.get("logprobs")
    if logprobs is not None:
        logprobs = request_number("logprobs", logprobs, int, bound="top_logprobs")
    echo = data.get("echo", False)
    if not isinstance(echo, bool):
        raise InvalidRequestError('"echo" must be true or false.', param="echo")
    best_of = data.get("best_of")
    if best_of not in (None, 1):
        raise unsupported("best_of")
    sampling = replace(sampling_of(data, base), logprobs=logprobs)
    answers = tuple(
        AnswerRequest(prompt=prompt, sampling=sampling, mode=PromptMode.RAW, n=_choices(data), echo=echo)
        for prompt in _prompts(data.get("prompt"))
    )
    return _request(data, answers)


def _prompts(prompt: object) -> list[str | tuple[int, ...]]:
    """OpenAI's four forms: a text, texts, token ids, lists of token ids."""

    def ids(value: object) -> bool:
        return isinstance(value, list) and bool(value) and all(type(i) is int for i in value)

    if isinstance(prompt, str):
        return [prompt]
    if ids(prompt):
        return [tuple(prompt)]  # type: ignore[arg-type]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(ids(p) for p in prompt):
            return [tuple(p) for p in prompt]
    raise InvalidRequestError(
        '"prompt" must be a string, a list of strings, a list of token ids or a list of such lists.', param="prompt"
    )


def _object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequestError("The request must be a JSON object.")
    for name in _UNSUPPORTED:
        if data.get(name) is not None:
            raise unsupported(name)
    modalities = data.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported("modalities")
    return data


def unsupported(name: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Unsupported parameter: '{name}' is not supported with this model.", param=name, code="unsupported_parameter"
    )


def _choices(data: dict[str, Any]) -> int:
    n = data.get("n")
    if n is None:
        return 1
    if type(n) is not int or not 1 <= n <= MAX_ANSWERS_PER_REQUEST:
        raise InvalidRequestError(f'"n" must be an integer from 1 to {MAX_ANSWERS_PER_REQUEST}.', param="n")
    return n


def _request(data: dict[str, Any], answers: tuple[AnswerRequest, ...]) -> OpenAIRequest:
    options = data.get("stream_options") or {}
    return OpenAIRequest(
        answers, bool(data.get("stream")), isinstance(options, dict) and bool(options.get("include_usage"))
    )


def sampling_of(data: dict[str, Any], base: SamplingOptions) -> SamplingOptions:
    if data.get("max_completion_tokens") is not None:
        data = {**data, "max_tokens": data["max_completion_tokens"]}
    return sampling_from(data, base)


def message_of(item: object, index: int, *, param: str = "messages") -> dict[str, str]:
    """An OpenAI message as role and text; content given as parts keeps its text parts. Errors name ``param``."""
    if is_tool_message(item):
        return item  # type: ignore[return-value] - calls and results are read whole
    if not isinstance(item, dict) or item.get("role") not in _ROLES:
        raise InvalidRequestError(
            f"Message {index + 1} must have a role: system, developer, user or assistant.", param=param
        )
    content = item.get("content")
    if isinstance(content, list):
        if not all(
            isinstance(p, dict) and p.get("type") in _TEXT_PARTS and isinstance(p.get("text"), str) for p in content
        ):
            raise InvalidRequestError(f"Message {index + 1} may hold text parts only.", param=param)
        content = "".join(p["text"] for p in content)
    return {"role": _ROLES[item["role"]], "content": content}


def response_format_of(value: object, *, flat: bool = False) -> OutputShape | None:
    """``response_format`` as an output shape; ``flat``: the Responses API's ``text.format``, whose schema is
    beside its type rather than in a ``json_schema`` object."""
    from ..answer.shapes import json_object_shape, schema_shape

    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return json_object_shape()
    if kind == "json_schema":
        spec = value if flat else value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequestError('"response_format.json_schema.schema" must be a JSON schema object.')
        return schema_shape(json.dumps(schema))
    raise InvalidRequestError('"response_format.type" must be text, json_object or json_schema.')


# -- answers --------------------------------------------------------------------------------------------


@dataclass
class Choice:
    """One answer of a request as it came: its text, its tokens' log-probabilities, and its end."""

    parts: list[str] = field(default_factory=list)
    tokens: list[ReadableToken] = field(default_factory=list)
    end: AnswerEnd | None = None


def openai_work(parsed: OpenAIRequest, *, model_path: Path) -> Callable[[Engine], Iterator[object]]:
    """What answers ``parsed`` on an engine: its prompts' answer jobs, one after the other (a shape the model
    cannot take raises here, before anything runs; it reads the model's vocabulary)."""
    from ..answer.job import AnswerJob, run_each

    job = AnswerJob(parsed.answer, model_path=model_path)
    return partial(run_each, [job.with_prompt(answer.prompt) for answer in parsed.answers])


def choices_from(items: Iterable[object]) -> list[Choice]:
    """The answers of a request, from everything its work yielded: the text, log-probabilities and end of each."""
    from ..answer.logprobs import Logprobs

    choices, current = [], Choice()
    for item in items:
        if isinstance(item, AnswerEnd):
            current.end = item
            choices.append(current)
            current = Choice()
        elif isinstance(item, Logprobs):
            current.tokens.extend(item.tokens)
        elif isinstance(item, str):
            current.parts.append(item)
    return choices


class Answer:
    """The ids and shapes of one request's answers, chunk by chunk or whole."""

    def __init__(self, *, chat: bool, model: str, logprobs: bool = False) -> None:
        self.chat = chat
        self.model = model
        self.logprobs = logprobs
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self._offsets: dict[int, int] = {}  # each text completion's characters sent so far (text_offset)

    def _envelope(self, choices: list[dict], *, chunk: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": f"{kind}.chunk" if chunk and self.chat else kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def chunk(
        self,
        text: str | ToolCallDelta | None = None,
        *,
        index: int = 0,
        tokens: Sequence[ReadableToken] = (),
        finish: AnswerEnd | None = None,
        first: bool = False,
    ) -> dict:
        reason = _finish_reason(finish) if finish is not None else None
        logprobs = self._logprobs(tokens, index) if self.logprobs and not first and finish is None else None
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if isinstance(text, ToolCallDelta):
                delta["tool_calls"] = [delta_json(text)]
            elif text:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": logprobs}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": logprobs}
            self._offsets[index] = self._offsets.get(index, 0) + len(text or "")
        return self._envelope([choice], chunk=True)

    def usage_chunk(self, ends: Sequence[AnswerEnd]) -> dict:
        return {**self._envelope([], chunk=True), "usage": usage(ends)}

    def whole(self, choices: Sequence[Choice]) -> dict:
        rendered = []
        for index, choice in enumerate(choices):
            assert choice.end is not None, "an answer job ends each answer with its AnswerEnd"
            text, reason = "".join(choice.parts), _finish_reason(choice.end)
            self._offsets[index] = 0
            logprobs = self._logprobs(choice.tokens, index) if self.logprobs else None
            if self.chat:
                message = answer_message(text, choice.end)
                rendered.append({"index": index, "message": message, "finish_reason": reason, "logprobs": logprobs})
            else:
                rendered.append({"index": index, "text": text, "finish_reason": reason, "logprobs": logprobs})
        ends = [choice.end for choice in choices if choice.end is not None]
        return {**self._envelope(rendered, chunk=False), "usage": usage(ends)}

    def _logprobs(self, tokens: Sequence[ReadableToken], index: int) -> dict[str, Any]:
        """Chat's {"content": [...]}, or the text completion's legacy columns, offsets counted from ``index``'s
        characters sent before these tokens."""
        if self.chat:
            return {"content": [_token_entry(t) for t in tokens], "refusal": None}
        offsets, offset = [], self._offsets.get(index, 0)
        for token in tokens:
            offsets.append(offset)
            offset += len(token.text)
        return {
            "tokens": [t.text for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{text: lp for text, _, lp in t.top} if t.logprob is not None else None for t in tokens],
            "text_offset": offsets,
        }


def _token_entry(token: ReadableToken) -> dict[str, Any]:
    top = [{"token": text, "logprob": lp, "bytes": list(data)} for text, data, lp in token.top]
    return {"token": token.text, "logprob": token.logprob, "bytes": list(token.bytes), "top_logprobs": top}


def usage(ends: Sequence[AnswerEnd]) -> dict[str, Any]:
    """The tokens of every answer; a prompt answered n times counts once, as OpenAI counts it."""
    prompts = [end.stats for end in ends if end.first_of_prompt]
    prompt_tokens = sum(stats.prompt_tokens for stats in prompts)
    completion_tokens = sum(end.stats.completion_tokens for end in ends)
    # The conversation's earlier turns, which the KV cache still held: not evaluated again.
    cached = sum(stats.prompt_tokens - stats.prompt_tokens_evaluated for stats in prompts)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _finish_reason(end: AnswerEnd) -> str:
    """OpenAI's finish reason; a cut shaped answer is "length", whatever cut it (docs/answers.md)."""
    if end.tool_calls:
        return "tool_calls"
    return "length" if end.cut else _FINISH_REASONS.get(end.stats.stop_reason, "stop")


def models_list(model_id: str) -> dict:
    return {"object": "list", "data": [model_object(model_id)]}


def model_object(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "mixtral"}
