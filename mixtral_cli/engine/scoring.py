"""Scoring text for `mixtral eval`: a model's logits over the second half of a chunk, as llama-perplexity
takes them, and the experts its router chose in every layer, read from llama.cpp's graph by the eval callback.

llama.cpp's MoE graph (llama-graph.cpp, build_moe_ffn) names the router's choice ``ffn_moe_topk-<layer>``: an
I32 view of the experts' argsort, the best first, one row per token. The scheduler asks the callback about
every node before it computes it; for the ones we want it stops there, and calls again once it is computed.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import LlamaCppError
from .kv_cache import TokenBatch
from .model import Engine
from .options import EngineOptions

if TYPE_CHECKING:
    import numpy as np

ROUTER_TOPK = b"ffn_moe_topk-"
_GGML_TYPE_I32 = 26
_GGML_MAX_DIMS, _GGML_MAX_OP_PARAMS, _GGML_MAX_SRC, _GGML_MAX_NAME = 4, 64, 10, 64


class _GGMLTensor(ctypes.Structure):
    """The head of ggml.h's ``struct ggml_tensor``, up to its name: what the callback reads."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * _GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * _GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (_GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * _GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * _GGML_MAX_NAME),
    ]


def _ggml_base():  # noqa: ANN202 - a ctypes.CDLL
    """ggml's base library as llama-cpp-python loaded it: ggml_backend_tensor_get copies from any device."""
    import llama_cpp
    from llama_cpp._ctypes_extensions import load_shared_library

    library = load_shared_library("ggml-base", Path(llama_cpp.__file__).parent / "lib")
    library.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    library.ggml_backend_tensor_get.restype = None
    library.ggml_nbytes.argtypes = [ctypes.c_void_p]
    library.ggml_nbytes.restype = ctypes.c_size_t
    return library


