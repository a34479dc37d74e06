"""`mixtral complete`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..answer.shapes import finish_answer
from ..engine.options import EngineOptions, SamplingOptions
from .options import ModelOption, ResponseShapeOption, ServerOption, SystemOption, runs_a_model

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
    response_shape: ResponseShapeOption = None,
    server: ServerOption = None,
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
    from ..answer.card_request import parse_request
    from ..answer.shapes import output_shape, read_source
    from ..base.errors import MixtralError
    from ..base.textinput import MAX_TEXT_BYTES
    from ..family.prompt_ids import PromptMode
    from ..serve.work import CompletionWork

    if raw and chat:
        raise typer.BadParameter("--raw and --chat exclude each other.", param_hint="--raw/--chat")
    if request_file is not None and prompt is not None:
        raise typer.BadParameter("give either a prompt or --request, not both.", param_hint="--request")
    mode = PromptMode.RAW if raw else PromptMode.CHAT if chat else PromptMode.AUTO
    shape = output_shape(json_schema=json_schema, json_object=json_object, grammar=grammar, choice=choice)
    if request_file is not None:
        request_text = read_source(request_file, "request", error=MixtralError, limit=MAX_TEXT_BYTES)
        if server is not None:
            from ..serve.client import ServerClient

            # The scoring route takes the request alone: options it cannot carry are refused, not dropped.
            local_only = {"--raw": raw, "--chat": chat, "--system": system, "--no-schema-prompt": no_schema_prompt}
            local_only |= {"a sampling option": sampling != SamplingOptions(), "an output shape": shape is not None}
            given = [name for name, used in local_only.items() if used]
            if given:
                raise typer.BadParameter(
                    f"with --server, the request's own parameters apply; {', '.join(given)} cannot go with it.",
                    param_hint="--request",
                )
            shape_name = response_shape.value if response_shape else None
            typer.echo(ServerClient(server).score(request_text, shape=shape_name))
            return
        _answer_request(
            parse_request(request_text), model, engine_options, sampling, mode, system, shape, no_schema_prompt,
            response_shape,
        )  # fmt: skip
        return
    work = CompletionWork(
        prompt=_read_prompt(prompt),
        sampling=sampling,
        mode=mode,
        system=system,
        shape=shape,
        describe_shape=not no_schema_prompt,
    )
    if server is not None:
        _complete_on_server(server, work, json_output=json_output)
    else:
        _complete_here(model, engine_options, work, json_output=json_output)


def _complete_here(model, engine_options, work, *, json_output) -> None:  # noqa: ANN001
    from ..answer.job import start_answer
    from ..answer.report import completion_report
    from ..answer.shapes import constrained_sampling
    from ..engine.model import Engine
    from ..ui.console import print_notice

    model_file = _model_file(model)
    sampling = constrained_sampling(model_file.path, work.shape, work.sampling) if work.shape else work.sampling
    shown = work.shape if work.describe_shape else None
    with Engine(model_file.path, engine_options, on_notice=print_notice, pulled_as=model_file.pulled_as) as engine:
        generation, chat = start_answer(engine, work.prompt, sampling, mode=work.mode, system=work.system, shown=shown)

        def report():  # noqa: ANN202
            return completion_report(engine, generation.stats, chat=chat)

        _print_answer(generation, lambda: generation.stats, report, sampling, shape=work.shape, json_output=json_output)


def _complete_on_server(url: str, work, *, json_output: bool) -> None:  # noqa: ANN001
    from ..serve.client import ServerClient
    from ..serve.work import CompletionDone

    done: list[CompletionDone] = []

    def chunks():  # noqa: ANN202
        for item in ServerClient(url).complete(work):
            if isinstance(item, CompletionDone):
                done.append(item)
            else:
                yield item

    stats, report = (lambda: done[0].stats), (lambda: done[0].report)
    _print_answer(chunks(), stats, report, work.sampling, shape=work.shape, json_output=json_output)


def _print_answer(chunks, stats, report, sampling, *, shape, json_output) -> None:  # noqa: ANN001
    """Stream the text, or print the finished answer (the --json object with it); ``stats`` and ``report`` are
    read once the chunks are done."""
    from ..answer.report import completion_json
    from ..base.errors import AnswerCutError
    from ..ui.stream import stream_text

    if shape is None and not json_output:
        stream_text(chunks)
        return
    generated = "".join(chunks)
    try:
        answer = generated if shape is None else finish_answer(shape, generated, stats(), sampling)
    except AnswerCutError:
        if json_output:
            typer.echo(completion_json(generated, report()))
        raise
    typer.echo(completion_json(answer, report()) if json_output else answer)


def _answer_request(request, model, engine_options, sampling, mode, system, shape, no_schema_prompt, response_shape):  # noqa: ANN001, PLR0913
    from ..answer.card_request import answer_request, card_response_shape, render_response
    from ..answer.shapes import constrained_sampling
    from ..engine.model import Engine
    from ..ui.console import print_notice

    shape = request.output_shape() or shape
    sampling = request.sampling(sampling)
    model_file = _model_file(model)
    if shape is not None:
        sampling = constrained_sampling(model_file.path, shape, sampling)
    shown = None if no_schema_prompt else shape
    with Engine(model_file.path, engine_options, on_notice=print_notice, pulled_as=model_file.pulled_as) as engine:
        outputs = answer_request(engine, request, sampling, mode=mode, system=system, shape=shape, shown=shown)
    pulled_name = model_file.pulled_as[0] if model_file.pulled_as else model
    typer.echo(render_response(outputs, response_shape or card_response_shape(pulled_name)))


def _model_file(model: str | None):  # noqa: ANN202 - ModelFile
    from ..sources.model_path import resolve_model
    from ..ui.progress import StageProgress

    with StageProgress() as progress:
        return resolve_model(model, progress=progress)


def _read_prompt(argument: str | None) -> str:
    from ..base.errors import MixtralError
    from ..base.textinput import read_stdin

    piped = argument == "-" or not sys.stdin.isatty()
    stdin_text = read_stdin() if piped else ""
    parts = [part for part in (stdin_text.rstrip("\n"), argument if argument != "-" else None) if part]
    if not parts:
        raise MixtralError(
            "No prompt given.", hint='Pass one as an argument, or pipe it: echo "..." | mixtral complete'
        )
    return "\n\n".join(parts)
