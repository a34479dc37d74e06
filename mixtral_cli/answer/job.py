"""The answer job: one request answered by a loaded engine, the same for `mixtral complete`, every server route
and `complete --server`.

The rules about an answer live here, once (docs/answers.md): the sampling a shape asks for (its grammar,
checked against the model before the model loads), the bound the context sets on ``max_tokens``, and what
a cut shaped answer is. Callers only consume what the job yields: text chunks, then an ``AnswerEnd``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..base.errors import AnswerCutError, InvalidRequestError, InvalidToolsError, MixtralError, OutputShapeError
from ..engine.layout import Work
from ..engine.options import OPTION_BOUNDS
from ..family.prompt_ids import Message, continues_answer
from .logprobs import Logprobs, echoed, readable
from .request import AnswerEnd, AnswerRequest
from .shapes import OutputShape, constrained_sampling, finish_answer, with_instruction
from .tool_calls import ToolAnswerReader, ToolCallAnswer, ToolCallDelta, ToolChoice, tool_sampling_for

if TYPE_CHECKING:
    from ..engine.model import Engine, Generation, GenerationStats
    from ..engine.options import SamplingOptions

_Step = TypeVar("_Step")


def answer_sampling(model_path: Path, shape: OutputShape | None, sampling: SamplingOptions) -> SamplingOptions:
    """``sampling`` with ``shape``'s grammar, once llama.cpp has parsed it against the model's vocabulary
    (no weights load) and ``max_tokens`` can hold its shortest answer; ``sampling`` itself without a shape."""
    return sampling if shape is None else constrained_sampling(model_path, shape, sampling)


def bounded_by_context(sampling: SamplingOptions, n_ctx: int) -> SamplingOptions:
    """``sampling`` with ``max_tokens`` at most the context: a larger budget ends the same way, at the context
    (stop reason "context"), and would only mislead the layout planner about the work to come."""
    return replace(sampling, max_tokens=n_ctx) if 0 < n_ctx < sampling.max_tokens else sampling


def prompt_ids(request: AnswerRequest, engine: Engine) -> tuple[list[int], bool]:
    """The ids the model reads for ``request`` (a vocabulary-only engine gives them), and whether they are a chat."""
    if isinstance(request.prompt, tuple) and all(isinstance(t, int) for t in request.prompt):
        n_vocab = engine.info.n_vocab
        if not request.prompt or not all(0 <= t < n_vocab for t in request.prompt):
            raise InvalidRequestError(f"A prompt of token ids needs ids below {n_vocab}.", param="prompt")
        return list(request.prompt), False  # as given, as llama-server takes them: no BOS added
    prompt = list(request.prompt) if isinstance(request.prompt, tuple) else request.prompt
    tools = request.tools.tools if request.tools else ()
    return engine.completion_ids(
        with_instruction(prompt, request.shown), system=request.system, mode=request.mode, tools=tools
    )


def most_work(requests: Iterable[AnswerRequest], engine: Engine, *, n_ctx: int) -> Work:
    """The most that answering ``requests`` in a context of ``n_ctx`` tokens (0: unknown) asks of the model: each
    prompt read once, and its n answers of max_tokens each, none past the context. A request that cannot start
    costs nothing."""
    prompt_tokens = answer_tokens = 0
    for request in requests:
        try:
            tokens = len(prompt_ids(request, engine)[0])
        except MixtralError:
            continue
        prompt_tokens += tokens
        room = max(n_ctx - tokens, 0) if n_ctx else request.sampling.max_tokens
        answer_tokens += request.n * min(request.sampling.max_tokens, room)
    return Work(prompt_tokens, answer_tokens)


class AnswerJob:
    """``request`` answered by an engine, a step at a time.

    Each ``next()`` of ``run(engine)`` is one step: a piece of text, or None where the answer waits for the
    engine's shared batch to be evaluated (engine/batch.py); the last item is the ``AnswerEnd``. The serve
    scheduler steps its running jobs in turn and evaluates once for all of them, so their sequences advance in
    one ``llama_decode``; `mixtral complete` runs one alone (``Engine.run_alone``), in this process or through
    `--server`.
    """

    def __init__(self, request: AnswerRequest, *, model_path: Path) -> None:
        """Decide the sampling (the shape's grammar, checked here: a shape the model cannot take raises now)."""
        if request.shape is not None and request.tools is not None and request.tools.choice is not ToolChoice.NONE:
            raise InvalidToolsError("An answer shape and tools to call exclude each other: give one.")
        self.request = request
        self.sampling = answer_sampling(model_path, request.shape, request.sampling)

    def with_prompt(self, prompt: str | tuple[Message, ...]) -> AnswerJob:
        """The same job for another prompt: the sampling stays as decided."""
        job = copy.copy(self)
        job.request = replace(self.request, prompt=prompt)
        return job

    def run(
        self, engine: Engine, *, first_index: int = 0
    ) -> Iterator[str | ToolCallDelta | Logprobs | AnswerEnd | None]:
        """Start on ``engine`` (a prompt the context cannot hold raises here), and return the steps; the
        answers' ``AnswerEnd.index`` counts on from ``first_index``."""
        request = self.request
        ids, chat = prompt_ids(request, engine)
        if any(not 0 <= token < engine.info.n_vocab for token, _ in self.sampling.logit_bias):
            message = f'"logit_bias" may name token ids below {engine.info.n_vocab} only.'
            raise InvalidRequestError(message, param="logit_bias")
        sampling = bounded_by_context(self.sampling, engine.n_ctx)
        if request.echo:
            sampling = replace(sampling, prompt_logprobs=True)
        # An answer that continues the conversation's last, the assistant's, message keeps its first space.
        answer = chat and not (isinstance(request.prompt, tuple) and continues_answer(request.prompt))
        first = self._with_tools(engine, sampling)
        started = engine.generate(ids, first[0], answer=answer)
        return self._answers(
            engine, ids, (started, *first), sampling, chat=chat, answer=answer, first_index=first_index
        )

    def _with_tools(self, engine: Engine, sampling: SamplingOptions) -> tuple[SamplingOptions, ToolAnswerReader | None]:
        """``sampling`` for one answer with the request's tools, and the reader of its calls (None: it makes none).
        Each answer pins its own call ids (from its own seed)."""
        if self.request.tools is None:
            return sampling, None
        prompt = list(self.request.prompt) if isinstance(self.request.prompt, tuple) else self.request.prompt
        return tool_sampling_for(engine, self.request.tools, sampling, prompt)  # type: ignore[arg-type]

    def _answers(
        self,
        engine: Engine,
        ids: list[int],
        first: tuple[Generation, SamplingOptions, ToolAnswerReader | None],
        sampling: SamplingOptions,
        *,
        chat: bool,
        answer: bool,
        first_index: int,
    ) -> Iterator[str | ToolCallDelta | Logprobs | AnswerEnd | None]:
        """The answers to the prompt, ``first`` started; the k-th samples with seed + k where a seed is given."""
        for index in range(self.request.n):
            if index == 0:
                generation, each, calls = first
            else:
                seed = None if sampling.seed is None else (sampling.seed + index) % OPTION_BOUNDS["seed"].most
                each, calls = self._with_tools(engine, replace(sampling, seed=seed))
                generation = engine.generate(ids, each, answer=answer)
            again = index > 0
            yield from self._steps(engine, generation, each, calls, chat=chat, index=first_index + index, again=again)

    def _steps(
        self,
        engine: Engine,
        generation: Generation,
        sampling: SamplingOptions,
        calls: ToolAnswerReader | None,
        *,
        chat: bool,
        index: int,
        again: bool,
    ) -> Iterator[str | ToolCallDelta | Logprobs | AnswerEnd | None]:
        from .report import completion_report

        parts, reported, logprobs = [], 0, sampling.logprobs is not None
        chunks = generation.steps() if calls is None else calls.read(generation.steps())
        if self.request.echo:
            # The prompt's log-probabilities are known once the first step has evaluated it.
            chunks = _ahead(chunks)
            prompt = self.request.prompt
            if isinstance(prompt, str):
                yield prompt
                if logprobs:
                    yield echoed(engine, generation.prompt_logprobs[1:], prompt)
            else:
                yield b"".join(map(engine.piece, prompt)).decode(errors="replace")
                if logprobs:
                    yield readable(engine, generation.prompt_logprobs)
        for chunk in chunks:
            if chunk is None:  # waiting for the shared batch's next evaluation
                yield None
                continue
            if isinstance(chunk, str):
                parts.append(chunk)
            # Read now: once this job has yielded, the shared batch may pick its next token before it resumes.
            tokens = readable(engine, generation.logprobs[reported:]) if logprobs else None
            reported = len(generation.logprobs)
            yield chunk  # type: ignore[misc] - without a reader, the generation reports no control tokens
            if tokens is not None:
                yield tokens
        if logprobs and reported < len(generation.logprobs):
            yield readable(engine, generation.logprobs[reported:])  # tokens of a stop string's held text
        stats = generation.stats
        answer, error = _finished(self.request.shape, "".join(parts), stats, sampling)
        tool_calls: tuple[ToolCallAnswer, ...] = ()
        if calls is not None:
            try:
                tool_calls = calls.calls(stats.stop_reason)
            except (AnswerCutError, OutputShapeError) as exc:
                answer, error = None, exc
        report = completion_report(engine, stats, chat=chat)
        yield AnswerEnd(
            stats, report, answer=answer, error=error, tool_calls=tool_calls, index=index, first_of_prompt=not again
        )


def _ahead(chunks: Iterator[_Step]) -> Iterator[_Step]:
    """``chunks``, the first of them taken now (a wait for the shared batch, if it is one, dropped)."""
    first = next(chunks, None)
    return chunks if first is None else itertools.chain([first], chunks)


def _finished(
    shape: OutputShape | None, text: str, stats: GenerationStats, sampling: SamplingOptions
) -> tuple[str | None, MixtralError | None]:
    """What may be printed of the answer, or why nothing may: the text, or a shaped answer's finished value."""
    if shape is None:
        return text, None
    try:
        return finish_answer(shape, text, stats, sampling), None
    except (AnswerCutError, OutputShapeError) as exc:
        return None, exc


def run_each(jobs: list[AnswerJob], engine: Engine) -> Iterator[str | ToolCallDelta | Logprobs | AnswerEnd]:
    """``jobs`` one after the other as one request's answers (OpenAI's list of prompts), their indexes counted
    on; every prompt is checked before the first step."""
    starts, index = [], 0
    for job in jobs:
        starts.append(job.run(engine, first_index=index))
        index += job.request.n
    return _in_turn(starts)


def _in_turn(
    steps: list[Iterator[str | ToolCallDelta | Logprobs | AnswerEnd]],
) -> Iterator[str | ToolCallDelta | Logprobs | AnswerEnd]:
    try:
        for each in steps:
            yield from each
    finally:
        for each in steps:
            each.close()  # a generation's cleanup (its sampler) runs on the thread that closes this