class RouterCapture:
    """The eval callback that keeps each layer's router top-k rows, for as long as one chunk is evaluated.

    Python code run from C cannot raise into it: an exception there (Ctrl-C and SIGTERM arrive where Python
    runs, and during a decode that is here) is kept in ``pending`` and raised by the scorer once the decode
    returns. One raised on the callback's first instruction, before its ``try``, reaches only ctypes, which
    hands it to ``sys.unraisablehook``: ``catching_signals`` takes it from there.
    """

    def __init__(self) -> None:
        import llama_cpp

        self._ggml = _ggml_base()
        self._rows: dict[int, list[np.ndarray]] = {}
        self.pending: BaseException | None = None
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_tensor)

    def _on_tensor(self, tensor: int, ask: bool, user_data: object) -> bool:
        try:
            head = _GGMLTensor.from_address(tensor)
            if not head.name.startswith(ROUTER_TOPK):
                return not ask  # not wanted; and never asked again about a tensor we did not want
            if ask:
                return True
            self._keep(tensor, head)
        except BaseException as exc:  # noqa: BLE001 - kept, raised once llama.cpp returns
            self.pending = self.pending or exc
        return True

    def _keep(self, tensor: int, head: _GGMLTensor) -> None:
        import numpy as np

        if head.type != _GGML_TYPE_I32:
            raise LlamaCppError(f"llama.cpp's {head.name.decode()} is not an I32 tensor (type {head.type}).")
        k, n_tokens, row_bytes = head.ne[0], head.ne[1], head.nb[1]
        layer = int(head.name[len(ROUTER_TOPK) :])
        if n_tokens == 0:
            return
        # A view of the argsort: k ids at the start of each n_expert-long row; copy the span, then slice.
        span = np.zeros(n_tokens * row_bytes // 4, dtype=np.int32)
        self._ggml.ggml_backend_tensor_get(tensor, span.ctypes.data, 0, self._ggml.ggml_nbytes(tensor))
        self._rows.setdefault(layer, []).append(span.reshape(n_tokens, row_bytes // 4)[:, :k].copy())

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        """For the block, exceptions that escape the callback (not bugs: BaseExceptions, such as Ctrl-C's)
        become ``pending`` instead of a line on stderr and nothing else."""
        previous = sys.unraisablehook

        def keep(unraisable: sys.UnraisableHookArgs) -> None:
            if isinstance(unraisable.exc_value, Exception) or unraisable.exc_value is None:
                previous(unraisable)
            else:
                self.pending = self.pending or unraisable.exc_value

        sys.unraisablehook = keep
        try:
            yield
        finally:
            sys.unraisablehook = previous

    def take(self, last: int) -> np.ndarray | None:
        """The last ``last`` positions' experts in every layer, as (layer, position, rank); then forget them.
        None where the graph had no router (a dense model)."""
        import numpy as np

        rows, self._rows = self._rows, {}
        if not rows:
            return None
        return np.stack([np.concatenate(rows[layer])[-last:] for layer in sorted(rows)])


@dataclass(frozen=True)
class ChunkScores:
    """What one chunk gives the statistics, llama-perplexity's way: the first half is context only."""

    logits: np.ndarray  # (n - n//2 - 1, n_vocab) float32: positions n//2 .. n-2, each predicting the next token
    experts: np.ndarray | None  # (layers, n - n//2, experts used) int32: positions n//2 .. n-1, best first


class Scorer:
    """One model and a context of ``options.ctx_size`` tokens that scores chunks of that size."""

    def __init__(
        self,
        path: Path,
        options: EngineOptions,
        *,
        on_notice: Callable[[str], None] | None = None,
        pulled_as: tuple[str, bool] | None = None,
    ) -> None:
        import llama_cpp

        self._llama = llama_cpp
        self._capture = RouterCapture()
        self.engine = Engine(
            path, options, on_notice=on_notice, pulled_as=pulled_as, eval_callback=self._capture.callback
        )
        self._n_batch = llama_cpp.llama_n_batch(self.engine._ctx)  # llama.cpp may shrink it to the context
        self._batch = TokenBatch(self._n_batch)
        self.n_vocab = self.engine.info.n_vocab

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    def tokenize(self, text: str) -> list[int]:
        """``text``'s ids as llama-perplexity takes them: the BOS the vocabulary asks for, then the text."""
        llama_cpp, vocab = self._llama, self.engine._vocab
        bos = [self.engine.special.bos] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
        return bos + self.engine.tokenize(text)

    def vocabulary_digest(self) -> str:
        """A digest of every token's text and kind: two models read the same ids alike when these are equal."""
        llama_cpp, vocab = self._llama, self.engine._vocab
        digest = hashlib.sha256()
        for token in range(self.n_vocab):
            digest.update(llama_cpp.llama_vocab_get_text(vocab, token) or b"")
            digest.update(b"\0%d\0" % llama_cpp.llama_vocab_get_attr(vocab, token))
        return digest.hexdigest()

    def score(self, ids: Sequence[int]) -> ChunkScores:
        """Evaluate one chunk from an empty cache, its first id replaced by BOS (as llama-perplexity does), the
        logits of its second half kept."""
        import numpy as np

        llama_cpp, ctx = self._llama, self.engine._ctx
        ids = list(ids)
        if llama_cpp.llama_vocab_get_add_bos(self.engine._vocab):
            ids[0] = self.engine.special.bos
        first = len(ids) // 2
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        kept = []
        for start in range(0, len(ids), self._n_batch):
            part = ids[start : start + self._n_batch]
            with self._capture.catching_signals():
                batch = self._batch.fill(part, position=start, sequence=0, outputs_from=first)
                failed = llama_cpp.llama_decode(ctx, batch)
            if self._capture.pending is not None:
                pending, self._capture.pending = self._capture.pending, None
                self._capture.take(0)
                raise pending
            if failed:
                raise LlamaCppError("llama.cpp failed to evaluate a chunk of the text.")
            outputs = max(0, start + len(part) - max(start, first))
            if outputs:
                logits = llama_cpp.llama_get_logits(ctx)
                kept.append(np.ctypeslib.as_array(logits, shape=(outputs * self.n_vocab,)).copy())
        logits = np.concatenate(kept).reshape(-1, self.n_vocab)[:-1]
        return ChunkScores(logits=logits, experts=self._capture.take(len(ids) - first))
