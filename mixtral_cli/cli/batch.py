"""`mixtral batch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..engine.options import DEFAULT_PARALLEL, EngineOptions, SamplingOptions
from .long_job import agree_to_long_job
from .options import ModelOption, ResponseShapeOption, ServerOption, runs_a_model


@runs_a_model
def batch(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            show_default=False,
            help="An OpenAI batch file (JSONL), or a folder of model-card request files.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            show_default=False,
            help="The answers: a JSONL file for a batch file, a folder for a folder of requests.",
        ),
    ],
    errors: Annotated[
        Path | None,
        typer.Option(show_default="OUTPUT's name with .errors.jsonl, beside it", help="Where failed requests go."),
    ] = None,
    model: ModelOption = None,
    parallel: Annotated[
        int,
        typer.Option("--parallel", "-np", min=1, max=64, help="Requests answered at once, batched in each evaluation."),
    ] = DEFAULT_PARALLEL,
    server: ServerOption = None,
    response_shape: ResponseShapeOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Start a batch of hundreds of requests, or of hours, without asking.")
    ] = False,
    *,
    sampling: SamplingOptions,
    engine_options: EngineOptions,
) -> None:
    """Answer a file of requests offline, --parallel at a time, batched: OpenAI's batch format, or the model cards'.

    A batch file holds one request per line, as OpenAI's Batch API takes them: {"custom_id", "method":
    "POST", "url": "/v1/chat/completions" or "/v1/completions", "body": {...}}. The answers go to OUTPUT
    in input order, one line each with the body `mixtral serve` answers that route; failed requests go to
    the errors file. Every line is checked before the first generation, as `mixtral serve` checks a
    request (a "model" it does not run, more than 32 answers): a bad line is an error line, with the code
    the server answers it with, never the end of the run. A folder of request files in the model cards'
    schema (what `complete --request` takes) is answered into the folder OUTPUT, a file of the same name
    each.

    Run the same command again after a Ctrl-C, a crash or a full disk: what was answered is skipped, and
    the output is only ever written whole. The sampling options are the defaults each request may
    override. A batch of more than 500 requests, or one that may take more than 15 minutes at the
    speeds measured for the model on this machine, asks first (--yes does not).

    \b
    Examples:
        mixtral batch requests.jsonl -o answers.jsonl -m 8x7b-instruct
        mixtral batch requests.jsonl -o answers.jsonl --server http://127.0.0.1:8080
        mixtral batch card-requests/ -o card-answers/ -m 8x7b-instruct --parallel 8
    """
    from ..answer.card_request import card_response_shape
    from ..serve.batch_file import run_batch_file
    from ..serve.card_folder import run_card_folder
    from ..ui.batch_progress import BatchProgress

    runner = _runner(model, server, parallel, engine_options)
    folder = source.is_dir()
    with BatchProgress() as progress:
        common = {
            "errors": errors,
            "runner": runner,
            "sampling": sampling,
            "agree": lambda calls, seconds: agree_to_long_job(
                "This batch", calls, seconds, yes=yes, hint="Give --yes to run it anyway.", progress=progress
            ),
            "progress": progress.start,
            "on_result": lambda result: progress.advance(result.tokens),
        }
        if folder:
            shape = response_shape or card_response_shape(model)
            summary = run_card_folder(source, output, response_shape=shape, **common)
        else:
            summary = run_batch_file(_read_input(source), output, **common)
    answered = "answered" if not summary.failed else f"answered, {summary.failed} failed"
    skipped = f"; {summary.skipped} answered earlier, skipped" if summary.skipped else ""
    typer.echo(
        f"{summary.done} requests {answered}{skipped}: {summary.tokens} tokens in {summary.seconds:.1f} s "
        f"({summary.tokens_per_second:.1f} tok/s).",
        err=True,
    )


def _runner(model, server, parallel, engine_options):  # noqa: ANN001, ANN202 - a BatchRunner
    from dataclasses import replace

    from ..serve.batch_file import BatchRunner
    from ..serve.request_rules import ServedModel

    if server is not None:
        from ..serve.client import ServerClient

        return BatchRunner(parallel=parallel, client=ServerClient(server))
    from ..engine.model import Engine
    from ..sources.model_path import resolve_model
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress
    from .serve import served_model_aliases

    with StageProgress() as progress:
        model_file = resolve_model(model, progress=progress)
    path, pulled = model_file.path, model_file.pulled_as
    options = replace(engine_options, sequences=parallel)
    return BatchRunner(
        parallel=parallel,
        load=lambda: Engine(path, options, on_notice=print_notice, pulled_as=pulled),
        load_vocab=lambda: Engine(path, options, on_notice=print_notice, vocab_only=True, pulled_as=pulled),
        ctx_size=options.ctx_size,
        model=ServedModel(model or path.name, served_model_aliases(path, pulled[0] if pulled else None)),
        model_path=path,
    )


def _read_input(source: Path) -> str:
    from ..base.errors import MixtralError

    try:
        return source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MixtralError(f"{source} cannot be read: {exc}.") from exc
