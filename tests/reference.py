"""The reference implementations the tests compare against: transformers, sentencepiece, llama.cpp as-is."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Varied text: accents, emoji, code, newlines and runs of spaces, as the tokenizer tests need.
PROMPT = (
    "The mixture of experts routes each token to two of eight feed-forward networks. "
    "Déjà vu: naïve café, Straße, 東京, emoji 🦙🚀, code `def f(x):\n    return x ** 2`  and   spaces."
)


def sentencepiece_ids(checkpoint: Path, text: str) -> list[int]:
    from sentencepiece import SentencePieceProcessor

    return SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model")).encode(text)


def transformers_logits(checkpoint: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import MixtralForCausalLM

    model = MixtralForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def llama_cpp_logits(gguf: Path, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=256, n_batch=256, logits_all=True, n_threads=2, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def llama_cpp_tokenize(gguf: Path, text: str) -> list[int]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        return llm.tokenize(text.encode(), add_bos=False, special=False)
    finally:
        llm.close()


def llama_cpp_greedy(
    gguf: Path, prompt: str, max_tokens: int, *, n_ctx: int, grammar: str | None = None, **penalties: float
) -> str:
    """llama-cpp-python's greedy completion (inside a GBNF ``grammar``, with its ``repeat_penalty``,
    ``frequency_penalty`` or ``presence_penalty``), configured as the engine configures llama.cpp.

    Random weights leave near-ties that any change of kernel flips: same threads, batch and flash attention.
    """
    from llama_cpp import Llama, LlamaGrammar

    from mixtral_cli.base.system import physical_cores

    llm = Llama(
        model_path=str(gguf),
        n_ctx=n_ctx,
        n_batch=512,
        n_ubatch=512,
        flash_attn=True,
        n_threads=physical_cores(),
        n_threads_batch=physical_cores(),
        verbose=False,
    )
    try:
        constraint = LlamaGrammar.from_string(grammar) if grammar is not None else None
        completion = llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=0, grammar=constraint, **penalties
        )
        return completion["choices"][0]["text"]
    finally:
        llm.close()


def engine_logits(gguf: Path, ids: list[int], loras=()) -> np.ndarray:  # noqa: ANN001 - LoraSpecs
    """The logits after each of ``ids``, as mixtral's engine computes them with ``loras`` applied."""
    import llama_cpp

    from mixtral_cli.engine.model import Engine
    from mixtral_cli.engine.options import EngineOptions

    with Engine(gguf, EngineOptions(ctx_size=256, threads=2, loras=tuple(loras))) as engine:
        rows = []
        for token in ids:
            engine.time_evaluation([token], one_by_one=True)
            logits = llama_cpp.llama_get_logits_ith(engine._ctx, -1)
            rows.append(np.ctypeslib.as_array(logits, shape=(engine.info.n_vocab,)).copy())
        return np.array(rows)
