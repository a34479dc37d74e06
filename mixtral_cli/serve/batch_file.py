"""`mixtral batch`: OpenAI's batch file format, answered with the bodies `mixtral serve` answers, by the same job.

In, one JSON object per line: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/completions",
"body": {...}}``. Out, in input order: ``{"id", "custom_id", "response": {"status_code": 200, "request_id", "body"},
"error": null}``; a failed request goes to the errors file instead, with ``"response": null, "error": {"code",
"message"}``, OpenAI's code as the server answers it. Every line is checked before the first generation: a malformed
line, a duplicate ``custom_id``, an unknown url, ``stream: true``, or (answered here) what `mixtral serve` refuses of
a request is an error line, never an abort of the others.

Resumable: an answer's ``id`` is ``batch_req_`` and a digest of its input line, and each answer is appended to a
journal beside the output (``OUTPUT.journal``) the moment it is done. A run after a Ctrl-C, a crash or a full disk
skips every line whose answer the journal, the output or the errors file already holds; a changed line is answered
again. The output and the errors file are written whole, under a temporary name renamed at the end: never half
written. The journal goes once they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base.atomic import atomic_path, check_writable
from ..base.errors import InvalidRequestError, MixtralError, OutputPathError, ServerError, ServerReportedError
from ..engine.options import SamplingOptions
from .openai_api import Answer, OpenAIRequest, choices_from, openai_work, parse_chat_request, parse_text_request
from .openai_errors import SERVER_ERROR, api_error
from .request_rules import ServedModel, check_answer_count

if TYPE_CHECKING:
    from ..answer.request import AnswerRequest
    from ..engine.model import Engine
    from .client import ServerClient

ROUTES: dict[str, Callable[[object, SamplingOptions], OpenAIRequest]] = {
    "/v1/chat/completions": parse_chat_request,
    "/v1/completions": parse_text_request,
}


@dataclass(frozen=True)
class BatchLine:
    """One line of the input, checked: a request to answer, or (``error``) why it cannot be."""

    number: int  # 1-based, in the input
    id: str  # batch_req_ and a digest of the line: the same line gets the same id in every run
    custom_id: str | None
    url: str = ""
    body: dict | None = None  # as the line gives it: what `--server` sends
    parsed: OpenAIRequest | None = None
    error: MixtralError | None = None


@dataclass(frozen=True)
class BatchResult:
    """An answered line: its output record, whether it goes to the errors file, and its generated tokens."""

    record: dict[str, Any]
    failed: bool
    tokens: int = 0


def errors_path(output: Path) -> Path:
    """Where failed requests go unless --errors says: beside the output, ``NAME.errors.jsonl``."""
    stem = output.name.removesuffix(".jsonl")
    return output.with_name(f"{stem}.errors.jsonl")


def journal_path(output: Path) -> Path:
    return output.with_name(f"{output.name}.journal")


def read_lines(text: str, base: SamplingOptions, served: ServedModel | None) -> list[BatchLine]:
    """Every non-blank line of a batch file, checked against its route's schema before anything runs, and, where
    ``served`` answers it here, against the rules `mixtral serve` holds each request to (request_rules.py); with
    --server, the server holds it to them."""
    lines, seen = [], set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        line = _check_line(number, raw, base, served)
        if line.error is None and line.custom_id in seen:
            line = _failed(line, InvalidRequestError(f'"custom_id" {line.custom_id!r} is used by an earlier line.'))
        seen.add(line.custom_id)
        lines.append(line)
    return lines


def _check_line(number: int, raw: str, base: SamplingOptions, served: ServedModel | None) -> BatchLine:
    line_id = "batch_req_" + hashlib.sha256(raw.strip().encode("utf-8")).hexdigest()[:32]
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return BatchLine(number, line_id, None, error=InvalidRequestError(f"Line {number} is not JSON: {exc}."))
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    line = BatchLine(number, line_id, custom_id if isinstance(custom_id, str) else None)
    try:
        if not isinstance(data, dict):
            raise InvalidRequestError(f"Line {number} is not a JSON object.")
        if not isinstance(custom_id, str) or not custom_id:
            raise InvalidRequestError(f'Line {number} needs a "custom_id" string.')
        if data.get("method") != "POST":
            raise InvalidRequestError(f'Line {number}: "method" must be "POST".')
        url = data.get("url")
        if url not in ROUTES:
            raise InvalidRequestError(f'Line {number}: "url" must be one of {", ".join(ROUTES)}, not {url!r}.')
        body = data.get("body")
        if not isinstance(body, dict):
            raise InvalidRequestError(f'Line {number}: "body" must be a JSON object.')
        if body.get("stream"):
            raise InvalidRequestError(f'Line {number}: "stream": true cannot go in a batch; each answer is whole.')
        if served is not None:  # in the server's order: the model first, then the body, then the answers
            served.check_name(body.get("model"))
        parsed = ROUTES[url](body, base)
        if served is not None:
            check_answer_count(parsed.answer_count)
    except MixtralError as exc:
        return _failed(line, exc)
    return BatchLine(number, line_id, custom_id, url=url, body=body, parsed=parsed)


def _failed(line: BatchLine, error: MixtralError) -> BatchLine:
    return BatchLine(line.number, line.id, line.custom_id, url=line.url, error=error)


def error_code(error: MixtralError) -> str:
    """OpenAI's code for an error line: the one `mixtral serve` answers ``error`` with (with --server, the one the
    server did); where that gives none, its kind: invalid_request or server_error."""
    if isinstance(error, ServerReportedError):
        code, kind = error.code, error.type
    else:
        answered = api_error(error)
        code, kind = answered.code, answered.type
    return code or ("server_error" if kind in (SERVER_ERROR, None) else "invalid_request")


def error_result(line: BatchLine, error: MixtralError) -> BatchResult:
    record = {"id": line.id, "custom_id": line.custom_id, "response": None,
              "error": {"code": error_code(error), "message": error.message}}  # fmt: skip
    return BatchResult(record, failed=True)


def answer_result(line: BatchLine, body: dict[str, Any]) -> BatchResult:
    response = {"status_code": 200, "request_id": "req_" + secrets.token_hex(16), "body": body}
    record = {"id": line.id, "custom_id": line.custom_id, "response": response, "error": None}
    return BatchResult(record, failed=False, tokens=int((body.get("usage") or {}).get("completion_tokens", 0)))


class BatchOutput:
    """The output and errors files of one batch, what earlier runs answered, and the journal of this one."""

    def __init__(self, output: Path, errors: Path | None = None) -> None:
        self.output, self.errors = output, errors or errors_path(output)
        self.journal = journal_path(output)
        self.done: dict[str, BatchResult] = {}
        for path in (self.output, self.errors, self.journal):
            for record in _records(path):
                failed = record.get("error") is not None
                self.done[record["id"]] = BatchResult(record, failed=failed, tokens=_tokens(record))
        self._lock = threading.Lock()
        self._journal = None

    def __enter__(self) -> BatchOutput:
        for path in (self.output, self.errors):  # a path that cannot be written is said before any work
            check_writable(path)
        try:
            self._journal = self.journal.open("a", encoding="utf-8")
        except OSError as exc:
            raise OutputPathError(self.journal, exc.strerror or str(exc)) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._journal is not None:
            with contextlib.suppress(OSError):
                self._journal.close()

    def add(self, result: BatchResult) -> None:
        """Keep ``result``: in the journal, on disk before this returns."""
        with self._lock:
            try:
                self._journal.write(json.dumps(result.record, ensure_ascii=False) + "\n")
                self._journal.flush()
                os.fsync(self._journal.fileno())
            except OSError as exc:
                raise OutputPathError(self.journal, exc.strerror or str(exc)) from exc
            self.done[result.record["id"]] = result

    def finish(self, lines: Iterable[BatchLine]) -> None:
        """Write the output and the errors file, in input order, whole; then the journal goes."""
        results = [self.done[line.id] for line in lines if line.id in self.done]
        answers = [r.record for r in results if not r.failed]
        with atomic_path(self.output) as partial:
            partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in answers), encoding="utf-8")
        write_records(self.errors, [r.record for r in results if r.failed])
        self.journal.unlink(missing_ok=True)


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """A JSONL file of ``records``, whole; none: no file."""
    if not records:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return
    with atomic_path(path) as partial:
        partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _records(path: Path) -> list[dict]:
    """The records of an output, errors file or journal; a line cut short (a crash, a full disk) is left out."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for raw in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(raw)
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                records.append(record)
    return records


