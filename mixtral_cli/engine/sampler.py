"""llama.cpp's native sampler chain, built from SamplingOptions, and a grammar that constrains it."""

from __future__ import annotations

import ctypes
import random

from ..base.errors import LlamaCppError
from .logprobs import TokenLogprobs, row_logprobs
from .options import SamplingOptions

PENALTY_LAST_N = 64  # the tokens the penalties look back on: llama.cpp's default (--repeat-last-n)


def build_sampler(sampling: SamplingOptions, vocab):  # noqa: ANN001, ANN201 - llama_vocab_p, llama_sampler_p
    """The chain llama.cpp's own CLI builds: logit biases, penalties, top-k, top-p, min-p, temperature, then a draw.

    Temperature 0 is greedy: the biases and penalties still apply, the draw is replaced by argmax.
    """
    import llama_cpp

    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(params)
    add = llama_cpp.llama_sampler_chain_add
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)  # this llama.cpp's signatures still take it first
    # One logit-bias sampler: the request's biases, and the answer's banned tokens as -inf over them.
    biased = {**dict(sampling.logit_bias), **dict.fromkeys(sampling.banned_tokens, float("-inf"))}
    if biased:
        biases = (llama_cpp.llama_logit_bias * len(biased))(*biased.items())
        add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))  # it copies them
    if sampling.penalized:
        penalties = (sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty)
        add(chain, llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, *penalties))
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
    tokens the grammar allows. This is how llama.cpp's own common sampler keeps grammars cheap. The
    repeated draw checks the likeliest tokens first: when the chain keeps only the K likeliest (top-k, or
    greedy's one) and K of those are allowed, the rest of the vocabulary cannot change the draw.

    llama.cpp's grammar reads byte tokens with a lenient UTF-8 decoder: it takes a lead byte such as 0xFD,
    or a surrogate or overlong sequence, as one character, where the text is not UTF-8 at all. Under a
    grammar, the byte tokens that would start or continue such a sequence are refused too.
    """

    def __init__(
        self,
        sampling: SamplingOptions,
        vocab,  # noqa: ANN001 - a llama_vocab_p
        *,
        logprobs: list[TokenLogprobs] | None = None,
    ) -> None:
        """``logprobs``, where ``sampling.logprobs`` asks for them: each drawn token's are appended to it."""
        import llama_cpp
        import numpy as np

        self._llama = llama_cpp
        self._chain = build_sampler(sampling, vocab)
        self._logprobs = logprobs if sampling.logprobs is not None else None
        self._top = sampling.logprobs or 0
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        # The penalties are the one sampler of the chain that keeps state, and they and the logit biases change
        # logits before the K likeliest are kept (banned tokens are biases too). Without penalties, llama.cpp's own
        # sampling call (which also accepts the token into the chain) may make the first draw; without either, a
        # repeated draw may start from the likeliest tokens.
        stateless = not sampling.penalized
        self._chain_draws_first = stateless
        ranked_by_logits = stateless and not sampling.logit_bias and not sampling.banned_tokens
        self._keeps = (1 if sampling.greedy else sampling.top_k) if ranked_by_logits else 0  # 0: the whole vocabulary
        self._grammar = None
        if sampling.grammar is None:
            return
        self._grammar = _grammar_sampler(vocab, sampling.grammar, sampling.grammar_trigger)
        self._trigger = sampling.grammar_trigger  # None once the grammar applies
        if not self._grammar:
            llama_cpp.llama_sampler_free(self._chain)
            raise LlamaCppError("llama.cpp could not parse the grammar.")
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._logits = np.zeros(n_vocab, dtype=np.float32)
        self._all = _Candidates(n_vocab)
        self._likeliest = _Candidates(min(n_vocab, max(256, 4 * self._keeps)))
        self._one = _Candidates(1)
        self._byte_of_token, self._refused_after = _utf8_rules(vocab)
        self._refused = self._refused_after[None]

    def sample(self, ctx, row: int = -1) -> int:  # noqa: ANN001 - a llama_context_p
        """The next token from the logits of the last evaluation's ``row`` (-1: its last)."""
        token = self._draw(ctx, row)
        if self._logprobs is not None:
            # The context's logits are llama.cpp's own still: the chain drew from a copy.
            logits = self._llama.llama_get_logits_ith(ctx, row)
            self._logprobs.append(row_logprobs(logits, self._n_vocab, token, self._top))
        return token

    def _draw(self, ctx, row: int) -> int:  # noqa: ANN001 - a llama_context_p
        llama_cpp = self._llama
        if self._grammar is None:
            return llama_cpp.llama_sampler_sample(self._chain, ctx, row)
        if self._chain_draws_first:
            token = llama_cpp.llama_sampler_sample(self._chain, ctx, row)
        else:
            token = self._all.fill(self._ids, self._read_logits(ctx, row)).pick(self._chain)
        if self._trigger is None and (token in self._refused or not self._one.fill(token, 0.0).allow(self._grammar)):
            token = self._redraw(ctx, row)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        if token == self._trigger:
            self._trigger = None
        self._refused = self._refused_after.get(self._byte_of_token.get(token), self._refused_after[None])
        return token

    def _redraw(self, ctx, row: int) -> int:  # noqa: ANN001 - a llama_context_p
        """The draw repeated over the tokens the grammar allows."""
        import numpy as np

        logits = self._read_logits(ctx, row)
        logits[list(self._refused)] = float("-inf")
        if self._keeps:
            size = len(self._likeliest.data)
            likeliest = np.argpartition(logits, -size)[-size:]
            if self._likeliest.fill(likeliest, logits[likeliest]).allow(self._grammar) >= self._keeps:
                return self._likeliest.pick(self._chain)
        self._all.fill(self._ids, logits).allow(self._grammar)
        return self._all.pick(self._chain)

    def _read_logits(self, ctx, row: int):  # noqa: ANN001, ANN202 - a llama_context_p; a numpy array
        import numpy as np

        self._logits[:] = np.ctypeslib.as_array(self._llama.llama_get_logits_ith(ctx, row), shape=self._logits.shape)
        return self._logits

    def close(self) -> None:
        for sampler in (self._chain, self._grammar):
            if sampler:
                self._llama.llama_sampler_free(sampler)
        self._chain = self._grammar = None


def _grammar_sampler(vocab, grammar: str, trigger: int | None):  # noqa: ANN001, ANN202 - llama_vocab_p, llama_sampler_p
    """llama.cpp's grammar sampler; a lazy one with ``trigger``, which enforces nothing before that token."""
    import llama_cpp

    if trigger is None:
        return llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    tokens = (llama_cpp.llama_token * 1)(trigger)
    return llama_cpp.llama_sampler_init_grammar_lazy_patterns(vocab, grammar.encode(), b"root", None, 0, tokens, 1)


class _Candidates:
    """Tokens with their logits in llama.cpp's own layout, for its samplers to filter and pick from."""

    def __init__(self, size: int) -> None:
        import llama_cpp
        import numpy as np

        self._llama = llama_cpp
        self.data = np.zeros(size, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self._array = llama_cpp.llama_token_data_array(
            self.data.ctypes.data_as(llama_cpp.llama_token_data_p), size, -1, False
        )

    def fill(self, ids, logits) -> _Candidates:  # noqa: ANN001 - numpy arrays or scalars
        self.data["id"], self.data["logit"], self.data["p"] = ids, logits, 0.0
        self._array.size, self._array.selected, self._array.sorted = len(self.data), -1, False
        return self

    def allow(self, grammar) -> int:  # noqa: ANN001 - a llama_sampler_p
        """How many candidates ``grammar`` allows; it marks the others -inf."""
        import numpy as np

        self._llama.llama_sampler_apply(grammar, ctypes.byref(self._array))
        return int(np.count_nonzero(self.data["logit"] != float("-inf")))

    def pick(self, chain) -> int:  # noqa: ANN001 - a llama_sampler_p
        self._llama.llama_sampler_apply(chain, ctypes.byref(self._array))
        return int(self.data["id"][self._array.selected])


# UTF-8's second byte after these lead bytes excludes overlong forms, surrogates and code points past U+10FFFF.
_SECOND_BYTE_REFUSED = {
    0xE0: range(0x80, 0xA0),
    0xED: range(0xA0, 0xC0),
    0xF0: range(0x80, 0x90),
    0xF4: range(0x90, 0xC0),
}
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
