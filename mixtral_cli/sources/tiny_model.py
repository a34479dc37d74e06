"""A tiny random-weight Mixtral in exact Hugging Face Hub layout.

Random weights give gibberish text but exact, checkable numbers: the tests convert this checkpoint and
compare llama.cpp with transformers, and the demo model is this checkpoint run through ``mixtral
quantize``. The tokenizer is the real one, copied from the mistral-common wheel into ``mixtral_cli/data``.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..base.bounds import INT32_MAX, Bound
from ..base.errors import DiskSpaceError, InvalidShapeError, LimitError
from ..base.units import format_bytes
from ..family.shape import MixtralShape
from ..gguf_format.hparams import MAX_EXPERTS, MAX_LAYERS

if TYPE_CHECKING:
    import numpy as np

# What writes a model (atomic folders, safetensors, the package's data) is imported when one is built:
# `mixtral --help` imports this module for SHAPE_BOUNDS alone.
TokenizerVersion = Literal["v1", "v3"]
_BF16, _FLOAT64 = 2, 8

# mistralai's "v1" chat template, with a system prompt, as the Instruct repos' tokenizer_config.json
# carries it (llama.cpp's tests/test-chat-template.cpp holds the same string). mixtral never renders it:
# prompts are built as ids. Its presence is what marks a checkpoint as Instruct, as in the real repos,
# whose base checkpoints have no chat template.
MISTRAL_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"
)
TOKENIZER_FILES: dict[str, str] = {"v1": "tokenizer.model.v1", "v3": "tokenizer.model.v3"}
VOCAB_SIZES: dict[str, int] = {"v1": 32000, "v3": 32768}

# What each size of `mixtral tiny` can be: llama.cpp's own limits where it has them.
SHAPE_BOUNDS = {
    "layers": Bound(1, MAX_LAYERS, f"llama.cpp's most layers ({MAX_LAYERS})"),
    "hidden_size": Bound(8, INT32_MAX),
    "intermediate_size": Bound(8, INT32_MAX),
    "experts": Bound(1, MAX_EXPERTS, f"llama.cpp's most experts ({MAX_EXPERTS})"),
    "experts_used": Bound(1, MAX_EXPERTS, f"llama.cpp's most experts ({MAX_EXPERTS})"),
    "heads": Bound(1, INT32_MAX),
    "kv_heads": Bound(1, INT32_MAX),
    "shards": Bound(1, 99999, "the most a shard's five-digit name can number"),
    "seed": Bound(0, 2**64 - 1, "the most a 64-bit seed holds"),
}


@dataclass(frozen=True)
class TinyMixtralSpec:
    """A tiny Mixtral to build: its shape (``shape``, spelled as MixtralShape spells it) and how to write it.
    The defaults keep every matrix a multiple of 256 for k-quants."""

    tokenizer: TokenizerVersion = "v1"
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 2
    num_experts: int = 8
    experts_per_token: int = 2
    num_heads: int = 8
    num_kv_heads: int = 2
    context_length: int = 32768
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-5
    seed: int = 0
    shards: int = 1
    instruct: bool = False  # True: tokenizer_config.json carries the chat template, as an Instruct repo's does

    @property
    def shape(self) -> MixtralShape:
        """The shape it is built to: heads of equal size, the tokenizer's vocabulary."""
        return MixtralShape(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.hidden_size // self.num_heads,
            num_experts=self.num_experts,
            experts_per_token=self.experts_per_token,
            context_length=self.context_length,
            vocab_size=VOCAB_SIZES[self.tokenizer],
        )


def tokenizer_model_path(version: TokenizerVersion) -> Path:
    """The real SentencePiece model of a tokenizer version, as shipped in this package."""
    from importlib import resources

    return Path(str(resources.files("mixtral_cli") / "data" / TOKENIZER_FILES[version]))


