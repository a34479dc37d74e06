"""What a served request asks of the engine, and the work that answers it on the engine thread.

Every route becomes a ``CompletionWork`` (or a model-card request): the OpenAI routes, the scoring route,
and mixtral's own route, which `mixtral complete --server` uses. Its body is the CLI's work as it stands
after the CLI parsed its options (``completion_body``/``parse_completion_body``), so a completion over
HTTP runs exactly the steps `mixtral complete` runs locally.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from ..engine.options import SamplingOptions
from ..errors import InvalidRequestError, MixtralError
from ..prompt import Message, PromptMode, messages_from_dicts
from ..structured import AnswerKind, OutputShape

if TYPE_CHECKING:
    from ..azure_request import ModelCardRequest
    from ..engine.model import Engine, GenerationStats

COMPLETE_ROUTE = "/mixtral/v1/complete"  # mixtral's own route, which `mixtral complete --server` uses
_SAMPLING_NUMBERS = {
    "temperature": (float, 0.0, None),
    "top_p": (float, 0.0, 1.0),
    "top_k": (int, 0, None),
    "min_p": (float, 0.0, 1.0),
    "repeat_penalty": (float, 0.0, None),
    "seed": (int, 0, 2**32 - 2),
    "max_tokens": (int, 1, None),
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
    """The end of a completion: its statistics, and the `--json` report of `mixtral complete` without the text."""

    stats: GenerationStats
    report: dict


def complete(work: CompletionWork, sampling: SamplingOptions):  # noqa: ANN201 - Callable[[Engine], Iterator]
    """The job that answers ``work``: its text chunks, then a ``CompletionDone``."""
    from ..answer import start_answer
    from ..ui.json_output import completion_report

    def run(engine: Engine) -> Iterator[object]:
        prompt = list(work.prompt) if isinstance(work.prompt, tuple) else work.prompt
        shown = work.shape if work.describe_shape else None
        generation, chat = start_answer(engine, prompt, sampling, mode=work.mode, system=work.system, shown=shown)
        yield from generation
        report = completion_report(engine.info, generation.stats, chat=chat, load_s=engine.load_s)
        yield CompletionDone(generation.stats, report)

    return run


def answer_card_request(request: ModelCardRequest, sampling: SamplingOptions, shape: OutputShape | None):  # noqa: ANN201
    """The job that answers a model-card request: one list of answers, in input order."""
    from ..azure_request import answer_request

    def run(engine: Engine) -> Iterator[object]:
        yield answer_request(engine, request, sampling, mode=PromptMode.AUTO, system=None, shape=shape, shown=shape)

    return run


def sampling_from(
    data: dict[str, Any], base: SamplingOptions, *, names: dict[str, str] | None = None
) -> SamplingOptions:
    """``base`` with the values ``data`` gives, checked; ``names`` maps a field to the key ``data`` uses."""
    names = names or {}
    changes: dict[str, Any] = {}
    for field, (kind, low, high) in _SAMPLING_NUMBERS.items():
        key = names.get(field, field)
        value = data.get(key)
        if value is None:
            continue
        number = kind is float and isinstance(value, (int, float)) or kind is int and isinstance(value, int)
        if isinstance(value, bool) or not number or value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise InvalidRequestError(f'"{key}" must be a{"n integer" if kind is int else " number"} {bounds}.')
        changes[field] = kind(value)
    stop = data.get(names.get("stop", "stop"))
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


def completion_body(work: CompletionWork) -> dict:
    prompt = work.prompt if isinstance(work.prompt, str) else [asdict(m) for m in work.prompt]
    sampling = {f.name: getattr(work.sampling, f.name) for f in fields(SamplingOptions) if f.name != "grammar"}
    shape = None if work.shape is None else {**asdict(work.shape), "kind": work.shape.kind.value}
    return {
        "prompt": prompt,
        "mode": work.mode.value,
        "system": work.system,
        "sampling": {**sampling, "stop": list(work.sampling.stop)},
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
