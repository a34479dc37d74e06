"""`mixtral complete`."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated

import typer

from ..engine.options import EngineOptions, SamplingOptions
from .options import (
    MessagesOption,
    ModelOption,
    ResponseShapeOption,
    ServerOption,
    SystemOption,
    ToolsOption,
    runs_a_model,
)

OUTPUT = "Output shape"
TOOLS = "Function calling"


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
    messages: MessagesOption = None,
    tools: ToolsOption = None,
    tool_choice: Annotated[
        str,
        typer.Option(
            "--tool-choice",
            metavar="auto|none|required|NAME",
            rich_help_panel=TOOLS,
            help="Whether the model may call the --tools (auto), must not, must, or must call this function.",
        ),
    ] = "auto",
    no_parallel_calls: Annotated[
        bool, typer.Option("--no-parallel-calls", rich_help_panel=TOOLS, help="At most one call per answer.")
    ] = False,
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

    With --tools (Mixtral-8x22B-Instruct only) the model may answer by calling functions: each call is
    printed as one JSON object per line, in OpenAI's tool_calls format; --messages continues a conversation
    in OpenAI's format, tool results included.

    \b
    Examples:
        mixtral complete -m tiny "Write a haiku about experts"
        git diff | mixtral complete -m model.gguf "Write a commit message for this diff" --temperature 0.5
        mixtral complete -m model.gguf --request request.json
        mixtral complete -m model.gguf --json-schema person.json "Who wrote Faust?" | jq .name
        mixtral complete -m model.gguf --choice positive,negative,neutral "Sentiment: I love it!"
        mixtral complete -m 8x22b-instruct --tools tools.json "Weather in Paris?" --tool-choice required
        mixtral complete -m 8x22b-instruct --tools tools.json --messages round.json
    """
    from ..answer.request import AnswerRequest
    from ..answer.shapes import output_shape
    from ..answer.tool_calls import tool_request_from_file
    from ..family.prompt_ids import PromptMode

    if raw and chat:
        raise typer.BadParameter("--raw and --chat exclude each other.", param_hint="--raw/--chat")
    if request_file is not None and (prompt is not None or messages is not None or tools is not None):
        raise typer.BadParameter("--request brings its own inputs: give no prompt, --messages or --tools.")
    if messages is not None and prompt is not None:
        raise typer.BadParameter("give either a prompt or --messages FILE, not both.", param_hint="--messages")
    request = AnswerRequest(
        prompt="",  # read below, once the options are known to be right; a --request brings its own inputs
        sampling=sampling,
        mode=PromptMode.RAW if raw else PromptMode.CHAT if chat else PromptMode.AUTO,
        system=system,
        shape=output_shape(json_schema=json_schema, json_object=json_object, grammar=grammar, choice=choice),
        describe_shape=not no_schema_prompt,
        tools=tool_request_from_file(tools, choice=tool_choice, parallel=not no_parallel_calls),
    )
    if request_file is not None and server is not None:
        _score_on_server(server, request_file, request, response_shape)
    elif request_file is not None:
        _answer_card_request(request_file, request, model, engine_options, response_shape)
    elif server is not None:
        from ..serve.client import ServerClient

        request = replace(request, prompt=_read_prompt(prompt, messages))
        _print_answer(ServerClient(server).complete(request), request, json_output=json_output)
    else:
        request = replace(request, prompt=_read_prompt(prompt, messages))
        _complete_here(request, model, engine_options, json_output=json_output)


def _complete_here(request, model, engine_options, *, json_output) -> None:  # noqa: ANN001
    from ..answer.job import AnswerJob

    model_file = _model_file(model)
    job = AnswerJob(request, model_path=model_file.path)  # a shape the model cannot take is refused before it loads
    with _engine(model_file, engine_options) as engine:
        _print_answer(engine.run_alone(job.run(engine)), request, json_output=json_output)


