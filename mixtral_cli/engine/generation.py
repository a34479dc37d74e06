"""One generation: its statistics, the chunks it yields, and the decode loop that samples them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .kv_cache import KVCache
from .logprobs import TokenLogprobs
from .options import SamplingOptions
from .sampler import Sampler
from .text import TextStream


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
    """

    def __init__(self, chunks: Callable[[GenerationStats], Iterator[Chunk]]) -> None:
        self.stats = GenerationStats()
        self._chunks = chunks
        self.logprobs: list[TokenLogprobs] = []
        self.prompt_logprobs: list[TokenLogprobs] = []

    def __iter__(self) -> Iterator[Chunk]:
        return self._chunks(self.stats)


def decode(
    ctx,  # noqa: ANN001 - a llama_context_p
    vocab,  # noqa: ANN001 - a llama_vocab_p
    cache: KVCache,
    sampling: SamplingOptions,
    *,
    piece: Callable[[int], bytes],
    n_ctx: int,
    answer: bool,
    stats: GenerationStats,
    logprobs: list[TokenLogprobs] | None = None,
) -> Iterator[Chunk]:
    """Sample after what ``cache`` holds until an end of generation, a stop string, ``max_tokens`` or a full
    context; ``answer`` strips the space an Instruct answer starts with."""
    import llama_cpp

    sampler = Sampler(sampling, vocab, logprobs=logprobs)
    text = TextStream(stop=sampling.stop, strip_leading_space=answer)
    sample, is_eog = sampler.sample, llama_cpp.llama_vocab_is_eog
    feed, max_tokens, reported = cache.decoder(), sampling.max_tokens, frozenset(sampling.reported_tokens)
    decode_started = time.perf_counter()
    try:
        while True:
            if stats.completion_tokens >= max_tokens:
                stats.stop_reason = "length"
                break
            token = sample(ctx)
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
            if chunk:
                yield chunk
            if text.stopped:
                stats.stop_reason = "stop"
                break
            if len(cache) >= n_ctx:
                stats.stop_reason = "context"
                break
            feed(token)
        tail = text.flush()
        if tail:
            yield tail
    finally:
        stats.decode_s = time.perf_counter() - decode_started
        sampler.close()
        if logprobs is not None:
            del logprobs[stats.completion_tokens :]  # the end of generation's own token is no part of the answer
