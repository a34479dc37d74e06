"""`mixtral batch` of a folder: the model cards' batch endpoint, a request file in, an answer file out, each.

Each file is a request in the model cards' schema (what `mixtral complete --request` takes), answered into a
file of the same name in the output folder, in the served card's answer shape, by the same card job as the
scoring route (here, on the serve scheduler; with ``--server``, by the server's ``/score``). A file already
answered there is skipped, so a stopped run resumes; one that fails goes to the errors file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base.atomic import atomic_path, check_writable
from ..base.errors import InvalidRequestError, MixtralError, OutputPathError, ServerError
from ..engine.options import SamplingOptions
from .batch_file import BatchResult, BatchRunner, BatchSummary, error_code, in_threads, run_here, write_records
from .request_rules import check_answer_count

if TYPE_CHECKING:
    from ..answer.card_request import ModelCardRequest
    from ..answer.request import AnswerRequest


@dataclass(frozen=True)
class CardFile:
    """One request file of a folder, its answer file, and its request (or why it cannot be answered)."""

    source: Path
    answer: Path
    text: str = ""
    request: ModelCardRequest | None = None
    error: MixtralError | None = None


def card_files(folder: Path, output: Path, *, answered_here: bool) -> list[CardFile]:
    """The request files of ``folder`` (hidden ones aside) not yet answered in ``output``, read and checked; one
    ``answered_here`` also against the rules the server's /score holds a request to (with --server, it does)."""
    from ..answer.card_request import parse_request

    files = []
    for source in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        answer = output / source.name
        if answer.exists():
            continue  # answered by an earlier run
        try:
            text = source.read_text(encoding="utf-8")
            request = parse_request(text)
            if answered_here:
                check_answer_count(len(request.inputs))
        except (OSError, UnicodeDecodeError) as exc:
            files.append(CardFile(source, answer, error=InvalidRequestError(f"{source.name} cannot be read: {exc}.")))
        except MixtralError as exc:
            files.append(CardFile(source, answer, error=exc))
        else:
            files.append(CardFile(source, answer, text=text, request=request))
    return files


def _answers(requests: list[ModelCardRequest], sampling: SamplingOptions) -> Iterator[AnswerRequest]:
    """The answers ``requests`` ask for; a request whose answers cannot be asked (a bad schema) asks none."""
    from ..answer.card_request import card_answers

    for request in requests:
        with contextlib.suppress(MixtralError):
            yield from card_answers(request, sampling)


def write_card_answer(file: CardFile, rendered: str) -> None:
    with atomic_path(file.answer) as partial:
        partial.write_text(rendered + "\n", encoding="utf-8")


def card_error_record(file: CardFile, error: MixtralError) -> dict[str, Any]:
    return {"file": file.source.name, "error": {"code": error_code(error), "message": error.message}}


def run_card_folder(
    folder: Path,
    output: Path,
    *,
    errors: Path | None,
    runner: BatchRunner,
    sampling: SamplingOptions,
    response_shape: object,
    agree: Callable[[int, Callable[[], float | None]], None],
    progress: Callable[[int, int], object],
    on_result: Callable[[BatchResult], None],
) -> BatchSummary:
    """Answer every request file of ``folder`` into a file of the same name in ``output``, in the cards' answer
    shape; a file already answered there is skipped, one that fails goes to the errors file. ``agree`` and
    ``progress`` as run_batch_file's."""
    from ..answer.card_request import CardJob, render_response

    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(output, exc.strerror or str(exc)) from exc
    errors = errors or output.with_name(f"{output.name}.errors.jsonl")
    check_writable(errors)
    total = sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    files = card_files(folder, output, answered_here=runner.client is None)
    summary = BatchSummary(skipped=total - len(files))
    failures: list[dict[str, Any]] = []
    lock = threading.Lock()

    def failed(file: CardFile, error: MixtralError) -> None:
        with lock:
            failures.append(card_error_record(file, error))
            summary.done += 1
            summary.failed += 1
        on_result(BatchResult({}, failed=True))

    def answered(file: CardFile, rendered: str) -> None:
        write_card_answer(file, rendered)
        with lock:
            summary.done += 1
        on_result(BatchResult({}, failed=False))

    requests = [file.request for file in files if file.error is None]
    answers = list(_answers(requests, sampling))
    agree(sum(answer.n for answer in answers), lambda: runner.expected_seconds(answers))
    progress(len(files), summary.skipped)
    started = time.perf_counter()
    for file in [file for file in files if file.error is not None]:
        failed(file, file.error)
    files = [file for file in files if file.error is None]
    if runner.client is not None:
        runner.client.check()

        def score(file: CardFile) -> None:
            try:
                text = runner.client.score(file.text, shape=getattr(response_shape, "value", None))
            except ServerError:
                raise
            except MixtralError as exc:
                failed(file, exc)
                return
            answered(file, text.strip())

        in_threads(score, files, parallel=runner.parallel)
    elif files:
        works, kept_files = [], []
        for file in files:
            try:
                works.append(CardJob(file.request, sampling, model_path=runner.model_path).run)
                kept_files.append(file)
            except MixtralError as exc:
                failed(file, exc)
        run_here(works, load=runner.load, parallel=runner.parallel,
                 on_done=lambda i, items: answered(kept_files[i], render_response(items[-1], response_shape)),
                 on_error=lambda i, exc: failed(kept_files[i], exc))  # fmt: skip
    summary.seconds = time.perf_counter() - started
    write_records(errors, failures)
    return summary
