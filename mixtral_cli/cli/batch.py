"""`mixtral batch`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..engine.options import DEFAULT_PARALLEL, EngineOptions, SamplingOptions
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
        bool, typer.Option("--yes", "-y", help="Start a batch of hundreds of requests without asking.")
    ] = False,
    *,
    sampling: SamplingOptions,
    engine_options: EngineOptions,
) -> None:
    """Answer a file of requests offline, --parallel at a time, batched: OpenAI's batch format, or the model cards'.

    A batch file holds one request per line, as OpenAI's Batch API takes them: {"custom_id", "method":
    "POST", "url": "/v1/chat/completions" or "/v1/completions", "body": {...}}. The answers go to OUTPUT
    in input order, one line each with the body `mixtral serve` answers that route; failed requests go to
    the errors file. Every line is checked before the first generation: a bad line is an error line,
    never the end of the run. A folder of request files in the model cards' schema (what `complete
    --request` takes) is answered into the folder OUTPUT, a file of the same name each.

    Run the same command again after a Ctrl-C, a crash or a full disk: what was answered is skipped, and
    the output is only ever written whole. The sampling options are the defaults each request may
    override. A batch of more than 500 requests asks first (--yes does not).

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
            "agree": lambda n: _agree_to_long_batch(n, yes=yes, progress=progress),
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

    if server is not None:
        from ..serve.client import ServerClient

        return BatchRunner(parallel=parallel, client=ServerClient(server))
    from ..engine.model import Engine
    from ..sources.model_path import resolve_model
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress

    with StageProgress() as progress:
        model_file = resolve_model(model, progress=progress)
    options = replace(engine_options, sequences=parallel)
    return BatchRunner(
        parallel=parallel,
        load=lambda: Engine(model_file.path, options, on_notice=print_notice, pulled_as=model_file.pulled_as),
        model_id=model or model_file.path.name,
        model_path=model_file.path,
    )


def _read_input(source: Path) -> str:
    from ..base.errors import MixtralError

    try:
        return source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MixtralError(f"{source} cannot be read: {exc}.") from exc


def _agree_to_long_batch(requests: int, *, yes: bool, progress) -> None:  # noqa: ANN001
    """Before the first request: a batch too long to start unasked is said, and run if the user agrees."""
    from ..answer.summary_plan import LONG_JOB_CALLS
    from ..base.errors import MixtralError

    if requests <= LONG_JOB_CALLS or yes:
        return
    cost = f"This batch makes {requests:,} model calls."
    hint = "Give --yes to run it anyway."
    if not sys.stdin.isatty():
        raise MixtralError(f"{cost[:-1]}; not started without --yes, as stdin is not a terminal.", hint=hint)
    with progress.paused():
        if not typer.confirm(f"{cost} Go on?", default=False, err=True):
            raise MixtralError("Not started.", hint=hint)