def _tokens(record: dict) -> int:
    body = (record.get("response") or {}).get("body") or {}
    return int((body.get("usage") or {}).get("completion_tokens", 0)) if isinstance(body, dict) else 0


def answer_here(
    lines: list[BatchLine],
    *,
    load: Callable[[], Engine],
    parallel: int,
    model_id: str,
    model_path: Path,
    on_result: Callable[[BatchLine, BatchResult], None],
) -> None:
    """Answer ``lines`` with a model loaded here: the server's scheduler and work, ``parallel`` at once."""
    works = {}
    for line in lines:  # a response_format the model cannot take is an error line before anything generates
        try:
            works[line.id] = openai_work(line.parsed, model_path=model_path)
        except MixtralError as exc:
            on_result(line, error_result(line, exc))
    lines = [line for line in lines if line.id in works]

    def answered(i: int, items: list[object]) -> None:
        line = lines[i]
        answer = Answer(chat=line.url == "/v1/chat/completions", model=model_id, logprobs=line.parsed.logprobs)
        on_result(line, answer_result(line, answer.whole(choices_from(items))))

    run_here(
        [works[line.id] for line in lines],
        load=load,
        parallel=parallel,
        on_done=answered,
        on_error=lambda i, exc: on_result(lines[i], error_result(lines[i], exc)),
    )


