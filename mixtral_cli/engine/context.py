"""A loaded model's llama.cpp context: the KV facts it is sized by, its size, and its creation."""

from __future__ import annotations

from collections.abc import Callable

from ..base.errors import GPUMemoryError, LlamaCppError
from ..base.system import available_memory
from .context_memory import ModelShape, check_context, context_that_fits
from .fit import Plan, context_params
from .loading import ModelInfo, last_error
from .options import EngineOptions, kv_bytes_per_token
from .placement import Placement


def model_kv_bytes_per_token(model, options: EngineOptions) -> int:  # noqa: ANN001 - a llama_model_p
    """K and V of every layer for one token, in the cache types ``options`` ask for."""
    import llama_cpp

    head_dim = llama_cpp.llama_model_n_embd(model) // llama_cpp.llama_model_n_head(model)
    return kv_bytes_per_token(
        n_layer=llama_cpp.llama_model_n_layer(model),
        n_embd_kv=head_dim * llama_cpp.llama_model_n_head_kv(model),
        type_k=options.cache_type_k,
        type_v=options.cache_type_v,
    )


def model_shape(model, info: ModelInfo, options: EngineOptions) -> ModelShape:  # noqa: ANN001 - a llama_model_p
    import llama_cpp

    return ModelShape(
        n_embd=llama_cpp.llama_model_n_embd(model),
        n_head=llama_cpp.llama_model_n_head(model),
        n_vocab=info.n_vocab,
        kv_bytes_per_token=model_kv_bytes_per_token(model, options),
    )


def context_size(
    model,  # noqa: ANN001 - a llama_model_p
    info: ModelInfo,
    options: EngineOptions,
    plan: Plan | None,
    notice: Callable[[str], None],
) -> int:
    """Each sequence's context: the one asked for, or the model's capped to memory; refused before llama.cpp
    allocates it."""
    wanted = info.n_ctx_train
    free = None if info.gpu_offload else available_memory()
    n_ctx = options.ctx_size
    if not n_ctx:
        n_ctx = wanted
        if free is not None:
            per_token = model_kv_bytes_per_token(model, options) * options.sequences
            n_ctx = context_that_fits(wanted, bytes_per_token=per_token, free=free, model_bytes=info.size_bytes)
        if n_ctx < wanted:
            notice(
                f"Context capped at {n_ctx} tokens (the model allows {wanted}) to fit in memory; --ctx-size overrides."
            )
    check_context(
        model_shape(model, info, options),
        n_ctx=n_ctx,
        n_batch=options.batch_size,
        flash_attn=plan.flash_attn if plan else options.flash_attn,
        n_ctx_train=wanted,
        free=free,
        n_seq=options.sequences,
    )
    return n_ctx


def new_context(  # noqa: ANN201 - a llama_context_p
    model,  # noqa: ANN001 - a llama_model_p
    info: ModelInfo,
    options: EngineOptions,
    *,
    plan: Plan | None,
    placement: Placement | None,
    threads: int,
    notice: Callable[[str], None],
    eval_callback: object | None = None,
):
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    n_ctx = context_size(model, info, options, plan, notice)
    flash_attn = plan.flash_attn if plan else options.flash_attn
    for name, value in context_params(options, n_ctx, flash_attn=flash_attn).items():
        setattr(params, name, value)
    params.n_threads = params.n_threads_batch = threads
    params.no_perf = True
    if eval_callback is not None:
        params.cb_eval = eval_callback
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        on_gpu = bool(placement and placement.devices and placement.n_gpu_layers)
        error = GPUMemoryError if on_gpu and "alloc" in last_error() else LlamaCppError
        raise error(
            f"llama.cpp could not create a context of {params.n_ctx} tokens{last_error()}.",
            hint="Try a smaller --ctx-size"
            + (", a quantized --cache-type-k, or a larger --gpu-margin." if on_gpu else "."),
        )
    if eval_callback is None:  # a context that reports its tensors (scoring's) would count the warm-up's
        try:
            warm_up(model, ctx)
        except BaseException:
            llama_cpp.llama_free(ctx)
            raise
    return ctx


def warm_up(model, ctx) -> None:  # noqa: ANN001 - a llama_model_p, a llama_context_p
    """llama.cpp's warm-up, as its own tools run it at load: one evaluation of BOS and EOS with every expert
    active, so that every weight is read once now (paged in, the backends' kernels ready), not in the first
    answers. Without it, the first answers after a load were up to 10% slower than llama-server's (8x7B-shaped,
    2 cores): each token routed to experts no token had used yet. The KV cache is left empty.

    Its attention is not causal, so that no real evaluation reuses its graph: llama.cpp reuses a graph for the
    next batch of the same shape and does not count the warm-up among what must match, so a first prompt of
    two tokens ran with every expert active."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(model)
    ids = [t for t in (llama_cpp.llama_vocab_bos(vocab), llama_cpp.llama_vocab_eos(vocab)) if t >= 0] or [0]
    llama_cpp.llama_set_causal_attn(ctx, False)
    llama_cpp.llama_set_warmup(ctx, True)
    try:
        tokens = (llama_cpp.llama_token * len(ids))(*ids)
        if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, len(ids))) != 0:
            raise LlamaCppError(f"llama.cpp could not evaluate its warm-up batch{last_error()}.")
        llama_cpp.llama_synchronize(ctx)
    finally:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        llama_cpp.llama_set_warmup(ctx, False)
        llama_cpp.llama_set_causal_attn(ctx, True)
