"""Hugging Face Mixtral checkpoint -> GGUF in llama.cpp's current MoE layout, streamed tensor by tensor."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..gguf_format.quant_types import QuantType
from .checkpoint import Checkpoint
from .safetensors import TensorRef, float32_to_bf16_bits, to_float32
from .streaming import OutputTensor, ProgressCallback, write_tensors
from .vocab import read_sentencepiece_vocab

if TYPE_CHECKING:
    import gguf
    import numpy as np


@dataclass(frozen=True)
class PlannedTensor:
    """One GGUF tensor and the checkpoint tensors it is made of (several when experts are stacked)."""

    name: str
    shape: tuple[int, ...]
    sources: tuple[TensorRef, ...]
    ggml_type: gguf.GGMLQuantizationType
    rope_heads: int = 0  # > 0: rows are permuted for llama.cpp's rope with this many heads

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.ggml_type)


def tensor_nbytes(shape: tuple[int, ...], ggml_type: gguf.GGMLQuantizationType) -> int:
    import gguf

    block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    return n_elements // block_size * type_size


def plan_tensors(checkpoint: Checkpoint, out_type: QuantType) -> list[PlannedTensor]:
    """Every tensor of the GGUF, in llama.cpp's naming, with the type each is stored as."""
    import gguf

    model = checkpoint.hparams.shape
    T = gguf.MODEL_TENSOR
    names = gguf.TENSOR_NAMES
    planned: list[PlannedTensor] = []

    def add(kind: gguf.MODEL_TENSOR, sources: list[TensorRef], *, layer: int = 0, rope_heads: int = 0) -> None:
        name = names[kind].format(bid=layer) + ".weight"
        shape = sources[0].shape if len(sources) == 1 else (len(sources), *sources[0].shape)
        planned.append(
            PlannedTensor(name, shape, tuple(sources), _stored_type(kind, shape, out_type), rope_heads=rope_heads)
        )

    add(T.TOKEN_EMBD, [checkpoint.tensor("model.embed_tokens.weight")])
    for n in range(model.num_layers):
        p = f"model.layers.{n}."
        add(T.ATTN_NORM, [checkpoint.tensor(p + "input_layernorm.weight")], layer=n)
        add(T.ATTN_Q, [checkpoint.tensor(p + "self_attn.q_proj.weight")], layer=n, rope_heads=model.num_heads)
        add(T.ATTN_K, [checkpoint.tensor(p + "self_attn.k_proj.weight")], layer=n, rope_heads=model.num_kv_heads)
        add(T.ATTN_V, [checkpoint.tensor(p + "self_attn.v_proj.weight")], layer=n)
        add(T.ATTN_OUT, [checkpoint.tensor(p + "self_attn.o_proj.weight")], layer=n)
        add(T.FFN_NORM, [checkpoint.tensor(p + "post_attention_layernorm.weight")], layer=n)
        add(T.FFN_GATE_INP, [checkpoint.tensor(p + "block_sparse_moe.gate.weight")], layer=n)
        # The Hub names an expert's gate, down and up projections w1, w2 and w3.
        for kind, weight in ((T.FFN_GATE_EXP, "w1"), (T.FFN_DOWN_EXP, "w2"), (T.FFN_UP_EXP, "w3")):
            experts = [
                checkpoint.tensor(f"{p}block_sparse_moe.experts.{e}.{weight}.weight") for e in range(model.num_experts)
            ]
            add(kind, experts, layer=n)
    add(T.OUTPUT_NORM, [checkpoint.tensor("model.norm.weight")])
    if not checkpoint.hparams.tie_word_embeddings or "lm_head.weight" in checkpoint.tensors:
        add(T.OUTPUT, [checkpoint.tensor("lm_head.weight")])
    return planned


