"""Log-probabilities as OpenAI reports them: the log-softmax of the logits llama.cpp returns, before any sampler
(penalties, biases, temperature, grammar) changes them, for the chosen token and the likeliest others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class TokenLogprobs:
    token: int
    logprob: float | None  # None: a prompt's first token, which nothing precedes
    top: tuple[tuple[int, float], ...] = ()  # the likeliest tokens and theirs, likeliest first


def log_softmax(logits: np.ndarray) -> np.ndarray:
    import numpy as np

    wide = logits.astype(np.float64)
    peak = wide.max()
    return wide - (peak + np.log(np.exp(wide - peak).sum()))


def token_logprobs(logits: np.ndarray, token: int, top: int) -> TokenLogprobs:
    """``token``'s log-probability under ``logits`` (one row, the whole vocabulary), and the ``top`` likeliest."""
    import numpy as np

    logprobs = log_softmax(logits)
    likeliest = np.argpartition(logprobs, -top)[-top:] if top else np.array([], dtype=np.int64)
    likeliest = likeliest[np.argsort(-logprobs[likeliest], kind="stable")]
    return TokenLogprobs(token, float(logprobs[token]), tuple((int(i), float(logprobs[i])) for i in likeliest))


def row_logprobs(pointer, n_vocab: int, token: int, top: int) -> TokenLogprobs:  # noqa: ANN001 - a float pointer
    """``token_logprobs`` of a row of logits llama.cpp holds (``llama_get_logits_ith``)."""
    import numpy as np

    return token_logprobs(np.ctypeslib.as_array(pointer, shape=(n_vocab,)), token, top)
