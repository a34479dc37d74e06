"""The HTTP routes (a Starlette app): OpenAI's, the model cards' scoring route, mixtral's own, and /health.

Every route but /health checks the API key first, before reading the body; bodies past the limit are
refused with 413 as they arrive. Prompts and answers are logged only with --verbose.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..answer.card_request import ResponseShape, parse_request, render_response
from ..answer.shapes import OutputShape
from ..base.errors import InvalidRequestError, MixtralError, ModelNotFoundError
from ..base.textinput import parse_json
from ..engine.options import SamplingOptions
from .openai_api import Answer, OpenAIRequest, model_object, models_list, parse_chat_request, parse_text_request
from .openai_errors import APIError, api_error, body_too_large, invalid_api_key, unknown_route
from .scheduler import ClientGone, Job, ModelHost
from .work import (
    COMPLETE_ROUTE,
    GENERATE_ROUTE,
    IDS_ROUTE,
    MODEL_ROUTE,
    CompletionDone,
    CompletionWork,
    answer_card_request,
    complete,
    generate,
    ids_of,
    parse_completion_body,
    parse_generate_body,
)

log = logging.getLogger("mixtral.serve")
MAX_BODY_BYTES = 4 * 2**20  # a full context of text, as JSON, with room to spare


@dataclass(frozen=True)
class ServeConfig:
    model_id: str  # what /v1/models lists: the name the server was started with
    model_path: Path
    sampling: SamplingOptions  # the defaults of every request
    response_shape: ResponseShape  # of the scoring route, unless a request asks for the other
    api_key: str | None = None
    queue_timeout: float = 60.0
    max_body_bytes: int = MAX_BODY_BYTES
    verbose: bool = False  # log prompts and answers
    # Other names a request's "model" may give for the served one (its file's name, its pulled name, ...).
    model_aliases: frozenset[str] = frozenset()
    cors_origins: tuple[str, ...] = ()  # the browser pages' origins allowed to call (none: no CORS headers)

    def serves(self, name: str) -> bool:
        return name == self.model_id or name in self.model_aliases


class _BodyTooLarge(Exception):
    pass


def error_body(exc: MixtralError) -> dict[str, Any]:
    """An error as OpenAI's clients read it, with what `--server` needs to report it as if it happened locally."""
    return api_error(exc).body()


def create_app(host: ModelHost, config: ServeConfig) -> Starlette:
    handlers = _Handlers(host, config)
    routes = [
        Route("/health", handlers.health, methods=["GET"]),
        Route("/v1/models", handlers.guarded(handlers.models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", handlers.guarded(handlers.model), methods=["GET"]),
        Route("/v1/chat/completions", handlers.guarded(handlers.chat_completions), methods=["POST"]),
        Route("/v1/completions", handlers.guarded(handlers.completions), methods=["POST"]),
        Route("/score", handlers.guarded(handlers.score), methods=["POST"]),
        Route(COMPLETE_ROUTE, handlers.guarded(handlers.mixtral_complete), methods=["POST"]),
        Route(MODEL_ROUTE, handlers.guarded(handlers.mixtral_model), methods=["GET"]),
        Route(IDS_ROUTE, handlers.guarded(handlers.mixtral_ids), methods=["POST"]),
        Route(GENERATE_ROUTE, handlers.guarded(handlers.mixtral_generate), methods=["POST"]),
    ]
    middleware = []
    if config.cors_origins:
        # Answers preflights (OPTIONS) before the API key is asked for, as browsers send them without it.
        cors = {"allow_origins": list(config.cors_origins), "allow_methods": ["GET", "POST"], "allow_headers": ["*"]}
        middleware.append(Middleware(CORSMiddleware, **cors))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _route_error_response})


