"""The HTTP routes (a Starlette app): OpenAI's, the model cards' scoring route, mixtral's own, and /health.

Every route but /health checks the API key first, before reading the body; bodies past the limit are
refused with 413 as they arrive. Prompts and answers are logged only with --verbose.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..answer.card_request import CardJob, ResponseShape, parse_request, render_response
from ..answer.job import AnswerJob
from ..answer.logprobs import Logprobs
from ..answer.request import AnswerEnd, AnswerRequest
from ..answer.tool_calls import ToolCallDelta
from ..base.errors import InvalidRequestError, MixtralError
from ..base.textinput import parse_json
from ..engine.options import SamplingOptions
from .limits import BODY_TIMEOUT_S, BodyTooLarge, BodyTooSlow, read_body
from .openai_api import (
    Answer,
    Choice,
    OpenAIRequest,
    choices_from,
    model_object,
    models_list,
    openai_work,
    parse_chat_request,
    parse_text_request,
)
from .openai_errors import APIError, api_error, body_too_large, body_too_slow, invalid_api_key, unknown_route
from .request_rules import ServedModel, check_answer_count
from .responses_api import ResponseAnswer, parse_responses_request
from .scheduler import ClientGone, Job, ModelHost
from .tool_calls import (
    APPLY_TEMPLATE_ROUTE,
    DETOKENIZE_ROUTE,
    TOKENIZE_ROUTE,
    apply_template_job,
    delta_json,
    detokenize_job,
    tokenize_job,
)
from .work import (
    COMPLETE_ROUTE,
    GENERATE_ROUTE,
    IDS_ROUTE,
    MODEL_ROUTE,
    end_body,
    error_body,
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

    @property
    def served(self) -> ServedModel:
        return ServedModel(self.model_id, self.model_aliases)


def create_app(host: ModelHost, config: ServeConfig) -> Starlette:
    handlers = _Handlers(host, config)
    routes = [
        Route("/health", handlers.health, methods=["GET"]),
        Route("/v1/models", handlers.guarded(handlers.models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", handlers.guarded(handlers.model), methods=["GET"]),
        Route("/v1/chat/completions", handlers.guarded(handlers.chat_completions), methods=["POST"]),
        Route("/v1/completions", handlers.guarded(handlers.completions), methods=["POST"]),
        Route("/v1/responses", handlers.guarded(handlers.responses), methods=["POST"]),
        Route("/score", handlers.guarded(handlers.score), methods=["POST"]),
        Route(COMPLETE_ROUTE, handlers.guarded(handlers.mixtral_complete), methods=["POST"]),
        Route(MODEL_ROUTE, handlers.guarded(handlers.mixtral_model), methods=["GET"]),
        Route(IDS_ROUTE, handlers.guarded(handlers.mixtral_ids), methods=["POST"]),
        Route(GENERATE_ROUTE, handlers.guarded(handlers.mixtral_generate), methods=["POST"]),
        Route(TOKENIZE_ROUTE, handlers.guarded(handlers.tokenize), methods=["POST"]),
        Route(DETOKENIZE_ROUTE, handlers.guarded(handlers.detokenize), methods=["POST"]),
        Route(APPLY_TEMPLATE_ROUTE, handlers.guarded(handlers.apply_template), methods=["POST"]),
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
            request.state.handed_over = self.host.arrivals.begin()
            try:
                return await handler(request)
            except BodyTooLarge:
                return _json_error(body_too_large(self.config.max_body_bytes))
            except BodyTooSlow:
                return _json_error(body_too_slow(BODY_TIMEOUT_S))
            except ClientGone:
                return Response(status_code=499)  # nobody reads it; the work was cancelled
            except MixtralError as exc:
                return _error_response(exc)
            finally:
                request.state.handed_over()

        return guarded

    def _authorized(self, request: Request) -> bool:
        expected = self.config.api_key
        if not expected:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())

    async def _body(self, request: Request) -> bytes:
        return await read_body(request, limit=self.config.max_body_bytes)

    async def _json(self, request: Request) -> object:
        try:
            text = (await self._body(request)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError(f"The request body is not UTF-8 text (byte {exc.start}).") from exc
        return parse_json(text, "The request body", error=InvalidRequestError)

    async def _answer_job(self, answer: AnswerRequest) -> AnswerJob:
        """The job that answers ``answer``; off the event loop, as checking a shape reads the model's vocabulary."""
        return await run_in_threadpool(lambda: AnswerJob(answer, model_path=self.config.model_path))

    async def _start(self, request: Request, work: Callable) -> Job:  # noqa: ANN001
        job = self.host.submit(work)
        request.state.handed_over()
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
                "slots": host.slots,
                "slots_in_use": host.slots_in_use,
                "waiting": host.waiting,
                "requests_run": host.requests_run,
                "evaluations": host.evaluations,
            }
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse(models_list(self.config.model_id))

    async def model(self, request: Request) -> Response:
        self.config.served.check_name(request.path_params["model_id"])
        return JSONResponse(model_object(self.config.model_id))

    async def chat_completions(self, request: Request) -> Response:
        return await self._openai(request, parse_chat_request(await self._openai_body(request), self.config.sampling))

    async def completions(self, request: Request) -> Response:
        return await self._openai(request, parse_text_request(await self._openai_body(request), self.config.sampling))

    async def _openai_body(self, request: Request) -> object:
        data = await self._json(request)
        if isinstance(data, dict):
            self.config.served.check_name(data.get("model"))
        return data

    async def responses(self, request: Request) -> Response:
        parsed = parse_responses_request(await self._openai_body(request), self.config.sampling)
        job = await self._start_openai(request, parsed)
        answer = ResponseAnswer(model=self.config.model_id)
        if parsed.stream:
            events = self._response_events(job, answer, request, parsed.answer.prompt)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        (choice,) = await self._collect(job, request)
        text = "".join(choice.parts)
        self._log_exchange(parsed.answer.prompt, text)
        return JSONResponse(answer.whole(text, choice.end))

    async def _response_events(
        self, job: Job, answer: ResponseAnswer, request: Request, prompt: object
    ) -> AsyncIterator[str]:
        parts: list[str] = []
        try:
            for event in answer.start_events():
                yield _sse(event, named=True)
            async for item in job.results(request.is_disconnected):
                if isinstance(item, AnswerEnd):
                    for event in answer.end_events("".join(parts), item):
                        yield _sse(event, named=True)
                elif isinstance(item, str):
                    parts.append(item)
                    yield _sse(answer.delta_event(item), named=True)
        except ClientGone:
            return
        except MixtralError as exc:
            yield _sse(answer.error_event(api_error(exc).error_object()), named=True)
        finally:
            self._log_exchange(prompt, "".join(parts))

    async def _start_openai(self, request: Request, parsed: OpenAIRequest) -> Job:
        """The job of an OpenAI request's answers, started: its first step is taken before the answer is sent, so
        that a prompt over the context is a 400, not a stream that fails."""
        check_answer_count(parsed.answer_count)
        model_path = self.config.model_path
        work = await run_in_threadpool(lambda: openai_work(parsed, model_path=model_path))
        return await self._start(request, work)

    async def _openai(self, request: Request, parsed: OpenAIRequest) -> Response:
        job = await self._start_openai(request, parsed)
        answer = Answer(chat=parsed.answer.mode.value == "chat", model=self.config.model_id, logprobs=parsed.logprobs)
        prompts = [a.prompt for a in parsed.answers]
        if parsed.stream:
            events = self._openai_events(job, answer, request, prompts, parsed.include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        choices = await self._collect(job, request)
        self._log_exchange(prompts, "\n".join("".join(choice.parts) for choice in choices))
        return JSONResponse(answer.whole(choices))

    async def _openai_events(
        self, job: Job, answer: Answer, request: Request, prompt: object, include_usage: bool
    ) -> AsyncIterator[str]:
        parts: list[str] = []
        ends: list[AnswerEnd] = []
        held: str | ToolCallDelta | None = None  # a chunk whose tokens' log-probabilities come next
        opened = 0  # chat answers whose first chunk (the role) was sent
        try:
            async for item in job.results(request.is_disconnected):
                index = len(ends)
                if answer.chat and opened == index:
                    yield _sse(answer.chunk(index=index, first=True))
                    opened += 1
                if isinstance(item, AnswerEnd):
                    ends.append(item)
                    yield _sse(answer.chunk(index=index, finish=item))
                elif isinstance(item, Logprobs):
                    yield _sse(answer.chunk(held, index=index, tokens=item.tokens))
                    held = None
                elif answer.logprobs:
                    if isinstance(item, str):
                        parts.append(item)
                    held = item
                else:
                    if isinstance(item, str):
                        parts.append(item)
                    yield _sse(answer.chunk(item, index=index))
            if include_usage:
                yield _sse(answer.usage_chunk(ends))
            yield "data: [DONE]\n\n"
        except ClientGone:
            return
        except MixtralError as exc:
            yield _sse(api_error(exc).body())
        finally:
            self._log_exchange(prompt, "".join(parts))

    async def _collect(self, job: Job, request: Request) -> list[Choice]:
        return choices_from([item async for item in job.results(request.is_disconnected)])

    async def score(self, request: Request) -> Response:
        try:
            text = (await self._body(request)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError("The request body is not UTF-8.") from exc
        card_request = parse_request(text)
        check_answer_count(len(card_request.inputs))
        shape_name = request.query_params.get("shape", self.config.response_shape.value)
        try:
            response_shape = ResponseShape(shape_name)
        except ValueError as exc:
            raise InvalidRequestError("The shape parameter must be per-input or by-index.") from exc
        model_path, sampling = self.config.model_path, self.config.sampling
        card_job = await run_in_threadpool(lambda: CardJob(card_request, sampling, model_path=model_path))
        job = await self._start(request, card_job.run)
        *_, outputs = [item async for item in job.results(request.is_disconnected)]
        if self.config.verbose:
            log.info("score request: %s -> %s", text, outputs)
        return Response(render_response(outputs, response_shape), media_type="application/json")

    async def mixtral_complete(self, request: Request) -> Response:
        """`mixtral complete --server`: the CLI's own work, answered as one JSON object per line."""
        answer = parse_completion_body(await self._json(request))
        job = await self._start(request, (await self._answer_job(answer)).run)
        return StreamingResponse(self._lines(job, request, answer.prompt), media_type="application/x-ndjson")

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
        job = await self._start(request, generate(ids, sampling, answer=answer))
        return StreamingResponse(self._lines(job, request, ids), media_type="application/x-ndjson")

    async def tokenize(self, request: Request) -> Response:
        return await self._one_result(request, tokenize_job(await self._json(request)))

    async def detokenize(self, request: Request) -> Response:
        n_vocab = self.host.facts["info"]["n_vocab"]
        return await self._one_result(request, detokenize_job(await self._json(request), n_vocab=n_vocab))

    async def apply_template(self, request: Request) -> Response:
        return await self._one_result(request, apply_template_job(await self._json(request)))

    async def _one_result(self, request: Request, work: Callable) -> Response:  # noqa: ANN001
        job = await self._start(request, work)
        (result,) = [item async for item in job.results(request.is_disconnected)]
        return JSONResponse(result)

    async def _lines(self, job: Job, request: Request, prompt: object) -> AsyncIterator[str]:
        parts: list[str] = []
        try:
            async for item in job.results(request.is_disconnected):
                if isinstance(item, AnswerEnd):
                    line = {"done": end_body(item)}
                elif isinstance(item, ToolCallDelta):
                    line = {"tool_call": delta_json(item)}
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


def _sse(data: dict, *, named: bool = False) -> str:
    """A server-sent event; ``named``: with its ``event:`` line, as the Responses API sends its events."""
    name = f"event: {data['type']}\n" if named else ""
    return f"{name}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _error_response(exc: MixtralError) -> Response:
    return _json_error(api_error(exc))


def _json_error(error: APIError) -> Response:
    return JSONResponse(error.body(), error.status, headers=error.headers)


async def _route_error_response(request: Request, exc: HTTPException) -> Response:
    return _json_error(unknown_route(request.method, request.url.path, exc.status_code, dict(exc.headers or {})))