def _print_answer(items, request, *, json_output: bool) -> None:  # noqa: ANN001 - Iterator[str | AnswerEnd]
    """Stream the text, or print the answer once it is finished (with the --json object); an answer that may
    not be printed raises its error, after its --json object."""
    from ..answer.report import completion_json
    from ..answer.request import AnswerEnd
    from ..answer.tool_calls import calls_json_lines
    from ..ui.stream import stream_text

    ends: list[AnswerEnd] = []

    def chunks():  # noqa: ANN202
        for item in items:
            if isinstance(item, AnswerEnd):
                ends.append(item)
            elif isinstance(item, str):  # a call's deltas: the calls print whole, once complete
                yield item

    if request.shape is None and request.tools is None and not json_output:
        stream_text(chunks())
        return
    text = "".join(chunks())
    (end,) = ends
    if json_output:
        typer.echo(completion_json(text if end.answer is None else end.answer, end.report, end.tool_calls))
    if end.error is not None:
        raise end.error
    if not json_output:
        typer.echo(calls_json_lines(end.tool_calls) if end.tool_calls else end.answer)


def _score_on_server(url: str, request_file: str, request, response_shape) -> None:  # noqa: ANN001
    from ..serve.client import ServerClient

    # The scoring route takes the request alone: options it cannot carry are refused, not dropped.
    local_only = {"--raw": request.mode.value == "raw", "--chat": request.mode.value == "chat"}
    local_only |= {"--system": request.system, "--no-schema-prompt": not request.describe_shape}
    local_only |= {"a sampling option": request.sampling != SamplingOptions(), "an output shape": request.shape}
    given = [name for name, used in local_only.items() if used]
    if given:
        raise typer.BadParameter(
            f"with --server, the request's own parameters apply; {', '.join(given)} cannot go with it.",
            param_hint="--request",
        )
    shape_name = response_shape.value if response_shape else None
    typer.echo(ServerClient(url).score(_read_request(request_file), shape=shape_name))


def _answer_card_request(request_file: str, request, model, engine_options, response_shape) -> None:  # noqa: ANN001
    from ..answer.card_request import CardJob, card_response_shape, parse_request, render_response

    card_request = parse_request(_read_request(request_file))
    model_file = _model_file(model)
    job = CardJob(
        card_request,
        request.sampling,
        model_path=model_file.path,
        shape=request.shape,
        mode=request.mode,
        system=request.system,
        describe_shape=request.describe_shape,
    )
    with _engine(model_file, engine_options) as engine:
        *_, outputs = engine.run_alone(job.run(engine))
    pulled_name = model_file.pulled_as[0] if model_file.pulled_as else model
    typer.echo(render_response(outputs, response_shape or card_response_shape(pulled_name)))


def _read_request(source: str) -> str:
    from ..answer.shapes import read_source
    from ..base.errors import MixtralError
    from ..base.textinput import MAX_TEXT_BYTES

    return read_source(source, "request", error=MixtralError, limit=MAX_TEXT_BYTES)


def _engine(model_file, engine_options):  # noqa: ANN001, ANN202 - Engine
    from ..engine.model import Engine
    from ..ui.console import print_notice

    return Engine(model_file.path, engine_options, on_notice=print_notice, pulled_as=model_file.pulled_as)


def _model_file(model: str | None):  # noqa: ANN202 - ModelFile
    from ..sources.model_path import resolve_model
    from ..ui.progress import StageProgress

    with StageProgress() as progress:
        return resolve_model(model, progress=progress)


def _read_prompt(argument: str | None, messages: str | None = None) -> str | tuple:
    from ..base.errors import MixtralError
    from ..base.textinput import read_stdin
    from ..family.prompt_ids import read_messages

    if messages is not None:
        return tuple(read_messages(messages))
    piped = argument == "-" or not sys.stdin.isatty()
    stdin_text = read_stdin() if piped else ""
    parts = [part for part in (stdin_text.rstrip("\n"), argument if argument != "-" else None) if part]
    if not parts:
        raise MixtralError(
            "No prompt given.", hint='Pass one as an argument, or pipe it: echo "..." | mixtral complete'
        )
    return "\n\n".join(parts)
