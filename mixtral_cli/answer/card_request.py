"""The Azure ML online-endpoint request schema of the Mixtral model cards, in and out.

In: ``{"input_data": {"input_string": [...], "parameters": {...}}}``, where ``input_string`` is a list of
prompts or one conversation (a list of role/content messages), and ``parameters`` may also sit beside
``input_data``; besides the model cards' parameters, ``json_schema`` constrains every answer to one JSON
value that follows it. Out, in one of the two shapes the model cards show: the 8x7B cards' one object per
input (``[{"0": "first answer"}, {"0": "second answer"}]``) or the 8x22B card's one object keyed by the
input's index (``[{"0": "first answer", "1": "second answer"}]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import InvalidRequestError, MixtralError
from ..base.textinput import parse_json
from ..engine.options import OPTION_BOUNDS, SamplingOptions
from ..family.prompt_ids import Message, PromptMode, messages_from_dicts
from .job import AnswerJob
from .request import AnswerEnd, AnswerRequest
from .response_shape import ResponseShape
from .shapes import OutputShape, schema_shape

if TYPE_CHECKING:
    from ..engine.model import Engine


def card_response_shape(model_name: str | None) -> ResponseShape:
    """The response shape of the model card of ``model_name`` (a catalog name, e.g. "8x22b-instruct:Q4_K_M");
    the 8x7B cards' shape for any other model."""
    from ..family.catalog import CATALOG, SHAPE_8X22B

    entry = CATALOG.get((model_name or "").partition(":")[0].lower())
    return ResponseShape.BY_INDEX if entry is not None and entry.shape is SHAPE_8X22B else ResponseShape.PER_INPUT


@dataclass(frozen=True)
class ModelCardRequest:
    inputs: tuple[str | tuple[Message, ...], ...]
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    do_sample: bool = True
    return_full_text: bool = False
    json_schema: dict | None = None  # each answer is one JSON value that follows it

    def output_shape(self) -> OutputShape | None:
        return schema_shape(json.dumps(self.json_schema)) if self.json_schema is not None else None

    def sampling(self, base: SamplingOptions) -> SamplingOptions:
        """The CLI's sampling options, overridden by the request's parameters."""
        sampling = replace(
            base,
            max_tokens=self.max_new_tokens if self.max_new_tokens is not None else base.max_tokens,
            temperature=self.temperature if self.temperature is not None else base.temperature,
            top_p=self.top_p if self.top_p is not None else base.top_p,
        )
        return sampling if self.do_sample else replace(sampling, temperature=0.0)

    def full_text(self, index: int, generated: str) -> str:
        if not self.return_full_text:
            return generated
        source = self.inputs[index]
        prompt = source if isinstance(source, str) else "\n\n".join(m.content for m in source) + "\n\n"
        return prompt + generated


def parse_request(text: str) -> ModelCardRequest:
    data = parse_json(text, "The request", error=InvalidRequestError)
    if not isinstance(data, dict) or not isinstance(data.get("input_data"), dict):
        raise InvalidRequestError('The request needs an "input_data" object.')
    input_data = data["input_data"]
    strings = input_data.get("input_string")
    if not isinstance(strings, list) or not strings:
        raise InvalidRequestError('"input_data.input_string" must be a non-empty list.')
    if all(isinstance(s, str) for s in strings):
        inputs: tuple[str | tuple[Message, ...], ...] = tuple(strings)
    elif all(isinstance(s, dict) for s in strings):
        try:
            inputs = (tuple(messages_from_dicts(strings)),)
        except MixtralError as exc:
            raise InvalidRequestError(f'"input_string" holds a bad message: {exc.message}') from exc
    else:
        raise InvalidRequestError('"input_string" must list prompts or role/content messages, not a mix.')
    for holder in (data, input_data):
        if not isinstance(holder.get("parameters") or {}, dict):
            raise InvalidRequestError('"parameters" must be an object of names and values.')
    parameters = {**(data.get("parameters") or {}), **(input_data.get("parameters") or {})}
    return ModelCardRequest(
        inputs=inputs,
        max_new_tokens=_number(parameters, "max_new_tokens", int, option="max_tokens"),
        temperature=_number(parameters, "temperature", float, option="temperature"),
        top_p=_number(parameters, "top_p", float, option="top_p"),
        do_sample=bool(parameters.get("do_sample", True)),
        return_full_text=bool(parameters.get("return_full_text", False)),
        json_schema=_schema(parameters),
    )


def _schema(parameters: dict) -> dict | None:
    schema = parameters.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise InvalidRequestError('"parameters.json_schema" must be a JSON schema object.')
    return schema


def _number(parameters: dict, key: str, kind: type, *, option: str) -> int | float | None:
    """A parameter in the range of the option it stands for."""
    value = parameters.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidRequestError(f'"parameters.{key}" must be a non-negative number.')
    OPTION_BOUNDS[option].check(f'"parameters.{key}"', value, error=InvalidRequestError)
    return kind(value)


def card_answers(
    request: ModelCardRequest,
    sampling: SamplingOptions,
    *,
    shape: OutputShape | None = None,
    mode: PromptMode = PromptMode.AUTO,
    system: str | None = None,
    describe_shape: bool = True,
) -> tuple[AnswerRequest, ...]:
    """The answer each input of ``request`` asks for, as CardJob's answers them (its arguments, as CardJob's)."""
    first = AnswerRequest(
        prompt=request.inputs[0],
        sampling=request.sampling(sampling),
        mode=mode,
        system=system,
        shape=request.output_shape() or shape,
        describe_shape=describe_shape,
    )
    return tuple(replace(first, prompt=source) for source in request.inputs)


class CardJob:
    """A model-card request's answers, input after input, each by the same answer job: the text chunks as
    they come, then the list of answers in input order. A shaped answer that cannot be printed raises."""

    def __init__(
        self,
        request: ModelCardRequest,
        sampling: SamplingOptions,
        *,
        model_path: Path,
        shape: OutputShape | None = None,
        mode: PromptMode = PromptMode.AUTO,
        system: str | None = None,
        describe_shape: bool = True,
    ) -> None:
        """``sampling``: the defaults the request's parameters override; ``shape``: unless the request has one."""
        self.request = request
        how = {"mode": mode, "system": system, "describe_shape": describe_shape}
        self.job = AnswerJob(card_answers(request, sampling, shape=shape, **how)[0], model_path=model_path)

    def run(self, engine: Engine) -> Iterator[str | list[str] | None]:
        """As ``AnswerJob.run``: None where an answer waits for the engine's shared batch."""
        outputs = []
        for index, source in enumerate(self.request.inputs):
            for item in self.job.with_prompt(source).run(engine):
                if not isinstance(item, AnswerEnd):
                    yield item
                elif item.error is not None:
                    raise item.error
                else:
                    outputs.append(self.request.full_text(index, item.answer))
        yield outputs


def render_response(outputs: Sequence[str], shape: ResponseShape = ResponseShape.PER_INPUT) -> str:
    if shape is ResponseShape.BY_INDEX:
        return json.dumps([{str(i): text for i, text in enumerate(outputs)}], ensure_ascii=False)
    return json.dumps([{"0": text} for text in outputs], ensure_ascii=False)
