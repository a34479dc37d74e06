"""The hyperparameters of a Mixtral GGUF that llama.cpp relies on, checked before it loads them.

llama.cpp reads a key of the wrong type as a load error, but many ranges only in ``GGML_ASSERT``s, which
abort the process (a layer count past its maximum, more experts used than there are), or in divisions that
fault (no KV heads). Each key here is checked for its type and range, and the keys against each other, so
a file that lies is refused in one line naming the key.
"""

from __future__ import annotations

from ..base.bounds import FLOAT32_MAX, INT32_MAX, Bound, number_text

_STRING = 8  # the GGUF value type of strings, as the header reader numbers them

_ANY_COUNT = Bound(1, INT32_MAX)
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS in llama.cpp's llama-hparams.h
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
# (key after "llama.", required, bound)
_COUNTS = (
    ("context_length", True, _ANY_COUNT),
    ("embedding_length", True, _ANY_COUNT),
    ("block_count", True, Bound(1, MAX_LAYERS, f"llama.cpp's most layers ({MAX_LAYERS})")),
    ("feed_forward_length", False, _ANY_COUNT),
    ("attention.head_count", True, _ANY_COUNT),
    ("attention.head_count_kv", False, _ANY_COUNT),
    ("attention.key_length", False, _ANY_COUNT),
    ("attention.value_length", False, _ANY_COUNT),
    ("rope.dimension_count", False, _ANY_COUNT),
    ("expert_count", True, Bound(1, MAX_EXPERTS, f"llama.cpp's most experts ({MAX_EXPERTS})")),
    ("expert_used_count", True, _ANY_COUNT),
    ("vocab_size", False, _ANY_COUNT),
)
_POSITIVE = Bound(0, FLOAT32_MAX, "the largest 32-bit float", above_least=True)
_REALS = (
    ("rope.freq_base", False, _POSITIVE),
    ("attention.layer_norm_rms_epsilon", False, _POSITIVE),
    ("rope.scaling.factor", False, Bound(0, FLOAT32_MAX, "the largest 32-bit float")),
)
_ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # llama_rope_scaling_type_from_string
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id")


class HyperparameterError(ValueError):
    """A key of the wrong type or out of range; the message names it."""


def check_hyperparameters(metadata: dict[str, object], array_types: dict[str, int]) -> None:
    """Raise HyperparameterError for the first key of a llama-architecture Mixtral llama.cpp would fail on."""
    # llama.cpp takes some of these per layer, as arrays; a Mixtral has one value for all layers.
    for key in (f"llama.{name}" for name, _, _ in (*_COUNTS, *_REALS)):
        if key in array_types:
            raise HyperparameterError(f"{key} is a list, not one number")
    counts = {name: _count(metadata, f"llama.{name}", required, bound) for name, required, bound in _COUNTS}
    _count(metadata, "general.file_type", False, Bound(0, INT32_MAX))
    for name, required, bound in _REALS:
        _real(metadata, f"llama.{name}", required, bound)
    heads, kv_heads = (
        counts["attention.head_count"],
        counts["attention.head_count_kv"] or counts["attention.head_count"],
    )
    _relation(
        counts["expert_used_count"] <= counts["expert_count"],
        "llama.expert_used_count",
        counts,
        "is more than llama.expert_count",
    )
    _relation(
        counts["embedding_length"] % heads == 0,
        "llama.attention.head_count",
        counts,
        "does not divide llama.embedding_length",
    )
    _relation(
        heads % kv_heads == 0, "llama.attention.head_count_kv", counts, "does not divide llama.attention.head_count"
    )
    head_dim = counts["embedding_length"] // heads
    rope_dims = counts["rope.dimension_count"] or counts["attention.key_length"] or head_dim
    _relation(
        rope_dims % 2 == 0,
        "llama.rope.dimension_count",
        {"rope.dimension_count": rope_dims},
        "is odd, and RoPE rotates pairs",
    )
    scaling = metadata.get("llama.rope.scaling.type")
    if scaling is not None and ("llama.rope.scaling.type" in array_types or scaling not in _ROPE_SCALING_TYPES):
        raise HyperparameterError(
            f"llama.rope.scaling.type is {scaling!r}, not one of {', '.join(_ROPE_SCALING_TYPES)}"
        )
    _check_vocabulary(metadata, array_types, vocab_size=counts["vocab_size"])


def _check_vocabulary(metadata: dict[str, object], array_types: dict[str, int], *, vocab_size: int) -> None:
    n_tokens = metadata.get("tokenizer.ggml.tokens")
    if array_types.get("tokenizer.ggml.tokens") != _STRING or not n_tokens:
        raise HyperparameterError("tokenizer.ggml.tokens is missing or not a list of strings")
    if vocab_size and vocab_size != n_tokens:
        raise HyperparameterError(f"llama.vocab_size is {vocab_size} but tokenizer.ggml.tokens holds {n_tokens}")
    for name in ("scores", "token_type"):
        key = f"tokenizer.ggml.{name}"
        if key in metadata and (key not in array_types or metadata[key] != n_tokens):
            raise HyperparameterError(f"{key} does not hold one entry per token ({n_tokens})")
    for name in _TOKEN_IDS:
        key = f"tokenizer.ggml.{name}"
        if key in array_types:
            raise HyperparameterError(f"{key} is a list, not one number")
        if key in metadata:
            _count(metadata, key, False, Bound(0, n_tokens - 1, f"the last of the {n_tokens} tokens"))  # type: ignore[operator]


def _count(metadata: dict[str, object], key: str, required: bool, bound: Bound) -> int:
    value = metadata.get(key)
    if value is None:
        if required:
            raise HyperparameterError(f"{key} is missing")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise HyperparameterError(f"{key} is {value!r}, not a whole number")
    problem = bound.problem(value)
    if problem is not None:
        raise HyperparameterError(f"{key} {number_text(value)} {problem}")
    return value


def _real(metadata: dict[str, object], key: str, required: bool, bound: Bound) -> None:
    value = metadata.get(key)
    if value is None:
        if required:
            raise HyperparameterError(f"{key} is missing")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HyperparameterError(f"{key} is {value!r}, not a number")
    problem = bound.problem(value)
    if problem is not None:
        raise HyperparameterError(f"{key} {number_text(value)} {problem}")


def _relation(holds: bool, key: str, counts: dict[str, int], problem: str) -> None:
    if not holds:
        raise HyperparameterError(f"{key} ({counts[key.removeprefix('llama.')]}) {problem}")
