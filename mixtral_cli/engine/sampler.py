"""llama.cpp's native sampler chain, built from SamplingOptions, and a grammar that constrains it."""

from __future__ import annotations

import ctypes
import random

from ..errors import LlamaCppError
from .options import SamplingOptions


def build_sampler(sampling: SamplingOptions):  # noqa: ANN201 - a llama_sampler_p
    """The chain llama.cpp's own CLI builds: penalties, top-k, top-p, min-p, temperature, then a draw.

    Temperature 0 is greedy: the penalties still apply, the draw is replaced by argmax.
    """
    import llama_cpp

    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(params)
    add = llama_cpp.llama_sampler_chain_add
    if sampling.repeat_penalty != 1.0:
        add(chain, llama_cpp.llama_sampler_init_penalties(64, sampling.repeat_penalty, 0.0, 0.0))
    if sampling.greedy:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if sampling.top_k > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
    add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
    seed = sampling.seed if sampling.seed is not None else random.SystemRandom().randrange(2**32 - 1)
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


class Sampler:
    """Picks each next token from the context's last logits, inside ``sampling.grammar`` when there is one.

    Checking a grammar against the whole vocabulary costs milliseconds per token, so a token is drawn
    first without it and only checked; only when the grammar rejects it is the draw repeated over the
    tokens the grammar allows. This is how llama.cpp's own common sampler keeps grammars cheap.

    llama.cpp's grammar reads byte tokens with a lenient UTF-8 decoder: it takes a lead byte such as 0xFD,
    or a surrogate or overlong sequence, as one character, where the text is not UTF-8 at all. Under a
    grammar, the byte tokens that would start or continue such a sequence are refused too.
    """

    def __init__(self, sampling: SamplingOptions, vocab) -> None:  # noqa: ANN001 - a llama_vocab_p
        import llama_cpp
        import numpy as np

        self._llama = llama_cpp
        self._chain = build_sampler(sampling)
        self._grammar = None
        if sampling.grammar is None:
            return
        self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, sampling.grammar.encode(), b"root")
        if not self._grammar:
            llama_cpp.llama_sampler_free(self._chain)
            raise LlamaCppError("llama.cpp could not parse the grammar.")
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        # One candidate array for the whole vocabulary, refilled from the logits at each draw.
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self._all = llama_cpp.llama_token_data_array(
            self._candidates.ctypes.data_as(llama_cpp.llama_token_data_p), n_vocab, -1, False
        )
        self._one_token = llama_cpp.llama_token_data(0, 0.0, 0.0)
        self._one = llama_cpp.llama_token_data_array(ctypes.pointer(self._one_token), 1, -1, False)
        self._byte_of_token, self._refused_after = _utf8_rules(vocab)
        self._refused = self._refused_after[None]

    def sample(self, ctx) -> int:  # noqa: ANN001 - a llama_context_p
        llama_cpp = self._llama
        if self._grammar is None:
            return llama_cpp.llama_sampler_sample(self._chain, ctx, -1)
        token = self._draw(ctx, grammar_first=False)
        self._one_token.id, self._one_token.logit = token, 0.0
        self._one.size, self._one.selected = 1, -1
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._one))
        if self._one_token.logit == float("-inf") or token in self._refused:
            token = self._draw(ctx, grammar_first=True)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        self._refused = self._refused_after.get(self._byte_of_token.get(token), self._refused_after[None])
        return token

    def _draw(self, ctx, *, grammar_first: bool) -> int:  # noqa: ANN001 - a llama_context_p
        import numpy as np

        llama_cpp = self._llama
        n_vocab = len(self._ids)
        candidates = self._candidates
        candidates["id"] = self._ids
        candidates["logit"] = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        candidates["p"] = 0.0
        self._all.size, self._all.selected, self._all.sorted = n_vocab, -1, False
        if grammar_first:
            candidates["logit"][list(self._refused)] = float("-inf")
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._all))
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(self._all))
        return int(candidates["id"][self._all.selected])

    def close(self) -> None:
        for sampler in (self._chain, self._grammar):
            if sampler:
                self._llama.llama_sampler_free(sampler)
        self._chain = self._grammar = None


# UTF-8's second byte after these lead bytes excludes overlong forms, surrogates and code points past U+10FFFF.
_SECOND_BYTE_REFUSED = {0xE0: range(0x80, 0xA0), 0xED: range(0xA0, 0xC0), 0xF0: range(0x80, 0x90), 0xF4: range(0x90, 0xC0)}
_NEVER_IN_UTF8 = (0xC0, 0xC1, *range(0xF5, 0x100))


def _utf8_rules(vocab) -> tuple[dict[int, int], dict[int | None, frozenset[int]]]:  # noqa: ANN001 - a llama_vocab_p
    """The byte each byte token stands for, and the byte tokens refused after a byte (None: after any other)."""
    import llama_cpp

    buffer = ctypes.create_string_buffer(8)
    byte_of_token = {}
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_get_attr(vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_BYTE:
            if llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False) == 1:
                byte_of_token[token] = buffer.raw[0]
    token_of_byte = {byte: token for token, byte in byte_of_token.items()}

    def tokens(values) -> frozenset[int]:  # noqa: ANN001
        return frozenset(token_of_byte[v] for v in values if v in token_of_byte)

    never = tokens(_NEVER_IN_UTF8)
    refused_after: dict[int | None, frozenset[int]] = {
        lead: never | tokens(second) for lead, second in _SECOND_BYTE_REFUSED.items()
    }
    refused_after[None] = never
    return byte_of_token, refused_after
