"""The tokens a context's KV cache holds, kept in step with the cache itself."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

from ..base.errors import LlamaCppError


class KVCache:
    """One sequence of a llama.cpp context's KV cache, and the tokens it holds, in order.

    The invariant: ``tokens`` is exactly what the context's KV cache holds. Every change to the cache goes
    through a method here, which changes the cache and ``tokens`` together, so a prompt that starts with
    ``tokens`` can skip evaluating them. A context serves several sequences (``mixtral serve --parallel``)
    whose caches are separate: each decodes through batches of its own sequence id.
    """

    def __init__(self, ctx, *, n_batch: int, sequence: int = 0) -> None:  # noqa: ANN001 - a llama_context_p or None
        self._ctx = ctx
        self._n_batch = n_batch  # llama.cpp may shrink the batch to fit the context: feed what it kept
        self.sequence = sequence
        self._tokens: list[int] = []
        self._batch = TokenBatch(n_batch) if ctx else None

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

        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), self.sequence, 0, -1)
        self._tokens.clear()

    def bring_to(self, prompt_ids: Sequence[int]) -> int:
        """Hold ``prompt_ids``, reusing the prefix already held; returns the tokens evaluated."""
        pending = self.cut_to(prompt_ids)
        self.feed(pending)
        return len(pending)

    def cut_to(self, prompt_ids: Sequence[int]) -> list[int]:
        """Keep the prefix of ``prompt_ids`` already held, drop the rest; returns the ids still to evaluate.

        The last prompt token is always evaluated again: its logits choose the first new token.
        """
        import llama_cpp

        common = min(self.common_prefix(prompt_ids), len(prompt_ids) - 1)
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), self.sequence, common, -1)
        del self._tokens[common:]
        return list(prompt_ids[common:])

    def evaluated(self, ids: Sequence[int]) -> None:
        """``ids`` were evaluated after the tokens held, in a batch of several sequences (batch.py)."""
        self._tokens.extend(ids)

    def feed(self, ids: Sequence[int], *, each_row: Callable[[int, object], None] | None = None) -> None:
        """Evaluate ``ids`` after the tokens held, in batches of what the context allows.

        ``each_row(i, logits)`` is given the logits after each ``ids[i]``, while llama.cpp still holds them.
        """
        import llama_cpp

        for start in range(0, len(ids), self._n_batch):
            chunk = ids[start : start + self._n_batch]
            position = len(self._tokens)
            batch = self._batch.fill(
                chunk, position=position, sequence=self.sequence, outputs_from=position if each_row else None
            )
            if llama_cpp.llama_decode(self._ctx, batch) != 0:
                raise LlamaCppError("llama.cpp failed to evaluate the prompt.")
            self._tokens.extend(chunk)
            if each_row is not None:
                for row in range(len(chunk)):
                    each_row(start + row, llama_cpp.llama_get_logits_ith(self._ctx, row))

    def take_from(self, source: KVCache) -> None:
        """Hold what ``source`` holds, as if this context had evaluated it (a hand-over between layouts)."""
        from .handover import copy_sequence

        copy_sequence(source._ctx, self._ctx)
        self._tokens[:] = source._tokens


class TokenBatch:
    """A llama_batch over arrays of our own (freed with it): a token, a position and a sequence id per row, and
    whether the row's logits are wanted (filled whole for one sequence by ``fill``, row by row by batch.py)."""

    def __init__(self, size: int) -> None:
        import llama_cpp

        self.tokens = (llama_cpp.llama_token * size)()
        self.positions = (llama_cpp.llama_pos * size)()
        self.sequences = (llama_cpp.llama_seq_id * size)()
        self.logits = (ctypes.c_int8 * size)()
        self._n_seq_id = (ctypes.c_int32 * size)(*[1] * size)
        row_pointer = ctypes.POINTER(llama_cpp.llama_seq_id)
        base, width = ctypes.addressof(self.sequences), ctypes.sizeof(llama_cpp.llama_seq_id)
        self._seq_ids = (row_pointer * size)(*[ctypes.cast(base + row * width, row_pointer) for row in range(size)])
        self.batch = llama_cpp.llama_batch(
            n_tokens=0,
            token=self.tokens,
            embd=None,
            pos=self.positions,
            n_seq_id=self._n_seq_id,
            seq_id=self._seq_ids,
            logits=self.logits,
        )

    def fill(self, ids: Sequence[int], *, position: int, sequence: int, outputs_from: int | None = None):  # noqa: ANN201
        """The batch of ``ids`` of ``sequence`` from ``position`` on (a llama_batch); ``outputs_from``: the first
        position whose logits are wanted, else only the last token's."""
        n = len(ids)
        self.tokens[:n] = list(ids)
        self.positions[:n] = list(range(position, position + n))
        self.sequences[:n] = [sequence] * n
        if outputs_from is None:
            self.logits[:n] = [0] * (n - 1) + [1]
        else:
            self.logits[:n] = [int(position + i >= outputs_from) for i in range(n)]
        self.batch.n_tokens = n
        return self.batch
