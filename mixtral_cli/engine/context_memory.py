"""What a context costs in memory, known before llama.cpp allocates it.

llama.cpp allocates the KV cache and its compute buffers when the context is created; a context past
the machine's memory ends in bad_alloc or the kernel's OOM killer, and one past the model's trained
length runs on positions the model never saw. Both are refused here first, naming the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import LimitError
from ..base.units import format_bytes

_F32 = 4
_MIN_CTX = 512  # the least a capped context keeps


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a loaded model that a context's memory depends on."""

    n_embd: int
    n_head: int
    n_vocab: int
    kv_bytes_per_token: int  # K and V of every layer, in the cache types asked for

    def compute_bytes(self, *, n_ctx: int, n_batch: int, flash_attn: bool) -> int:
        """A bound on the compute buffers of one batch: the logits, a few activations and, without flash
        attention, the attention scores of every head against the whole context."""
        n_ubatch = min(n_batch, n_ctx)  # llama.cpp never evaluates more at once than the context holds
        per_token = self.n_vocab + 8 * self.n_embd + (0 if flash_attn else n_ctx * self.n_head)
        return n_ubatch * per_token * _F32

    def context_bytes(self, *, n_ctx: int, n_batch: int, flash_attn: bool, n_seq: int = 1) -> int:
        """``n_seq`` sequences of ``n_ctx`` tokens each, evaluated one batch at a time: a batch holds at least one
        token of each (engine/batch.py), and attends within each sequence's own context (fit.context_params)."""
        kv = n_seq * n_ctx * self.kv_bytes_per_token
        return kv + self.compute_bytes(n_ctx=n_ctx, n_batch=max(n_batch, n_seq), flash_attn=flash_attn)


def check_context(
    shape: ModelShape,
    *,
    n_ctx: int,
    n_batch: int,
    flash_attn: bool,
    n_ctx_train: int,
    free: int | None,
    n_seq: int = 1,
) -> None:
    """Refuse a context longer than the model was trained for, or one ``free`` bytes of memory cannot hold."""
    if n_ctx > n_ctx_train:
        raise LimitError(
            f"--ctx-size {n_ctx} is more than the {n_ctx_train} tokens this model was trained on.",
            hint=f"Give --ctx-size {n_ctx_train} or less.",
        )
    needed = shape.context_bytes(n_ctx=n_ctx, n_batch=n_batch, flash_attn=flash_attn, n_seq=n_seq)
    if free is None or needed <= free:
        return
    fits = n_ctx
    while fits > 16 and shape.context_bytes(n_ctx=fits, n_batch=n_batch, flash_attn=flash_attn, n_seq=n_seq) > free:
        fits //= 2
    needed_text, free_text = format_bytes(needed, digits=2), format_bytes(free, digits=2)
    raise LimitError(
        f"A context of {n_ctx} tokens (batches of {min(n_batch, n_ctx)}) needs {needed_text} of memory for its "
        f"KV cache and compute buffers, but {free_text} is available.",
        hint=f"Give a smaller --ctx-size ({fits} fits) or --batch-size.",
    )


def context_that_fits(wanted: int, *, bytes_per_token: int, free: int, model_bytes: int) -> int:
    """The model's context, or less when its KV cache would not fit in half the memory the model leaves."""
    budget = (free - model_bytes) // 2  # the other half is for everything else on the machine
    if wanted * bytes_per_token <= budget:
        return wanted
    return max(_MIN_CTX, budget // bytes_per_token // 256 * 256)
