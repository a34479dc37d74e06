"""What a command can ask of the engine: how to load the model, and how to sample from it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..base.bounds import FLOAT32_MAX, IN_A_FLOAT, INT32_MAX, UINT32_MAX, Bound, thread_bound


@dataclass(frozen=True)
class LoraSpec:
    """A GGUF LoRA adapter to apply, and how strongly: 1 as trained, 0 not at all."""

    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``FILE`` or ``FILE:SCALE``; a colon not followed by a number is part of the file's name."""
        path, _, scale = text.rpartition(":")
        try:
            return cls(Path(path).expanduser(), float(scale)) if path else cls(Path(text).expanduser())
        except ValueError:
            return cls(Path(text).expanduser())

    def __str__(self) -> str:
        return f"{self.path}:{self.scale:g}"


DEFAULT_GPU_MARGIN = 512 * 2**20
# Requests `serve` and `batch` answer at once unless told (--parallel): llama-server's default slots.
DEFAULT_PARALLEL = 4

# KV cache types: ggml_type id, and bytes per value (a q8_0 block holds 32 values in 34 bytes, q4_0 in 18).
KV_CACHE_TYPES = {"f16": (1, 2.0), "q8_0": (8, 34 / 32), "q4_0": (2, 18 / 32)}


def kv_bytes_per_token(*, n_layer: int, n_embd_kv: int, type_k: str, type_v: str) -> int:
    """What each token of context costs in the KV cache, over all layers (``n_embd_kv``: KV heads x head size)."""
    return int(n_layer * n_embd_kv * (KV_CACHE_TYPES[type_k][1] + KV_CACHE_TYPES[type_v][1]))


@dataclass(frozen=True)
class EngineOptions:
    """Loading and placement; shared by every command that runs a model."""

    ctx_size: int | None = None  # None: the model's own context length, capped to what memory allows
    batch_size: int = 512
    threads: int | None = None  # None: the physical cores
    n_gpu_layers: int | None = None  # None: all layers when a GPU backend exists
    cpu_moe: bool = False  # keep every expert tensor in host memory
    n_cpu_moe: int = 0  # keep the experts of the first N layers in host memory
    flash_attn: bool = True
    # CPU weight layout: True repacks quantized weights at load (llama.cpp's default, faster decode), False
    # keeps the file's layout (faster prompt processing), None decides by the work and measured rates.
    repack: bool | None = True
    verbose: bool = False  # show llama.cpp's own log
    rpc: tuple[str, ...] = ()  # workers' HOST:PORT endpoints, whose devices take layers too
    tensor_split: tuple[float, ...] | None = None  # each offload device's share of the layers; None: by free memory
    loras: tuple[LoraSpec, ...] = ()  # applied in this order, each at its scale
    sequences: int = 1  # KV cache sequences of ctx_size tokens each in the context: conversations served at once
    gpu_margin: int = DEFAULT_GPU_MARGIN  # bytes left free on each local GPU for the driver and other programs
    cache_type_k: str = "f16"  # KV cache types, as llama.cpp's -ctk/-ctv: see KV_CACHE_TYPES
    cache_type_v: str = "f16"

    @property
    def places_explicitly(self) -> bool:
        """Whether the user chose the placement; otherwise the engine fits the model to the GPUs."""
        return self.n_gpu_layers is not None or self.cpu_moe or self.n_cpu_moe > 0 or self.tensor_split is not None


# The model card's widget samples at temperature 0.5; the rest are llama.cpp's defaults.
DEFAULT_TEMPERATURE = 0.5
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
DEFAULT_REPEAT_PENALTY = 1.0
DEFAULT_MAX_TOKENS = 512


_PER_ANSWER = {"per_answer": True}


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = DEFAULT_TEMPERATURE  # 0: greedy
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    min_p: float = DEFAULT_MIN_P
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    seed: int | None = None  # None: a new seed each run
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = field(default=())
    grammar: str | None = None  # GBNF (root rule "root"): every token must keep the answer inside it
    # OpenAI's penalties, as llama.cpp applies them over the last 64 tokens: minus frequency x count, minus
    # presence once a token occurs; 0: none.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # An OpenAI request's own: a saved chat or `complete --server` has no option for them, so never carries them.
    logit_bias: tuple[tuple[int, float], ...] = field(default=(), metadata=_PER_ANSWER)  # (token id, bias) pairs
    # Log-probabilities to report per generated token: None none, 0 the chosen token's, k also the k likeliest;
    # ``prompt_logprobs``: the prompt's tokens' too (OpenAI's echo).
    logprobs: int | None = field(default=None, metadata=_PER_ANSWER)
    prompt_logprobs: bool = field(default=False, metadata=_PER_ANSWER)
    # The answer's own token rules (a tool call's), decided per answer: not settings, never saved or sent.
    # The grammar waits for this token: what comes before it is free, the token and what follows are inside it.
    grammar_trigger: int | None = field(default=None, metadata=_PER_ANSWER)
    banned_tokens: tuple[int, ...] = field(default=(), metadata=_PER_ANSWER)  # never sampled
    # Control tokens the generation reports by id, in their place among its text (a ControlToken chunk).
    reported_tokens: tuple[int, ...] = field(default=(), metadata=_PER_ANSWER)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def penalized(self) -> bool:
        return self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0

    def settings(self) -> dict[str, object]:
        """The settings as JSON values, as a saved chat and `complete --server` carry them."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("per_answer")}
        return {**values, "stop": list(self.stop)}


# What each numeric option can mean; the CLI, request files and chat's /set check values against these.
OPTION_BOUNDS: dict[str, Bound] = {
    "temperature": Bound(0, FLOAT32_MAX, IN_A_FLOAT),
    "top_p": Bound(0, 1, "a share of the probability"),
    "top_k": Bound(0, INT32_MAX),
    "min_p": Bound(0, 1, "a share of the top token's probability"),
    "repeat_penalty": Bound(0, FLOAT32_MAX, IN_A_FLOAT),
    "frequency_penalty": Bound(-2, 2, "OpenAI's range"),
    "presence_penalty": Bound(-2, 2, "OpenAI's range"),
    "logit_bias": Bound(-100, 100, "OpenAI's range"),  # each bias
    "top_logprobs": Bound(0, 20, "OpenAI's range"),
    "max_tokens": Bound(1, INT32_MAX),
    "seed": Bound(0, UINT32_MAX - 1, f"as llama.cpp takes {UINT32_MAX} to mean a random seed"),
    "ctx_size": Bound(16, INT32_MAX),
    "batch_size": Bound(1, INT32_MAX),
    "threads": thread_bound(),
    "n_gpu_layers": Bound(-1, INT32_MAX, least_is="which means all layers"),
    "n_cpu_moe": Bound(0, INT32_MAX),
    "tensor_split": Bound(0, FLOAT32_MAX, IN_A_FLOAT),  # each share
    "gpu_margin": Bound(0, INT32_MAX),  # MiB
    "lora_scale": Bound(-FLOAT32_MAX, FLOAT32_MAX, IN_A_FLOAT),  # llama.cpp's float; negative subtracts
}
