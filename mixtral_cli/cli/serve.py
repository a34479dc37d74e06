"""`mixtral serve`: keep a model loaded and answer HTTP requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..base.bounds import MAX_WAIT_S
from ..engine.options import DEFAULT_PARALLEL, EngineOptions, SamplingOptions
from .options import ModelOption, ResponseShapeOption, runs_a_model

SERVER = "Server"


@runs_a_model
def serve(
    model: ModelOption = None,
    host: Annotated[
        str,
        typer.Option(
            rich_help_panel=SERVER, help="Address to listen on; anything but loopback is reachable by others."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, rich_help_panel=SERVER, help="Port to listen on; 0: any free one.")
    ] = 8080,
    keep_alive: Annotated[
        str,
        typer.Option(
            "--keep-alive",
            metavar="DURATION",
            rich_help_panel=SERVER,
            help="Unload the weights after this long idle (5m, 30s, 1h); 0: after each request; -1: never.",
        ),
    ] = "5m",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="MIXTRAL_API_KEY",
            rich_help_panel=SERVER,
            show_default=False,
            help="Require this key (Authorization: Bearer KEY) on every route but /health.",
        ),
    ] = None,
    parallel: Annotated[
        int,
        typer.Option(
            "--parallel",
            "-np",
            min=1,
            max=64,
            rich_help_panel=SERVER,
            help="Requests answered at once, batched: every running one advances in each evaluation. Each has "
            "a KV cache sequence of its own of --ctx-size tokens; without --ctx-size the context is capped so all "
            "of them fit in memory.",
        ),
    ] = DEFAULT_PARALLEL,
    queue_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=MAX_WAIT_S,
            rich_help_panel=SERVER,
            help="Seconds a request may wait for the model before a 503.",
        ),
    ] = 60.0,
    response_shape: ResponseShapeOption = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            rich_help_panel=SERVER,
            show_default=False,
            help="Let browser pages from ORIGIN (http://localhost:3000, or * for any) call the API; repeatable.",
        ),
    ] = None,
    *,
    sampling: SamplingOptions,
    engine_options: EngineOptions,
) -> None:
    """Keep a model loaded and answer HTTP requests, until Ctrl-C or SIGTERM.

    Routes: OpenAI's POST /v1/chat/completions, /v1/completions and /v1/responses (stateless; streamed as
    server-sent events on request), GET /v1/models and /v1/models/{id}, with OpenAI's error objects (a
    "model" other than the served one, its file name or `tiny` for the demo is 404 model_not_found;
    docs/openai-api.md lists what is honoured); the model cards' scoring route POST /score (the request schema of
    `mixtral complete --request`); GET /health (with the slots in use). Requests are answered in the order they
    came, --parallel at a time (4 by default, as llama-server), batched: each evaluation gives every running one
    a token and a waiting prompt a chunk; one that waits longer than --queue-timeout is answered 503 with
    Retry-After. Each runs in a KV cache sequence of its own: a conversation's next turn goes to the
    sequence that still holds its earlier turns, and evaluates only what is new. The sampling
    options are the defaults of every request, which may override them; a request's max_tokens is
    bounded by the context, as llama-server bounds it (an answer ends when the context is full, finish
    reason "length"). Prompts and answers are logged only with --verbose. --cors-origin lets pages from
    that origin (a loopback page, say) call the API from a browser.

    It listens on 127.0.0.1 unless --host says otherwise; with any other host, set --api-key (or
        MIXTRAL_API_KEY). `mixtral complete --server URL` sends its work here.

        \b
        Examples:
            mixtral serve -m 8x7b-instruct --keep-alive 30m
            MIXTRAL_API_KEY=secret mixtral serve -m model.gguf --host 0.0.0.0 --port 8080
            curl -s localhost:8080/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hi"}]}'
    """
    from dataclasses import replace

    from ..answer.card_request import card_response_shape
    from ..engine.layout import for_chat
    from ..engine.model import Engine
    from ..engine.rpc_worker import is_loopback
    from ..serve import server_runner
    from ..serve.scheduler import parse_keep_alive
    from ..sources.model_path import resolve_model
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress

    try:
        keep_alive_s = parse_keep_alive(keep_alive)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--keep-alive") from exc
    run_server = server_runner()
    from ..serve.app import ServeConfig  # the serve extra's packages, there once server_runner() returns

    with StageProgress() as progress:
        model_file = resolve_model(model, progress=progress)
    path, pulled = model_file.path, model_file.pulled_as
    config = ServeConfig(
        model_id=model or path.name,
        model_path=path,
        sampling=sampling,
        response_shape=response_shape or card_response_shape(pulled[0] if pulled else model),
        api_key=api_key or None,
        queue_timeout=queue_timeout,
        verbose=engine_options.verbose,
        model_aliases=served_model_aliases(path, pulled[0] if pulled else None),
        cors_origins=tuple(cors_origin or ()),
    )
    if not is_loopback(host):
        print_notice(
            f"Listening on {host}: anyone who reaches this port can use the model"
            + (", with the API key." if api_key else "; set --api-key (or MIXTRAL_API_KEY) to require a key.")
        )
    run_server(
        config,
        load=lambda: Engine(
            path, replace(for_chat(engine_options), sequences=parallel), on_notice=print_notice, pulled_as=pulled
        ),
        keep_alive=keep_alive_s,
        sequences=parallel,
        host=host,
        port=port,
        on_ready=lambda url: typer.echo(f"Serving {config.model_id} at {url} (OpenAI base URL: {url}/v1)", err=True),
    )
    print_notice("Server stopped.")


def served_model_aliases(path: Path, pulled_name: str | None) -> frozenset[str]:
    """The names a request's "model" may give besides the one the server was started with: the file's name
    with and without .gguf, its path, the name it was pulled by, and `tiny` for the demo model."""
    from ..sources.demo import DEMO_NAME, demo_model_path

    names = {path.name, path.stem, str(path), *([pulled_name] if pulled_name else [])}
    if path.name == demo_model_path().name:
        names.add(DEMO_NAME)
    return frozenset(names)
