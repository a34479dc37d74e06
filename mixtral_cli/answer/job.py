"""The answer job: one request answered by a loaded engine, the same for `mixtral complete`, every server route
and `complete --server`.

The rules about an answer live here, once (docs/answers.md): the sampling a shape asks for (its grammar,
checked against the model before the model loads), the bound the context sets on ``max_tokens``, and what
a cut shaped answer is. Callers only consume what the job yields: text chunks, then an ``AnswerEnd``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import AnswerCutError, OutputShapeError
from ..family.prompt_ids import Message
from .request import AnswerEnd, AnswerRequest
from .shapes import OutputShape, constrained_sampling, finish_answer, with_instruction

if TYPE_CHECKING:
    from ..base.errors import MixtralError
    from ..engine.model import Engine, Generation, GenerationStats
    from ..engine.options import SamplingOptions


def answer_sampling(model_path: Path, shape: OutputShape | None, sampling: SamplingOptions) -> SamplingOptions:
    """``sampling`` with ``shape``'s grammar, once llama.cpp has parsed it against the model's vocabulary
    (no weights load) and ``max_tokens`` can hold its shortest answer; ``sampling`` itself without a shape."""
    return sampling if shape is None else constrained_sampling(model_path, shape, sampling)


def bounded_by_context(sampling: SamplingOptions, n_ctx: int) -> SamplingOptions:
    """``sampling`` with ``max_tokens`` at most the context: a larger budget ends the same way, at the context
    (stop reason "context"), and would only mislead the layout planner about the work to come."""
    return replace(sampling, max_tokens=n_ctx) if 0 < n_ctx < sampling.max_tokens else sampling


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
        self.request = request
        self.sampling = answer_sampling(model_path, request.shape, request.sampling)

    def with_prompt(self, prompt: str | tuple[Message, ...]) -> AnswerJob:
        """The same job for another prompt: the sampling stays as decided."""
        job = copy.copy(self)
        job.request = replace(self.request, prompt=prompt)
        return job

    def run(self, engine: Engine) -> Iterator[str | AnswerEnd | None]:
        """Start on ``engine`` (a prompt the context cannot hold raises here), and return the steps."""
        request = self.request
        prompt = list(request.prompt) if isinstance(request.prompt, tuple) else request.prompt
        ids, chat = engine.completion_ids(
            with_instruction(prompt, request.shown), system=request.system, mode=request.mode
        )
        sampling = bounded_by_context(self.sampling, engine.n_ctx)
        return self._steps(engine, engine.generate(ids, sampling, answer=chat), sampling, chat=chat)

    def _steps(
        self, engine: Engine, generation: Generation, sampling: SamplingOptions, *, chat: bool
    ) -> Iterator[str | AnswerEnd | None]:
        from .report import completion_report

        parts = []
        for chunk in generation.steps():
            if chunk is not None:
                parts.append(chunk)
            yield chunk
        stats = generation.stats
        answer, error = _finished(self.request.shape, "".join(parts), stats, sampling)
        yield AnswerEnd(stats, completion_report(engine, stats, chat=chat), answer=answer, error=error)


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
