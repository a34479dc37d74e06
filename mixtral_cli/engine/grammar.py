"""A grammar checked against a model's vocabulary alone, before the model itself loads.

llama.cpp's own parser decides whether a GBNF is valid (``llama_sampler_init_grammar`` returns NULL on a
parse error); token references like ``<[2]>`` or ``<token>`` need the vocabulary, which a vocab-only
load reads from the GGUF without touching the weights.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..base.errors import GGUFError, OutputShapeError
from . import logs
from .devices import init_backend


def json_schema_grammar(schema: str) -> str:
    """The GBNF of a JSON schema, by llama-cpp-python's converter; what it cannot express is refused."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(schema)
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise OutputShapeError(
            f"llama-cpp-python's schema converter cannot express this schema: {exc or type(exc).__name__}.",
            hint="README.md lists the schema features it supports.",
        ) from exc


def check_grammar(path: Path, grammar: str, *, answer: str | None = None) -> int | None:
    """Raise OutputShapeError with llama.cpp's reason if ``grammar`` does not parse; else the fewest tokens
    of this model's vocabulary that spell ``answer`` (None without one)."""
    import llama_cpp

    init_backend()
    errors: list[str] = []
    # The grammar parser reports its reasons as warnings and errors both.
    problems = (logs.LOG_LEVEL_WARN, logs.LOG_LEVEL_ERROR)
    with logs.log_handler(lambda level, text: level in problems and errors.append(text)):
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise GGUFError(f"llama.cpp could not read the vocabulary of {path}.", path=path)
        try:
            vocab = llama_cpp.llama_model_get_vocab(model)
            with _stderr_text() as printed:
                sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not sampler:
                raise OutputShapeError(f"The grammar does not parse: {_parse_error([*printed, *errors])}.")
            llama_cpp.llama_sampler_free(sampler)
            return fewest_tokens(answer.encode(), _pieces(vocab)) if answer is not None else None
        finally:
            llama_cpp.llama_model_free(model)


def fewest_tokens(text: bytes, pieces: set[bytes]) -> int:
    """The fewest vocabulary pieces whose concatenation is ``text`` (byte tokens make every text spellable)."""
    longest = max(map(len, pieces))
    best = [0] + [len(text) + 1] * len(text)
    for end in range(1, len(text) + 1):
        for start in range(max(0, end - longest), end):
            if best[start] + 1 < best[end] and text[start:end] in pieces:
                best[end] = best[start] + 1
    return best[-1]


def _pieces(vocab) -> set[bytes]:  # noqa: ANN001 - a llama_vocab_p
    import ctypes

    import llama_cpp

    buffer = ctypes.create_string_buffer(256)
    pieces = set()
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_is_control(vocab, token):
            continue
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
        if n > 0:
            pieces.add(buffer.raw[:n])
    return pieces


@contextlib.contextmanager
def _stderr_text() -> Iterator[list[str]]:
    """What C code writes to stderr inside the block: llama.cpp's grammar parser prints its reason there."""
    printed: list[str] = []
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield printed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            printed.append(capture.read().decode("utf-8", errors="replace"))


def _parse_error(logged: list[str]) -> str:
    """llama.cpp's reason, without the grammar it echoes after it."""
    text = "".join(logged).strip()
    reason = text.split("\n", 1)[0] if text else "llama.cpp gave no reason"
    for marker in ("error parsing grammar: ", "parse: "):
        reason = reason.split(marker, 1)[-1]
    return reason.rstrip(".")
