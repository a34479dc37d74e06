"""Every running sequence of a context evaluated in one ``llama_decode``: continuous batching, as llama-server does.

Each generation joins its context's one ``SharedBatch`` as a ``Lane``: the tokens it still has to evaluate, the
sequence's KV cache, and the function that picks its next token from its row of logits (its own sampler chain:
temperature, seed, grammar). An evaluation holds one token of every lane that is decoding, then shares the rest
of the batch (``n_batch`` tokens) equally among the prompts still being read, a chunk of each (what a shorter one
does not need goes to the others): a long prompt advances a chunk per evaluation while the others keep decoding,
a short prompt that comes after it is read at once beside it (llama-server fills the batch in slot order, where
a long prompt holds back the prompts behind it), and a lane that leaves (its request cancelled) is gone from
the next evaluation.

Picking happens right after the evaluation, for every lane whose last pending token was in it: the logits of a
batch live only until the next ``llama_decode``, which any lane may cause.

Rows batched together give the solo row's values in the plain weight layout (to 2e-6 on the demo model).
The repacked layout's kernels group a batch's rows (a MoE batch's by expert), so a row's sums depend on its
neighbours: up to 0.045 from the solo logits on the demo model (tests/test_batch.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..base.errors import LlamaCppError
from .kv_cache import KVCache, TokenBatch

Pick = Callable[[object, int], int]  # (llama_context_p, row of logits in the batch) -> the next token


class Lane:
    """One sequence's place in the shared batch: what it has still to evaluate, and its next token once picked."""

    def __init__(self, batch: SharedBatch, cache: KVCache, pending: Sequence[int], pick: Pick) -> None:
        self.cache = cache
        self._batch = batch
        self._pick = pick
        self.pending: list[int] = list(pending)
        self.prompting = True  # until the prompt's last token is evaluated; then one token per evaluation
        self.token: int | None = None  # picked after the last evaluation, not yet taken
        self._error: Exception | None = None  # the pick's, raised by take(): one lane's failure is its own

    @property
    def ready(self) -> bool:
        return self.token is not None or self._error is not None

    def take(self) -> int:
        if self._error is not None:
            raise self._error
        token, self.token = self.token, None
        assert token is not None, "a lane's token is taken once it is ready"
        return token

    def queue(self, token: int) -> None:
        """Evaluate ``token`` next, after those the cache holds."""
        self.pending = [token]

    def leave(self) -> None:
        """Out of the batch: nothing more of this sequence is evaluated; its cache keeps what was."""
        self._batch.leave(self)

    def picked(self, ctx, row: int) -> None:  # noqa: ANN001 - a llama_context_p
        self.prompting = False
        try:
            self.token = self._pick(ctx, row)
        except Exception as exc:  # noqa: BLE001 - handed to this lane's own generation by take()
            self._error = exc


class SharedBatch:
    """The batch every lane of one context feeds, and the evaluation that advances them all at once."""

    def __init__(self, ctx, *, n_batch: int) -> None:  # noqa: ANN001 - a llama_context_p
        self._ctx = ctx
        self._size = n_batch  # the context's n_batch holds one token per sequence (fit.context_params)
        self._lanes: list[Lane] = []
        self._rows = TokenBatch(n_batch)

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def join(self, cache: KVCache, pending: Sequence[int], pick: Pick) -> Lane:
        """A lane that evaluates ``pending`` after what ``cache`` holds, then picks with ``pick``."""
        if not pending:
            raise ValueError("a lane starts with at least the prompt's last token to evaluate")
        if any(lane.cache is cache for lane in self._lanes):
            raise ValueError(f"sequence {cache.sequence} is already generating")
        lane = Lane(self, cache, pending, pick)
        self._lanes.append(lane)
        return lane

    def leave(self, lane: Lane) -> None:
        if lane in self._lanes:
            self._lanes.remove(lane)

    def prompt_read(self, sequence: int) -> tuple[int, int] | None:
        """How far the lane of ``sequence`` has read its prompt: the prompt's tokens in its cache, and the prompt's
        length; None when no lane of that sequence is reading a prompt."""
        for lane in self._lanes:
            if lane.cache.sequence == sequence and lane.prompting:
                return len(lane.cache), len(lane.cache) + len(lane.pending)
        return None

    def evaluate(self) -> int:
        """One ``llama_decode`` of what the lanes have pending (a token of every decoding lane, then an equal share
        of the room left to each prompt being read, up to ``n_batch`` tokens in all), and a pick for every lane
        whose pending tokens are all evaluated; returns the tokens evaluated."""
        import llama_cpp

        # by sequence id: llama.cpp evaluates runs of consecutive ids together
        decoding = sorted((lane for lane in self._lanes if lane.pending and not lane.prompting), key=_sequence)
        rows = [(lane, 1) for lane in decoding]
        reading = [lane for lane in self._lanes if lane.pending and lane.prompting]
        shares = _shares(self._size - len(rows), [len(lane.pending) for lane in reading])
        rows += [(lane, share) for lane, share in zip(reading, shares, strict=True) if share]
        if not rows:
            return 0
        n, batch = 0, self._rows
        picks: list[tuple[Lane, int]] = []
        for lane, take in rows:
            start = len(lane.cache)
            for i in range(take):
                batch.tokens[n], batch.positions[n] = lane.pending[i], start + i
                batch.sequences[n], batch.logits[n] = lane.cache.sequence, 0
                n += 1
            if take == len(lane.pending):
                batch.logits[n - 1] = 1
                picks.append((lane, n - 1))
        batch.batch.n_tokens = n
        if llama_cpp.llama_decode(self._ctx, batch.batch) != 0:
            raise LlamaCppError("llama.cpp failed to evaluate a batch.")
        for lane, take in rows:
            lane.cache.evaluated(lane.pending[:take])
            del lane.pending[:take]
        for lane, row in picks:
            lane.picked(self._ctx, row)
        return n


def _sequence(lane: Lane) -> int:
    return lane.cache.sequence


def _shares(room: int, needs: list[int]) -> list[int]:
    """``room`` tokens shared among prompts that still need ``needs``: equally, the smallest needs served first
    (they take the larger part of an uneven split), so that what a short prompt leaves goes to the longer ones."""
    shares = [0] * len(needs)
    by_need = sorted(range(len(needs)), key=needs.__getitem__)
    for served, i in enumerate(by_need):
        shares[i] = min(needs[i], -(-room // (len(by_need) - served)))
        room -= shares[i]
    return shares
