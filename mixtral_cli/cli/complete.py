"""`mixtral complete`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..engine.options import EngineOptions, SamplingOptions
from ..structured import finish_answer, with_instruction
from .options import ModelOption, SystemOption, runs_a_model

OUTPUT = "Output shape"


@runs_a_model
def complete(
    prompt: Annotated[str | None, typer.Argument(show_default=False, help="The prompt; '-' reads stdin.")] = None,
    model: ModelOption = None,
    system: SystemOption = None,
    raw: Annotated[bool, typer.Option("--raw", help="Plain completion, no chat format.")] = False,
    chat: Annotated[bool, typer.Option("--chat", help="The Instruct chat format, whatever the model.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object: text, token counts, timings.")] = False,
    request_file: Annotated[
        str | None,
        typer.Option(
            "--request", metavar="FILE|-", help="Answer a model-card (Azure ML) request file.", show_default=False
        ),
    ] = None,
    json_schema: Annotated[
        str | None,
        typer.Option(
            "--json-schema",
            metavar="FILE|-|'{...}'",
            rich_help_panel=OUTPUT,
            show_default=False,
            help="Answer with one JSON value that follows this JSON schema.",
        ),
    ] = None,
    json_object: Annotated[
        bool, typer.Option("--json-object", rich_help_panel=OUTPUT, help="Answer with one JSON object.")
    ] = False,
    grammar: Annotated[
        str | None,
        typer.Option(
            "--grammar",
            metavar="FILE|-",
            rich_help_panel=OUTPUT,
            show_default=False,
            help="Answer in this GBNF grammar (llama.cpp's format; start rule 'root').",
        ),
    ] = None,
    choice: Annotated[
        str | None,
        typer.Option(
            "--choice", metavar="A,B,...", rich_help_panel=OUTPUT, show_default=False, help="Answer with one label."
        ),
    ] = None,
    no_schema_prompt: Annotated[
        bool,
        typer.Option("--no-schema-prompt", rich_help_panel=OUTPUT, help="Do not describe the shape in the prompt."),
    ] = False,
    *,
    sampling: SamplingOptions,
    engine_options: EngineOptions,
) -> None:
    """Complete a prompt and print the answer: for shell pipelines.

    The prompt comes from the argument, from stdin when it is piped (or PROMPT is '-'), or both: stdin
    first, then the argument, after a blank line. Instruct models (a chat template in the GGUF, or pulled
    by an Instruct name) get Mistral's chat format, base models plain completion. On a pipe, stdout holds
    the completion and a newline, nothing else.

    With --json-schema, --json-object, --grammar or --choice, llama.cpp's grammar sampler keeps every
    token inside that shape, and the prompt says which shape is wanted (unless --no-schema-prompt). The
    answer is printed once complete: one JSON value (or label) alone on stdout. An answer cut by
    --max-tokens, the context or --stop is not printed and exits 3.

    \b
    Examples:
        mixtral complete -m tiny "Write a haiku about experts"
        git diff | mixtral complete -m model.gguf "Write a commit message for this diff" --temperature 0.5
        mixtral complete -m model.gguf --request request.json
        mixtral complete -m model.gguf --json-schema person.json "Who wrote Faust?" | jq .name
        mixtral complete -m model.gguf --choice positive,negative,neutral "Sentiment: I love it!"
    """
    from ..azure_request import parse_request
    from ..engine.model import Engine
    from ..errors import MixtralError
    from ..model_path import resolve_model
    from ..prompt import PromptMode
    from ..structured import constrained_sampling, output_shape, read_source
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress

    if raw and chat:
        raise typer.BadParameter("--raw and --chat exclude each other.", param_hint="--raw/--chat")
    if request_file is not None and prompt is not None:
        raise typer.BadParameter("give either a prompt or --request, not both.", param_hint="--request")
    mode = PromptMode.RAW if raw else PromptMode.CHAT if chat else PromptMode.AUTO
    shape = output_shape(json_schema=json_schema, json_object=json_object, grammar=grammar, choice=choice)
    request = None
    if request_file is not None:
        request = parse_request(read_source(request_file, "request", error=MixtralError))
    text = None if request is not None else _read_prompt(prompt)
    if request is not None:
        shape = request.output_shape() or shape
        sampling = request.sampling(sampling)
    with StageProgress() as progress:
        model_file = resolve_model(model, progress=progress)
    if shape is not None:
        sampling = constrained_sampling(model_file.path, shape, sampling)
    shown = None if no_schema_prompt else shape
    with Engine(model_file.path, engine_options, on_notice=print_notice, pulled_as=model_file.pulled_as) as engine:
        if request is not None:
            _answer_request(engine, request, sampling, mode=mode, system=system, shape=shape, shown=shown)
        else:
            text = with_instruction(text, shown)
            _complete_text(engine, text, sampling, mode=mode, system=system, json_output=json_output, shape=shape)


def _complete_text(engine, text, sampling, *, mode, system, json_output, shape) -> None:  # noqa: ANN001
    from ..errors import AnswerCutError
    from ..ui.json_output import completion_json
    from ..ui.stream import stream_text

    ids, chat = engine.completion_ids(text, system=system, mode=mode)
    generation = engine.generate(ids, sampling, answer=chat)
    if shape is None and not json_output:
        stream_text(generation)
        return
    generated = "".join(generation)
    try:
        answer = generated if shape is None else finish_answer(shape, generated, generation.stats, sampling)
    except AnswerCutError:
        if json_output:
            typer.echo(completion_json(engine, generated, generation.stats, chat=chat))
        raise
    typer.echo(completion_json(engine, answer, generation.stats, chat=chat) if json_output else answer)


def _answer_request(engine, request, sampling, *, mode, system, shape, shown) -> None:  # noqa: ANN001
    from ..azure_request import render_response

    outputs = []
    for index, source in enumerate(request.inputs):
        prompt = with_instruction(list(source) if isinstance(source, tuple) else source, shown)
        ids, chat = engine.completion_ids(prompt, system=system, mode=mode)
        generation = engine.generate(ids, sampling, answer=chat)
        generated = "".join(generation)
        if shape is not None:
            generated = finish_answer(shape, generated, generation.stats, sampling)
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
