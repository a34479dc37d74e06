"""mixtral's own routes: what they carry, and the work that answers the ones that are not an answer job.

Every answering route runs the answer job (answer/job.py): the OpenAI routes, the scoring route, and
mixtral's own complete route, which `mixtral complete --server` uses. That route's body is the CLI's
``AnswerRequest`` as it stands after the CLI parsed its options (``completion_body``/``parse_completion_body``),
and its answer the job's items, so a completion over HTTP runs exactly the job `mixtral complete` runs locally.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, fields, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from ..answer.request import AnswerEnd, AnswerRequest
from ..answer.shapes import AnswerKind, OutputShape
from ..base.errors import InvalidRequestError, MixtralError, ServerReportedError
from ..engine.options import OPTION_BOUNDS, SamplingOptions
from ..family.prompt_ids import Message, PromptMode, message_dict, messages_from_dicts
from .tool_calls import calls_from, request_tools, tools_body

if TYPE_CHECKING:
    from ..engine.model import Engine, GenerationStats

# mixtral's own routes: `mixtral complete --server` sends its work whole; chat and summarize drive the engine.
COMPLETE_ROUTE = "/mixtral/v1/complete"
MODEL_ROUTE = "/mixtral/v1/model"
IDS_ROUTE = "/mixtral/v1/ids"
GENERATE_ROUTE = "/mixtral/v1/generate"
# The sampling values a request may give, and the type each is read as; their ranges are the options' own.
_SAMPLING_NUMBERS = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "repeat_penalty": float,
    "frequency_penalty": float,
    "presence_penalty": float,
    "seed": int,
    "max_tokens": int,
}


def generate(ids: list[int], sampling: SamplingOptions, *, answer: bool):  # noqa: ANN201
    """The job that generates after ``ids`` (built by ``ids_of``): text chunks, then an ``AnswerEnd``."""
    from ..answer.job import bounded_by_context

    def run(engine: Engine) -> Iterator[object]:
        generation = engine.generate(ids, bounded_by_context(sampling, engine.n_ctx), answer=answer)
        yield from generation.steps()
        yield AnswerEnd(generation.stats)

    return run


def ids_of(data: object):  # noqa: ANN201 - Callable[[Engine], Iterator]
    """The job that answers the ids route: a text's ids, or a conversation's prompt ids."""
    if not isinstance(data, dict) or not isinstance(data.get("text"), str) and "messages" not in data:
        raise InvalidRequestError('The request needs a "text" or "messages".')
    text, parse_special = data.get("text"), bool(data.get("parse_special"))
    messages = None if isinstance(text, str) else conversation_from(data["messages"])

    def run(engine: Engine) -> Iterator[object]:
        yield engine.tokenize(text, parse_special=parse_special) if messages is None else engine.chat_ids(messages)

    return run


def parse_generate_body(data: object, *, n_vocab: int) -> tuple[list[int], SamplingOptions, bool]:
    ids = data.get("ids") if isinstance(data, dict) else None
    valid = isinstance(ids, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_vocab for i in ids
    )
    if not ids or not valid:
        raise InvalidRequestError(f'"ids" must be a non-empty list of token ids, each below {n_vocab}.')
    sampling = data.get("sampling") or {}
    grammar = sampling.get("grammar") if isinstance(sampling, dict) else None
    if not isinstance(sampling, dict) or not isinstance(grammar, (str, type(None))):
        raise InvalidRequestError('"sampling" must be an object; its grammar a string.')
    return ids, replace(sampling_from(sampling, SamplingOptions()), grammar=grammar), bool(data.get("answer"))


def engine_facts(engine: Engine) -> dict[str, Any]:
    """What the model route tells a ``RemoteEngine`` about the loaded model."""
    from ..answer.report import adapters_json

    info = engine.info
    return {
        "info": {**asdict(info), "path": str(info.path), "prompt_format": info.prompt_format.value},
        "n_ctx": engine.n_ctx,
        "special": asdict(engine.special),
        "load_s": engine.load_s,
        "layout": engine.layout.value,
        "adapters": adapters_json(engine.adapters),
    }


def sampling_from(data: dict[str, Any], base: SamplingOptions) -> SamplingOptions:
    """``base`` with the sampling values ``data`` gives, checked."""
    changes: dict[str, Any] = {}
    for name, kind in _SAMPLING_NUMBERS.items():
        value = data.get(name)
        if value is not None:
            changes[name] = request_number(name, value, kind)
    biases = data.get("logit_bias")
    if biases:
        changes["logit_bias"] = _logit_bias(biases)
    stop = data.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequestError('"stop" must be a string or a list of strings.')
        changes["stop"] = tuple(stops)
    return replace(base, **changes)


def request_number(name: str, value: object, kind: type[int] | type[float], *, bound: str | None = None) -> Any:
    """``value`` of the request's field ``name``, checked against its type and OPTION_BOUNDS[``bound`` or ``name``]."""
    number = kind is float and isinstance(value, (int, float)) or kind is int and isinstance(value, int)
    if isinstance(value, bool) or not number:
        raise InvalidRequestError(f'"{name}" must be a{"n integer" if kind is int else " number"}.', param=name)
    OPTION_BOUNDS[bound or name].check(f'"{name}"', value, error=partial(InvalidRequestError, param=name))
    return kind(value)