class _Handlers:
    def __init__(self, host: ModelHost, config: ServeConfig) -> None:
        self.host = host
        self.config = config

    def guarded(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the API key, the body limit, and our errors turned into HTTP answers."""

        async def guarded(request: Request) -> Response:
            if not self._authorized(request):
                return _json_error(invalid_api_key())
            try:
                return await handler(request)
            except _BodyTooLarge:
                return _json_error(body_too_large(self.config.max_body_bytes))
            except ClientGone:
                return Response(status_code=499)  # nobody reads it; the work was cancelled
            except MixtralError as exc:
                return _error_response(exc)

        return guarded

    def _authorized(self, request: Request) -> bool:
        expected = self.config.api_key
        if not expected:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _BodyTooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def _json(self, request: Request) -> object:
        try:
            text = (await self._body(request)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError(f"The request body is not UTF-8 text (byte {exc.start}).") from exc
        return parse_json(text, "The request body", error=InvalidRequestError)

    async def _sampling(self, sampling: SamplingOptions, shape: OutputShape | None) -> SamplingOptions:
        """A request's sampling, bounded by the context, with its shape's grammar once llama.cpp has parsed it."""
        from dataclasses import replace

        from ..answer.shapes import constrained_sampling

        if self.host.n_ctx and sampling.max_tokens > self.host.n_ctx:
            # No answer outgrows the context: a larger budget would end the same way, so it is clipped.
            sampling = replace(sampling, max_tokens=self.host.n_ctx)
        if shape is None:
            return sampling
        return await run_in_threadpool(constrained_sampling, self.config.model_path, shape, sampling)

    async def _start(self, request: Request, work: Callable) -> Job:  # noqa: ANN001
        job = self.host.submit(work)
        try:
            await job.wait_turn(timeout=self.config.queue_timeout, client_gone=request.is_disconnected)
        except BaseException:
            job.cancel()
            raise
        return job

    # -- routes ---------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        host = self.host
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "model": self.config.model_id,
                "loaded": host.loaded,
                "loads": host.loads,
                "busy": host.busy,
                "waiting": host.waiting,
                "requests_run": host.requests_run,
            }
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse(models_list(self.config.model_id))

    async def model(self, request: Request) -> Response:
        self._check_model(request.path_params["model_id"])
        return JSONResponse(model_object(self.config.model_id))

    def _check_model(self, name: object) -> None:
        """A request may leave "model" out; one it names must be the served model, by any of its names."""
        if name is None or isinstance(name, str) and self.config.serves(name):
            return
        if not isinstance(name, str):
            raise InvalidRequestError('"model" must be a string.', param="model")
        raise ModelNotFoundError(
            f"The model `{name}` does not exist on this server: it serves `{self.config.model_id}`.",
            hint="Ask for the served model, or start a server with the model you want.",
        )

    async def chat_completions(self, request: Request) -> Response:
        return await self._openai(request, parse_chat_request(await self._openai_body(request), self.config.sampling))

    async def completions(self, request: Request) -> Response:
        return await self._openai(request, parse_text_request(await self._openai_body(request), self.config.sampling))

    async def _openai_body(self, request: Request) -> object:
        data = await self._json(request)
        if isinstance(data, dict):
            self._check_model(data.get("model"))
        return data

    async def _openai(self, request: Request, parsed: OpenAIRequest) -> Response:
        work = parsed.work
        sampling = await self._sampling(work.sampling, work.shape)
        job = await self._start(request, complete(work, sampling))
        answer = Answer(chat=work.mode.value == "chat", model=self.config.model_id)
        if parsed.stream:
            events = self._openai_events(job, answer, request, work, parsed.include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        parts, done = await self._collect(job, request)
        text = "".join(parts)
        self._log_exchange(work.prompt, text)
        return JSONResponse(answer.whole(text, done.stats))

    async def _openai_events(
        self, job: Job, answer: Answer, request: Request, work: CompletionWork, include_usage: bool
    ) -> AsyncIterator[str]:
        parts: list[str] = []
        try:
            if answer.chat:
                yield _sse(answer.chunk(first=True))
            async for item in job.results(request.is_disconnected):
                if isinstance(item, CompletionDone):
                    yield _sse(answer.chunk(finish=item.stats))
                    if include_usage:
                        yield _sse(answer.usage_chunk(item.stats))
                else:
                    parts.append(item)
                    yield _sse(answer.chunk(item))
            yield "data: [DONE]\n\n"
        except ClientGone:
            return
        except MixtralError as exc:
            yield _sse({"error": error_body(exc)})
        finally:
            self._log_exchange(work.prompt, "".join(parts))

    async def _collect(self, job: Job, request: Request) -> tuple[list[str], CompletionDone]:
        parts, done = [], None
        async for item in job.results(request.is_disconnected):
            if isinstance(item, CompletionDone):
                done = item
            else:
                parts.append(item)
        assert done is not None, "a completion job ends with its CompletionDone"
        return parts, done

    async def score(self, request: Request) -> Response:
        try:
            text = (await self._body(request)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError("The request body is not UTF-8.") from exc
        card_request = parse_request(text)
        shape_name = request.query_params.get("shape", self.config.response_shape.value)
        try:
            response_shape = ResponseShape(shape_name)
        except ValueError as exc:
            raise InvalidRequestError("The shape parameter must be per-input or by-index.") from exc
        shape = card_request.output_shape()
        sampling = await self._sampling(card_request.sampling(self.config.sampling), shape)
        job = await self._start(request, answer_card_request(card_request, sampling, shape))
        outputs = [item async for item in job.results(request.is_disconnected)][0]
        if self.config.verbose:
            log.info("score request: %s -> %s", text, outputs)
        return Response(render_response(outputs, response_shape), media_type="application/json")

    async def mixtral_complete(self, request: Request) -> Response:
        """`mixtral complete --server`: the CLI's own work, answered as one JSON object per line."""
        work = parse_completion_body(await self._json(request))
        sampling = await self._sampling(work.sampling, work.shape)
        job = await self._start(request, complete(work, sampling))
        return StreamingResponse(self._lines(job, request, work.prompt), media_type="application/x-ndjson")

    async def mixtral_model(self, request: Request) -> Response:
        return JSONResponse(self.host.facts)

    async def mixtral_ids(self, request: Request) -> Response:
        job = await self._start(request, ids_of(await self._json(request)))
        (ids,) = [item async for item in job.results(request.is_disconnected)]
        return JSONResponse({"ids": ids})

    async def mixtral_generate(self, request: Request) -> Response:
        """`mixtral chat` and `summarize --server`: a generation after prompt ids, one JSON object per line."""
        n_vocab = self.host.facts["info"]["n_vocab"]
        ids, sampling, answer = parse_generate_body(await self._json(request), n_vocab=n_vocab)
        job = await self._start(request, generate(ids, await self._sampling(sampling, None), answer=answer))
        return StreamingResponse(self._lines(job, request, ids), media_type="application/x-ndjson")

    async def _lines(self, job: Job, request: Request, prompt: object) -> AsyncIterator[str]:
        parts: list[str] = []
        try:
            async for item in job.results(request.is_disconnected):
                if isinstance(item, CompletionDone):
                    line = {"done": {"stats": asdict(item.stats), "report": item.report}}
                else:
                    parts.append(item)
                    line = {"text": item}
                yield json.dumps(line, ensure_ascii=False) + "\n"
        except ClientGone:
            return
        except MixtralError as exc:
            yield json.dumps({"error": error_body(exc)}, ensure_ascii=False) + "\n"
        finally:
            self._log_exchange(prompt, "".join(parts))

    def _log_exchange(self, prompt: object, answer: str) -> None:
        if self.config.verbose:
            log.info("prompt: %r", prompt)
            log.info("answer: %r", answer)


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _error_response(exc: MixtralError) -> Response:
    return _json_error(api_error(exc))


def _json_error(error: APIError) -> Response:
    return JSONResponse(error.body(), error.status, headers=error.headers)


async def _route_error_response(request: Request, exc: HTTPException) -> Response:
    return _json_error(unknown_route(request.method, request.url.path, exc.status_code, dict(exc.headers or {})))