def run_here(
    works: list[Callable[[Engine], Iterator[object]]],
    *,
    load: Callable[[], Engine],
    parallel: int,
    on_done: Callable[[int, list[object]], None],
    on_error: Callable[[int, MixtralError], None],
) -> None:
    """Run ``works`` (answer jobs, card jobs) on the serve scheduler, ``parallel`` at once, batched; everything
    each one yields goes to ``on_done``, in the order they finish."""
    asyncio.run(_run_all(works, load, parallel, on_done, on_error))


async def _run_all(works, load, parallel, on_done, on_error) -> None:  # noqa: ANN001 - as run_here's
    from .scheduler import MAX_WAIT_S, ModelHost

    host = ModelHost(load, keep_alive=None, sequences=parallel)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, host.start)
    waiting = asyncio.Semaphore(2 * parallel)  # a few waiting for a free sequence, not the whole file at once

    async def never_gone() -> bool:
        return False

    async def run(i: int) -> None:
        async with waiting:
            job = host.submit(works[i])
            try:
                await job.wait_turn(timeout=MAX_WAIT_S, client_gone=never_gone)
                items = [item async for item in job.results(never_gone)]
            except MixtralError as exc:
                on_error(i, exc)
                return
            on_done(i, items)

    try:
        await asyncio.gather(*(run(i) for i in range(len(works))))
    finally:
        host.stop()
        await loop.run_in_executor(None, host.join)


def answer_on_server(
    lines: list[BatchLine],
    client: ServerClient,
    *,
    parallel: int,
    on_result: Callable[[BatchLine, BatchResult], None],
) -> None:
    """Send ``lines`` to a running `mixtral serve`, ``parallel`` at once; the server's bodies are the answers.

    A request the server refuses is an error line; a server that cannot be reached stops the run (what was
    answered stays in the journal)."""
    client.check()

    def answer(line: BatchLine) -> None:
        try:
            answered = client.call("POST", line.url, line.body)
        except ServerError:
            raise
        except MixtralError as exc:
            on_result(line, error_result(line, exc))
            return
        on_result(line, answer_result(line, answered))

    in_threads(answer, lines, parallel=parallel)


