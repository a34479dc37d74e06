"""llama.cpp's native sampler chain, built from SamplingOptions."""

from __future__ import annotations

import random

from ..errors import LlamaCppError
from .options import SamplingOptions


def build_sampler(sampling: SamplingOptions, vocab):  # noqa: ANN001, ANN201 - llama_vocab_p, llama_sampler_p
    """The chain llama.cpp's own CLI builds: penalties, top-k, top-p, min-p, temperature, then a draw.

    Temperature 0 is greedy: the penalties still apply, the draw is replaced by argmax. A grammar comes
    first, so every later step sees only the tokens it allows.
    """
    import llama_cpp

    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(params)
    add = llama_cpp.llama_sampler_chain_add
    if sampling.grammar is not None:
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, sampling.grammar.encode(), b"root")
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise LlamaCppError("llama.cpp could not parse the grammar.")
        add(chain, grammar)
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
