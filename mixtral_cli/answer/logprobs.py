"""Log-probabilities as an answer job yields them: readable tokens (text and bytes) with the engine's numbers.

A ``Logprobs`` item follows the text chunk whose tokens it holds (a token of a character cut in two is in
the chunk that finishes it); with ``echo``, the prompt's tokens after its BOS come first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.logprobs import TokenLogprobs
    from ..engine.model import Engine


@dataclass(frozen=True)
class ReadableToken:
    text: str  # the token's bytes as text; a part of a character is U+FFFD
    bytes: bytes
    logprob: float | None  # None: a prompt's first token, which nothing precedes
    top: tuple[tuple[str, bytes, float], ...] = ()  # the likeliest tokens at this place, likeliest first


@dataclass(frozen=True)
class Logprobs:
    tokens: tuple[ReadableToken, ...]


def readable(engine: Engine, tokens: Sequence[TokenLogprobs]) -> Logprobs:
    def piece(token: int) -> tuple[str, bytes]:
        data = engine.piece(token)
        return data.decode("utf-8", errors="replace"), data

    return Logprobs(
        tuple(ReadableToken(*piece(t.token), t.logprob, tuple((*piece(i), lp) for i, lp in t.top)) for t in tokens)
    )


def echoed(engine: Engine, tokens: Sequence[TokenLogprobs], prompt: str) -> Logprobs:
    """A text prompt's tokens after its BOS, spelling ``prompt`` as given: the space the tokenizer puts before
    the first word (SentencePiece's prefix) is not in the echoed text, so the first token's text goes without
    it, and a completion's ``text_offset`` counts characters of the text it returns."""
    readable_tokens = readable(engine, tokens).tokens
    if not readable_tokens or "".join(t.text for t in readable_tokens) != f" {prompt}":
        return Logprobs(readable_tokens)
    first = readable_tokens[0]
    return Logprobs((replace(first, text=first.text[1:], bytes=first.bytes[1:]), *readable_tokens[1:]))