def in_threads(work: Callable[[Any], None], items: Iterable[Any], *, parallel: int) -> None:
    """``work`` on every item, ``parallel`` at once; the first error stops the rest and is raised."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


# -- the whole run ---------------------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    done: int = 0  # answered in this run
    failed: int = 0  # of this run's lines, those that went to the errors file
    skipped: int = 0  # answered by an earlier run
    tokens: int = 0  # generated in this run
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class BatchRunner:
    """Where the answers come from: a model loaded here (``load``; ``load_vocab``, its vocabulary alone, and
    ``ctx_size``, each sequence's context, None: the model's), or a running server (``client``)."""

    parallel: int
    load: Callable[[], Engine] | None = None
    load_vocab: Callable[[], Engine] | None = None
    ctx_size: int | None = None
    model: ServedModel | None = None
    model_path: Path | None = None
    client: ServerClient | None = None

    def expected_seconds(self, requests: Iterable[AnswerRequest]) -> float | None:
        """The most answering ``requests`` here should take, one after another, at this machine's measured rates
        for the model; None with a server, or where the model was never measured here. Reads the vocabulary
        alone: no weights load."""
        from ..answer.job import most_work
        from ..engine.layout import Work

        if self.load_vocab is None:
            return None
        with self.load_vocab() as engine:
            if engine.expected_seconds(Work(0, 0)) is None:  # not measured: no prompt needs reading
                return None
            n_ctx = self.ctx_size or engine.info.n_ctx_train
            return engine.expected_seconds(most_work(requests, engine, n_ctx=n_ctx))


def run_batch_file(
    text: str,
    output: Path,
    *,
    errors: Path | None,
    runner: BatchRunner,
    sampling: SamplingOptions,
    agree: Callable[[int, Callable[[], float | None]], None],
    progress: Callable[[int, int], object],
    on_result: Callable[[BatchResult], None],
) -> BatchSummary:
    """Answer a batch file into ``output`` (and the errors file): every line checked first, then ``agree`` to the
    model calls to make (every answer asked for) and what they should take at most (a function: it reads every
    prompt; it raises to refuse), ``progress(to_run, already_answered)``, then each result to ``on_result`` as it
    comes."""
    import time

    lines = read_lines(text, sampling, runner.model)
    with BatchOutput(output, errors) as kept:
        summary = BatchSummary(skipped=sum(line.id in kept.done for line in lines))
        todo = [line for line in lines if line.id not in kept.done]
        requests = [line.parsed for line in todo if line.parsed is not None]
        answers = [answer for request in requests for answer in request.answers]
        agree(sum(request.answer_count for request in requests), lambda: runner.expected_seconds(answers))
        progress(len(todo), summary.skipped)
        started = time.perf_counter()
        for line in [line for line in todo if line.error is not None]:
            _keep(kept, summary, error_result(line, line.error), on_result)
        todo = [line for line in todo if line.error is None]

        def result(line: BatchLine, answered: BatchResult) -> None:
            _keep(kept, summary, answered, on_result)

        if runner.client is not None:
            answer_on_server(todo, runner.client, parallel=runner.parallel, on_result=result)
        elif todo:
            answer_here(todo, load=runner.load, parallel=runner.parallel, model_id=runner.model.id,
                        model_path=runner.model_path, on_result=result)  # fmt: skip
        summary.seconds = time.perf_counter() - started
        kept.finish(lines)
    return summary


def _keep(kept: BatchOutput, summary: BatchSummary, result: BatchResult, on_result: Callable) -> None:
    kept.add(result)
    summary.done += 1
    summary.failed += result.failed
    summary.tokens += result.tokens
    on_result(result)