def _logit_bias(biases: object) -> tuple[tuple[int, float], ...]:
    """OpenAI's {"token id": bias} as pairs; the ids are checked against the vocabulary by the answer job."""
    if not isinstance(biases, dict) or not all(isinstance(k, str) and k.isdecimal() for k in biases):
        raise InvalidRequestError('"logit_bias" must map token ids (as strings) to numbers.', param="logit_bias")
    return tuple((int(token), request_number("logit_bias", bias, float)) for token, bias in biases.items())


def conversation_from(items: object, *, param: str = "messages") -> tuple[Message, ...]:
    """A conversation from a request's list of role/content messages, its errors naming the field ``param``."""
    try:
        return tuple(messages_from_dicts(items))
    except MixtralError as exc:
        raise InvalidRequestError(exc.message, hint=exc.hint, param=param) from exc


# -- mixtral's own route: the body `mixtral complete --server` sends --------------------------------------


def sampling_body(sampling: SamplingOptions) -> dict[str, Any]:
    return sampling.settings()


def completion_body(request: AnswerRequest) -> dict:
    prompt = request.prompt if isinstance(request.prompt, str) else [message_dict(m) for m in request.prompt]
    shape = None if request.shape is None else {**asdict(request.shape), "kind": request.shape.kind.value}
    return {
        "prompt": prompt,
        "mode": request.mode.value,
        "system": request.system,
        "sampling": sampling_body(request.sampling),  # its grammar, if any, is the shape's: the server's job adds it
        "shape": shape,
        "describe_shape": request.describe_shape,
        "tools": tools_body(request.tools),
    }


def parse_completion_body(data: object) -> AnswerRequest:
    if not isinstance(data, dict):
        raise InvalidRequestError("The request must be a JSON object.")
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        prompt = conversation_from(prompt)
    try:
        mode = PromptMode(data.get("mode", "auto"))
    except ValueError as exc:
        raise InvalidRequestError('"mode" must be auto, raw or chat.') from exc
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise InvalidRequestError('"system" must be a string.')
    sampling = data.get("sampling") or {}
    if not isinstance(sampling, dict):
        raise InvalidRequestError('"sampling" must be an object.')
    return AnswerRequest(
        prompt=prompt,
        sampling=sampling_from(sampling, SamplingOptions()),
        mode=mode,
        system=system,
        shape=_shape_from(data.get("shape")),
        describe_shape=bool(data.get("describe_shape", True)),
        tools=request_tools(data.get("tools") or {}),
    )


def _shape_from(data: object) -> OutputShape | None:
    if data is None:
        return None
    kinds = {kind.value: kind for kind in AnswerKind}
    grammar, kind, instruction = (
        data.get(key) if isinstance(data, dict) else None for key in ("grammar", "kind", "instruction")
    )
    if not isinstance(grammar, str) or kind not in kinds or not isinstance(instruction, (str, type(None))):
        raise InvalidRequestError('"shape" must hold a grammar, a kind (json or text) and an instruction.')
    return OutputShape(grammar, kinds[kind], instruction)


def end_body(end: AnswerEnd) -> dict:
    """The last line of a streamed answer: how it ended, with the error a shaped answer may end in."""
    error = None if end.error is None else error_body(end.error)
    calls = [call.as_openai() for call in end.tool_calls]
    return {"stats": asdict(end.stats), "report": end.report, "answer": end.answer, "error": error, "tool_calls": calls}


def end_from(data: dict) -> AnswerEnd:
    """An answer's end as ``end_body`` wrote it; its error, the one the server met."""
    error = data.get("error")
    return AnswerEnd(
        stats_from(data["stats"]),
        data["report"],
        data.get("answer"),
        error and reported(error),
        calls_from(data.get("tool_calls")),
    )


def error_body(exc: MixtralError) -> dict[str, Any]:
    """An error as OpenAI's error object, with what `--server` needs to report it as if it happened locally."""
    from .openai_errors import api_error

    return api_error(exc).error_object()


def reported(error: dict) -> ServerReportedError:
    """The error a server reported (``error_body``), to raise here as it would have been raised there."""
    code, kind = error.get("code"), error.get("type")
    return ServerReportedError(
        str(error.get("message")),
        hint=error.get("hint"),
        exit_code=int(error.get("exit_code", 1)),
        code=code if isinstance(code, str) else None,
        type=kind if isinstance(kind, str) else None,
    )


def stats_from(data: dict) -> GenerationStats:
    from ..engine.model import GenerationStats

    known = {f.name for f in fields(GenerationStats)}
    return GenerationStats(**{k: v for k, v in data.items() if k in known})