def build_tiny_mixtral(directory: Path, spec: TinyMixtralSpec = TinyMixtralSpec()) -> Path:
    """Write a random Mixtral checkpoint into ``directory``; the same spec always gives the same bytes."""
    from ..base.atomic import atomic_folder

    head_dim, odd_heads = divmod(spec.hidden_size, spec.num_heads)
    if odd_heads or head_dim % 2 or spec.num_heads % spec.num_kv_heads:
        raise InvalidShapeError(
            f"hidden size {spec.hidden_size} with {spec.num_heads} heads and {spec.num_kv_heads} KV heads is no "
            "valid shape.",
            hint="The hidden size must divide into heads of even size, and the heads into the KV heads.",
        )
    if not 1 <= spec.experts_per_token <= spec.num_experts:
        raise InvalidShapeError(
            f"{spec.experts_per_token} experts per token out of {spec.num_experts} is no valid shape.",
            hint="Use between 1 and the number of experts.",
        )
    if spec.shards > _tensor_count(spec):
        raise InvalidShapeError(
            f"{spec.shards} shards for {_tensor_count(spec)} tensors would leave shards empty.",
            hint=f"Give --shards {_tensor_count(spec)} or fewer.",
        )
    shape = spec.shape
    _check_room(directory, shape, shards=spec.shards)
    # Written aside and moved in when whole: a shape too large for memory or disk leaves nothing behind.
    with atomic_folder(directory) as building:
        _write_json(building / "config.json", _config(spec, shape))
        _write_json(building / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
        _write_json(building / "tokenizer_config.json", _tokenizer_config(shape.vocab_size, instruct=spec.instruct))
        _write_json(
            building / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
        )
        (building / "tokenizer.model").write_bytes(tokenizer_model_path(spec.tokenizer).read_bytes())
        try:
            _write_weights(building, spec, _random_weights(shape, seed=spec.seed))
        except MemoryError as exc:
            raise InvalidShapeError(
                f"A tiny Mixtral of this shape cannot be allocated: {exc}.", hint="Choose smaller sizes."
            ) from exc
    return directory


def _config(spec: TinyMixtralSpec, shape: MixtralShape) -> dict[str, object]:
    # Key for key as mistralai/Mixtral-8x7B-v0.1 has it, with the tiny shape.
    return {
        "architectures": ["MixtralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": shape.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate_size,
        "max_position_embeddings": shape.context_length,
        "model_type": "mixtral",
        "num_attention_heads": shape.num_heads,
        "num_experts_per_tok": shape.experts_per_token,
        "num_hidden_layers": shape.num_layers,
        "num_key_value_heads": shape.num_kv_heads,
        "num_local_experts": shape.num_experts,
        "output_router_logits": False,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "router_aux_loss_coef": 0.02,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.36.0.dev0",
        "use_cache": True,
        "vocab_size": shape.vocab_size,
    }


def _tokenizer_config(vocab_size: int, *, instruct: bool) -> dict[str, object]:
    special = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    chat = {"chat_template": MISTRAL_CHAT_TEMPLATE} if instruct else {}
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): {"content": t, **special} for i, t in enumerate(["<unk>", "<s>", "</s>"])},
        "bos_token": "<s>",
        **chat,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
        "vocab_size": vocab_size,
    }


