"""One generation: its statistics, the chunks it yields, and the decode loop that samples them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .logprobs import TokenLogprobs
from .options import SamplingOptions
from .text import TextStream

if TYPE_CHECKING:
    from .batch import Lane

T = TypeVar("T")


@dataclass
class GenerationStats:
    """What one generation cost, measured here (not by llama.cpp's perf counters)."""

    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0  # fewer than prompt_tokens when the KV cache already held a prefix
    completion_tokens: int = 0
    stop_reason: str = "interrupted"  # eos | stop | length | context | interrupted
    prompt_eval_s: float = 0.0
    decode_s: float = 0.0
    layout: str = ""  # the weight layout that ran: repacked | plain | hand-over (prompt plain, answer repacked)

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens_evaluated / self.prompt_eval_s if self.prompt_eval_s else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.completion_tokens / self.decode_s if self.decode_s else 0.0


@dataclass(frozen=True)
class ControlToken:
    """A control token generated, in its place among the text: one ``SamplingOptions.reported_tokens`` named."""

    id: int


Chunk = str | ControlToken


class Generation:
    """Text chunks as they are generated (and the control tokens asked for); ``stats`` is complete once iteration
    ends.

    Where the sampling asks for log-probabilities, ``logprobs`` holds each generated token's so far (at least
    those of the text yielded), and ``prompt_logprobs`` the prompt's.

    Iterating evaluates the engine's shared batch whenever the generation waits for it. A driver that runs
    several generations at once iterates ``steps()`` instead, and evaluates the batch once for all of them
    (serve's scheduler): every running sequence then advances in one ``llama_decode``.
    """

    def __init__(
        self,
        chunks: Callable[[GenerationStats], Iterator[Chunk | None]],
        evaluate: Callable[[], object] | None = None,
    ) -> None:
        self.stats = GenerationStats()
        self._chunks = chunks
        self._evaluate = evaluate
        self.logprobs: list[TokenLogprobs] = []
        self.prompt_logprobs: list[TokenLogprobs] = []

    def steps(self) -> Iterator[Chunk | None]:
        """Chunks, and None wherever the generation waits for the shared batch to be evaluated."""
        return self._chunks(self.stats)

    def __iter__(self) -> Iterator[Chunk]:
        return evaluated(self.steps(), self._evaluate or (lambda: None))


def evaluated(steps: Iterator[T | None], evaluate: Callable[[], object]) -> Iterator[T]:
    """``steps`` run by themselves: ``evaluate`` the shared batch wherever they wait for it (a None)."""
    with closing(steps):
        for item in steps:
            if item is None:
                evaluate()
            else:
                yield item


def decode(
    lane: Lane,
    vocab,  # noqa: ANN001 - a llama_vocab_p
    sampling: SamplingOptions,
    *,
    piece: Callable[[int], bytes],
    n_ctx: int,
    answer: bool,
    stats: GenerationStats,
    logprobs: list[TokenLogprobs] | None = None,
) -> Iterator[Chunk | None]:
    """Take ``lane``'s tokens (picked by the shared batch after each evaluation) until an end of generation, a
    stop string, ``max_tokens`` or a full context; None while the lane waits for an evaluation. ``answer``
    strips the space an Instruct answer starts with; a token ``sampling.reported_tokens`` names is yielded as a
    ControlToken in its place. The lane leaves the batch when this ends, however it ends. ``logprobs``: the list
    the lane's sampler appends each picked token's to.
    """
    import llama_cpp

    text = TextStream(stop=sampling.stop, strip_leading_space=answer)
    is_eog, max_tokens = llama_cpp.llama_vocab_is_eog, sampling.max_tokens
    reported = frozenset(sampling.reported_tokens)
    started = time.perf_counter()
    decode_started = None
    try:
        while not lane.ready:
            yield None
        decode_started = time.perf_counter()
        stats.prompt_eval_s = decode_started - started
        while True:
            if stats.completion_tokens >= max_tokens:  # max_tokens 0: the prompt evaluated, nothing generated
                stats.stop_reason = "length"
                break
            while not lane.ready:
                yield None
            token = lane.take()
            if is_eog(vocab, token):
                stats.stop_reason = "eos"
                break
            stats.completion_tokens += 1
            if token in reported:
                held = text.flush()  # the text before the token is complete: it may not end a stop string
                if held:
                    yield held
                yield ControlToken(token)
            chunk = text.feed(piece(token))
            stop = _stop_reason(text.stopped, full=len(lane.cache) >= n_ctx, done=stats.completion_tokens >= max_tokens)
            if stop is None:
                lane.queue(token)  # before the chunk goes out: the next evaluation takes it along
            if chunk:
                yield chunk
            if stop is not None:
                stats.stop_reason = stop
                break
        tail = text.flush()
        if tail:
            yield tail
    finally:
        if decode_started is not None:
            stats.decode_s = time.perf_counter() - decode_started
        else:
            stats.prompt_eval_s = time.perf_counter() - started
        lane.leave()
        if logprobs is not None:
            del logprobs[stats.completion_tokens :]  # the end of generation's own token is no part of the answer


def _stop_reason(stopped: bool, *, full: bool, done: bool) -> str | None:
    """Why a generation ends after its latest token (a stop string, a full context, ``max_tokens``), or None."""
    return "stop" if stopped else "context" if full else "length" if done else None
