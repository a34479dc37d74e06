"""What a served request asks of the engine, and the work that answers it on the engine thread.

Every route becomes a ``CompletionWork`` (or a model-card request): the OpenAI routes, the scoring route,
and mixtral's own route, which `mixtral complete --server` uses. Its body is the CLI's work as it stands
after the CLI parsed its options (``completion_body``/``parse_completion_body``), so a completion over
HTTP runs exactly the steps `mixtral complete` runs locally.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from ..answer.shapes import AnswerKind, OutputShape
from ..base.errors import InvalidRequestError, MixtralError
from ..engine.options import OPTION_BOUNDS, SamplingOptions
from ..family.prompt_ids import Message, PromptMode, messages_from_dicts

if TYPE_CHECKING:
    from ..answer.card_request import ModelCardRequest
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
    "seed": int,
    "max_tokens": int,
}


@dataclass(frozen=True)
class CompletionWork:
    prompt: str | tuple[Message, ...]  # a text, or a conversation
    sampling: SamplingOptions  # the grammar is added once the server has checked the shape against the model
    mode: PromptMode = PromptMode.AUTO
    system: str | None = None
    shape: OutputShape | None = None
    describe_shape: bool = True  # the prompt says which shape is wanted (what --no-schema-prompt turns off)


@dataclass(frozen=True)
class CompletionDone:
    """The end of a generation: its statistics, and for a completion the `--json` report without the text."""

    stats: GenerationStats
    report: dict = field(default_factory=dict)


def complete(work: CompletionWork, sampling: SamplingOptions):  # noqa: ANN201 - Callable[[Engine], Iterator]
    """The job that answers ``work``: its text chunks, then a ``CompletionDone``."""
    from ..answer.job import start_answer
    from ..answer.report import completion_report

    def run(engine: Engine) -> Iterator[object]:
        prompt = list(work.prompt) if isinstance(work.prompt, tuple) else work.prompt
        shown = work.shape if work.describe_shape else None
        generation, chat = start_answer(engine, prompt, sampling, mode=work.mode, system=work.system, shown=shown)
        yield from generation
        report = completion_report(engine, generation.stats, chat=chat)
        yield CompletionDone(generation.stats, report)

    return run


def generate(ids: list[int], sampling: SamplingOptions, *, answer: bool):  # noqa: ANN201
    """The job that generates after ``ids`` (built by ``ids_of``): text chunks, then a ``CompletionDone``."""

    def run(engine: Engine) -> Iterator[object]:
        generation = engine.generate(ids, sampling, answer=answer)
        yield from generation
        yield CompletionDone(generation.stats)

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


def answer_card_request(request: ModelCardRequest, sampling: SamplingOptions, shape: OutputShape | None):  # noqa: ANN201
    """The job that answers a model-card request: one list of answers, in input order."""
    from ..answer.card_request import answer_request

    def run(engine: Engine) -> Iterator[object]:
        yield answer_request(engine, request, sampling, mode=PromptMode.AUTO, system=None, shape=shape, shown=shape)

    return run


def sampling_from(data: dict[str, Any], base: SamplingOptions) -> SamplingOptions:
    """``base`` with the sampling values ``data`` gives, checked."""
    changes: dict[str, Any] = {}
    for name, kind in _SAMPLING_NUMBERS.items():
        value = data.get(name)
        if value is None:
            continue
        number = kind is float and isinstance(value, (int, float)) or kind is int and isinstance(value, int)
        if isinstance(value, bool) or not number:
            raise InvalidRequestError(f'"{name}" must be a{"n integer" if kind is int else " number"}.')
        OPTION_BOUNDS[name].check(f'"{name}"', value, error=InvalidRequestError)
        changes[name] = kind(value)
    stop = data.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequestError('"stop" must be a string or a list of strings.')
        changes["stop"] = tuple(stops)
    return replace(base, **changes)


def conversation_from(items: object) -> tuple[Message, ...]:
    """A conversation from a request's list of role/content messages."""
    try:
        return tuple(messages_from_dicts(items))
    except MixtralError as exc:
        raise InvalidRequestError(exc.message) from exc


# -- mixtral's own route: the body `mixtral complete --server` sends --------------------------------------


def sampling_body(sampling: SamplingOptions) -> dict[str, Any]:
    return {**{f.name: getattr(sampling, f.name) for f in fields(SamplingOptions)}, "stop": list(sampling.stop)}


def completion_body(work: CompletionWork) -> dict:
    prompt = work.prompt if isinstance(work.prompt, str) else [asdict(m) for m in work.prompt]
    shape = None if work.shape is None else {**asdict(work.shape), "kind": work.shape.kind.value}
    return {
        "prompt": prompt,
        "mode": work.mode.value,
        "system": work.system,
        "sampling": sampling_body(work.sampling),  # its grammar, if any, is the shape's: the server adds it
        "shape": shape,
        "describe_shape": work.describe_shape,
    }


def parse_completion_body(data: object) -> CompletionWork:
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
    return CompletionWork(
        prompt=prompt,
        sampling=sampling_from(sampling, SamplingOptions()),
        mode=mode,
        system=system,
        shape=_shape_from(data.get("shape")),
        describe_shape=bool(data.get("describe_shape", True)),
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


def stats_from(data: dict) -> GenerationStats:
    from ..engine.model import GenerationStats

    known = {f.name for f in fields(GenerationStats)}
    return GenerationStats(**{k: v for k, v in data.items() if k in known})
