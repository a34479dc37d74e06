"""`mixtral complete`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..engine.options import EngineOptions, SamplingOptions
from .options import ModelOption, SystemOption, runs_a_model


@runs_a_model
def complete(
    prompt: Annotated[str | None, typer.Argument(show_default=False, help="The prompt; '-' reads stdin.")] = None,
    model: ModelOption = None,
    system: SystemOption = None,
    raw: Annotated[bool, typer.Option("--raw", help="Plain completion, no chat format.")] = False,
    chat: Annotated[bool, typer.Option("--chat", help="The Instruct chat format, whatever the model.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object: text, token counts, timings.")] = False,
    request: Annotated[
        str | None,
        typer.Option(
            "--request", metavar="FILE|-", help="Answer a model-card (Azure ML) request file.", show_default=False
        ),
    ] = None,
    *,
    sampling: SamplingOptions,
    engine_options: EngineOptions,
) -> None:
    """Complete a prompt and print the answer: for shell pipelines.

    The prompt comes from the argument, from stdin when it is piped (or PROMPT is '-'), or both: stdin
    first, then the argument, after a blank line. Instruct models (a chat template in the GGUF, or pulled
    by an Instruct name) get Mistral's chat format, base models plain completion. On a pipe, stdout holds
    the completion and a newline, nothing else.

    \b
    Examples:
        mixtral complete -m tiny "Write a haiku about experts"
        git diff | mixtral complete -m model.gguf "Write a commit message for this diff" --temperature 0.5
        mixtral complete -m model.gguf --request request.json
    """
    from ..engine.model import Engine
    from ..models import resolve_model
    from ..prompt import PromptMode
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress

    if raw and chat:
        raise typer.BadParameter("--raw and --chat exclude each other.", param_hint="--raw/--chat")
    if request is not None and prompt is not None:
        raise typer.BadParameter("give either a prompt or --request, not both.", param_hint="--request")
    mode = PromptMode.RAW if raw else PromptMode.CHAT if chat else PromptMode.AUTO
    request_text = _read_request(request) if request is not None else None
    text = None if request_text is not None else _read_prompt(prompt)
    with StageProgress() as progress:
        path = resolve_model(model, progress=progress)
    with Engine(path, engine_options, on_notice=print_notice) as engine:
        if request_text is not None:
            _answer_request(engine, request_text, sampling, mode=mode, system=system)
        else:
            _complete_text(engine, text, sampling, mode=mode, system=system, json_output=json_output)


def _complete_text(engine, text, sampling, *, mode, system, json_output) -> None:  # noqa: ANN001
    from ..ui.stream import stream_text
    from ..ui.summary import completion_json

    ids, chat = engine.completion_ids(text, system=system, mode=mode)
    generation = engine.generate(ids, sampling, answer=chat)
    if json_output:
        typer.echo(completion_json(engine, "".join(generation), generation.stats, chat=chat))
    else:
        stream_text(generation)


def _answer_request(engine, request_text, sampling, *, mode, system) -> None:  # noqa: ANN001
    from ..azure_request import parse_request, render_response

    request = parse_request(request_text)
    outputs = []
    for index, source in enumerate(request.inputs):
        prompt = list(source) if isinstance(source, tuple) else source
        ids, chat = engine.completion_ids(prompt, system=system, mode=mode)
        generated = "".join(engine.generate(ids, request.sampling(sampling), answer=chat))
        outputs.append(request.full_text(index, generated))
    typer.echo(render_response(outputs))


def _read_prompt(argument: str | None) -> str:
    from ..errors import MixtralError
    from ..textinput import read_stdin

    piped = argument == "-" or not sys.stdin.isatty()
    stdin_text = read_stdin() if piped else ""
    parts = [part for part in (stdin_text.rstrip("\n"), argument if argument != "-" else None) if part]
    if not parts:
        raise MixtralError(
            "No prompt given.", hint='Pass one as an argument, or pipe it: echo "..." | mixtral complete'
        )
    return "\n\n".join(parts)


def _read_request(source: str) -> str:
    from ..textinput import read_stdin, read_text_file

    return read_stdin() if source == "-" else read_text_file(Path(source))
