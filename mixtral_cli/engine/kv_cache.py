"""The tokens a context's KV cache holds, kept in step with the cache itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import LlamaCppError


class KVCache:
    """Sequence 0 of one llama.cpp context, and the tokens it holds, in order.

    The invariant: ``tokens`` is exactly what the context's KV cache holds. Every change to the cache goes
    through a method here, which changes the cache and ``tokens`` together, so a prompt that starts with
    ``tokens`` can skip evaluating them.
    """

    def __init__(self, ctx, *, n_batch: int) -> None:  # noqa: ANN001 - a llama_context_p (None: vocabulary only)
        self._ctx = ctx
        self._n_batch = n_batch  # llama.cpp may shrink the batch to fit the context: feed what it kept
        self._tokens: list[int] = []

    @property
    def tokens(self) -> tuple[int, ...]:
        return tuple(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def common_prefix(self, ids: Sequence[int]) -> int:
        """How many of ``ids``' first tokens the cache already holds."""
        common = 0
        for a, b in zip(self._tokens, ids, strict=False):
            if a != b:
                break
            common += 1
        return common

    def clear(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        self._tokens.clear()

    def bring_to(self, prompt_ids: Sequence[int]) -> int:
        """Hold ``prompt_ids``, reusing the prefix already held; returns the tokens evaluated.

        The last prompt token is always evaluated again: its logits choose the first new token.
        """
        import llama_cpp

        common = min(self.common_prefix(prompt_ids), len(prompt_ids) - 1)
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), 0, common, -1)
        del self._tokens[common:]
        pending = list(prompt_ids[common:])
        self.feed(pending)
        return len(pending)

    def feed(self, ids: Sequence[int]) -> None:
        """Evaluate ``ids`` after the tokens held, in batches of what the context allows."""
        import llama_cpp

        for start in range(0, len(ids), self._n_batch):
            chunk = ids[start : start + self._n_batch]
            array = (llama_cpp.llama_token * len(chunk))(*chunk)
            if llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(array, len(chunk))) != 0:
                raise LlamaCppError("llama.cpp failed to evaluate the prompt.")
            self._tokens.extend(chunk)

    def decoder(self) -> Callable[[int], None]:
        """Evaluates one token after those held: the decode loop's step, which allocates nothing per token."""
        import llama_cpp

        token_buffer = (llama_cpp.llama_token * 1)()
        batch = llama_cpp.llama_batch_get_one(token_buffer, 1)
        decode, ctx, held = llama_cpp.llama_decode, self._ctx, self._tokens

        def step(token: int) -> None:
            token_buffer[0] = token
            if decode(ctx, batch) != 0:
                raise LlamaCppError("llama.cpp failed to decode a token.")
            held.append(token)

        return step

    def take_from(self, source: KVCache) -> None:
        """Hold what ``source`` holds, as if this context had evaluated it (a hand-over between layouts)."""
        from .handover import copy_sequence

        copy_sequence(source._ctx, self._ctx)
        self._tokens[:] = source._tokens
