"""Log-probabilities as an answer job yields them: readable tokens (text and bytes) with the engine's numbers.

A ``Logprobs`` item follows the text chunk whose tokens it holds (a token of a character cut in two is in
the chunk that finishes it); with ``echo``, the prompt's tokens after its BOS come first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