def _random_weights(shape: MixtralShape, *, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor as BF16 bits, in the checkpoint's order, one at a time (an 8x7B-shaped layer is 2.8 GB)."""
    import numpy as np

    from ..convert.safetensors import float32_to_bf16_bits

    rng = np.random.default_rng(seed)
    head_dim, vocab_size = shape.head_dim, shape.vocab_size
    h, ffn = shape.hidden_size, shape.intermediate_size

    def linear(rows: int, cols: int) -> np.ndarray:
        # 1/sqrt(fan_in) keeps activations and logits near unit scale through the layers.
        return float32_to_bf16_bits(rng.normal(0.0, cols**-0.5, size=(rows, cols)))

    def norm() -> np.ndarray:
        # Not all ones, so a norm weight that went missing or to the wrong place changes the logits.
        return float32_to_bf16_bits(1.0 + rng.normal(0.0, 0.1, size=h))

    yield "model.embed_tokens.weight", float32_to_bf16_bits(rng.normal(0.0, 1.0, size=(vocab_size, h)))
    for n in range(shape.num_layers):
        p = f"model.layers.{n}."
        yield p + "input_layernorm.weight", norm()
        yield p + "self_attn.q_proj.weight", linear(shape.num_heads * head_dim, h)
        yield p + "self_attn.k_proj.weight", linear(shape.num_kv_heads * head_dim, h)
        yield p + "self_attn.v_proj.weight", linear(shape.num_kv_heads * head_dim, h)
        yield p + "self_attn.o_proj.weight", linear(h, shape.num_heads * head_dim)
        yield p + "post_attention_layernorm.weight", norm()
        yield p + "block_sparse_moe.gate.weight", linear(shape.num_experts, h)
        for e in range(shape.num_experts):
            q = f"{p}block_sparse_moe.experts.{e}."
            yield q + "w1.weight", linear(ffn, h)
            yield q + "w2.weight", linear(h, ffn)
            yield q + "w3.weight", linear(ffn, h)
    yield "model.norm.weight", norm()
    yield "lm_head.weight", linear(vocab_size, h)


def _check_room(directory: Path, shape: MixtralShape, *, shards: int) -> None:
    """Refuse a shape whose weights this machine cannot hold while writing them, or its disk cannot store."""
    from ..base.system import available_memory

    h, n_params = shape.hidden_size, shape.parameter_count()
    largest = max(shape.vocab_size * h, shape.intermediate_size * h, shape.num_heads * shape.head_dim * h)
    # A shard's tensors are held as bf16 until written; each is drawn in float64, then converted.
    needed_memory = -(-n_params // shards) * _BF16 + largest * (_BF16 + 2 * _FLOAT64)
    free_memory = available_memory()
    if free_memory is not None and needed_memory > free_memory:
        raise LimitError(
            f"Writing this checkpoint takes about {format_bytes(needed_memory, digits=2)} of memory, but "
            f"{format_bytes(free_memory, digits=2)} is available.",
            hint="Choose smaller sizes, or split the weights with more --shards.",
        )
    folder = next((p for p in (directory, *directory.parents) if p.exists()), Path.cwd())
    free_disk = shutil.disk_usage(folder).free
    if n_params * _BF16 > free_disk:
        raise DiskSpaceError(directory=folder, needed=n_params * _BF16, free=free_disk)


def _tensor_count(spec: TinyMixtralSpec) -> int:
    return 1 + spec.num_layers * (7 + 3 * spec.num_experts) + 2


def _write_weights(directory: Path, spec: TinyMixtralSpec, weights: Iterator[tuple[str, np.ndarray]]) -> None:
    from ..convert.safetensors import write_file

    if spec.shards <= 1:
        bf16 = {name: ("BF16", array) for name, array in weights}
        write_file(directory / "model.safetensors", bf16, metadata={"format": "pt"})
        return
    # Contiguous runs of tensors per shard, as the Hub's sharded checkpoints are laid out; only one shard's
    # tensors are in memory at a time.
    per_shard = -(-_tensor_count(spec) // spec.shards)
    weight_map: dict[str, str] = {}
    total_size = 0
    for i in range(spec.shards):
        shard = {name: ("BF16", array) for name, array in itertools.islice(weights, per_shard)}
        filename = f"model-{i + 1:05d}-of-{spec.shards:05d}.safetensors"
        write_file(directory / filename, shard, metadata={"format": "pt"})
        weight_map.update({n: filename for n in shard})
        total_size += sum(array.nbytes for _, array in shard.values())
    _write_json(
        directory / "model.safetensors.index.json", {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    )


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