def _stored_type(kind: gguf.MODEL_TENSOR, shape: tuple[int, ...], out_type: QuantType) -> gguf.GGMLQuantizationType:
    import gguf

    Q = gguf.GGMLQuantizationType
    # Norms are vectors and the router is tiny and sensitive: llama.cpp keeps both in F32 at every type.
    if len(shape) == 1 or kind == gguf.MODEL_TENSOR.FFN_GATE_INP:
        return Q.F32
    return storable_type(shape, out_type)


def storable_type(shape: tuple[int, ...], out_type: QuantType) -> gguf.GGMLQuantizationType:
    """``out_type`` as a GGML type, or F16 where rows of ``shape`` do not fill whole Q8_0 blocks."""
    import gguf

    Q = gguf.GGMLQuantizationType
    wanted = Q[out_type.name]
    if wanted == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return wanted


def write_gguf(
    checkpoint: Checkpoint,
    output: Path,
    out_type: QuantType,
    *,
    name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> None:
    """Write ``checkpoint`` as a GGUF of ``out_type`` (F32, F16, BF16 or Q8_0) to ``output``.

    Memory stays bounded by one source tensor: stacked experts are written one expert at a time.
    """
    import gguf

    planned = plan_tensors(checkpoint, out_type)
    writer = gguf.GGUFWriter(output, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _add_metadata(writer, checkpoint, out_type, name=name or checkpoint.name)
    write_tensors(
        writer,
        [
            OutputTensor(t.name, t.shape, t.nbytes, t.ggml_type, partial(_converted_parts, t, on_progress))
            for t in planned
        ],
    )


def _add_metadata(writer: gguf.GGUFWriter, checkpoint: Checkpoint, out_type: QuantType, *, name: str) -> None:
    hparams = checkpoint.hparams
    shape = hparams.shape
    writer.add_name(name)
    writer.add_vocab_size(shape.vocab_size)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.hidden_size)
    writer.add_block_count(shape.num_layers)
    writer.add_feed_forward_length(shape.intermediate_size)
    writer.add_head_count(shape.num_heads)
    writer.add_head_count_kv(shape.num_kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    if shape.head_dim * shape.num_heads != shape.hidden_size:
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
    writer.add_rope_freq_base(hparams.rope_theta)
    writer.add_layer_norm_rms_eps(hparams.rms_norm_eps)
    writer.add_expert_count(shape.num_experts)
    writer.add_expert_used_count(shape.experts_per_token)
    writer.add_file_type(out_type.file_type)
    writer.add_quantization_version(2)

    vocab = read_sentencepiece_vocab(checkpoint.tokenizer_model, vocab_size=shape.vocab_size)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.token_types)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_unk_token_id(vocab.unk_id)
    writer.add_add_bos_token(bool(checkpoint.tokenizer_config.get("add_bos_token", True)))
    writer.add_add_eos_token(bool(checkpoint.tokenizer_config.get("add_eos_token", False)))
    template = checkpoint.tokenizer_config.get("chat_template")
    if template:
        writer.add_chat_template(template)


def _converted_parts(tensor: PlannedTensor, on_progress: ProgressCallback | None) -> Iterator[np.ndarray]:
    for source in tensor.sources:
        raw = source.read_raw()
        if tensor.rope_heads:
            raw = permute_for_rope(raw, tensor.rope_heads)
        yield encode(raw, source.dtype, tensor.ggml_type)
        if on_progress:
            on_progress(source.nbytes)


def permute_for_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder Q/K rows from Hugging Face's rotate-half rope to llama.cpp's interleaved pairs, per head."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def encode(raw: np.ndarray, source_dtype: str, ggml_type: gguf.GGMLQuantizationType) -> np.ndarray:
    """Source data (raw bits for BF16) as the bytes of ``ggml_type``; same-type data is passed through."""
    import gguf
    import numpy as np

    Q = gguf.GGMLQuantizationType
    if ggml_type.name == source_dtype:
        return np.ascontiguousarray(raw)
    values = to_float32(raw, source_dtype)
    if ggml_type == Q.BF16:
        return float32_to_bf16_bits(values)
    return gguf.quants.quantize(values, ggml_type)
