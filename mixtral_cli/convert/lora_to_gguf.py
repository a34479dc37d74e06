"""PEFT LoRA adapter -> GGUF LoRA adapter, which llama.cpp applies at run time; streamed matrix by matrix.

llama.cpp scales each pair by ``adapter.lora.alpha / rank`` (the rank of that tensor), with one alpha for
the file. PEFT's per-module alphas and ranks and rsLoRA's ``alpha / sqrt(r)`` are folded into B instead, so
every module gets exactly PEFT's factor. Experts are stacked as the model converter stacks their weights;
ranks that differ between experts are padded with zeros, which adds nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import AdapterError
from ..family.shape import MixtralShape
from ..gguf_format.quant_types import QuantType
from .hf_to_gguf import encode, permute_for_rope, storable_type, tensor_nbytes
from .peft import LoraWeight, PeftAdapter
from .safetensors import TensorRef
from .streaming import OutputTensor, ProgressCallback, write_tensors

if TYPE_CHECKING:
    import gguf
    import numpy as np

_LAYER = r"^model\.layers\.(?P<layer>\d+)\."
_ATTENTION = re.compile(_LAYER + r"self_attn\.(?P<proj>[qkvo])_proj$")
_ROUTER = re.compile(_LAYER + r"(?:block_sparse_moe|mlp)\.gate$")
_EXPERT = re.compile(_LAYER + r"block_sparse_moe\.experts\.(?P<expert>\d+)\.(?P<proj>w[123])$")
# transformers 5 fuses each layer's experts into parameters, which peft wraps one inside the other.
_FUSED_EXPERTS = re.compile(_LAYER + r"mlp\.experts(?:\.base_layer)*$")
_WHOLE_MODEL = {"model.embed_tokens": "token_embd", "lm_head": "output"}
_ATTENTION_NAMES = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output"}
# The Hub names an expert's gate, down and up projections w1, w2 and w3.
_EXPERT_NAMES = {"w1": "ffn_gate_exps", "w2": "ffn_down_exps", "w3": "ffn_up_exps"}

Matrix = Callable[[], "np.ndarray"]
"""Reads one float32 matrix when called, so that a plan holds no tensor data."""


@dataclass(frozen=True)
class PlannedLora:
    """One GGUF tensor of the adapter (a ``lora_a`` or ``lora_b``) and how to compute it, part by part."""

    name: str
    shape: tuple[int, ...]
    ggml_type: gguf.GGMLQuantizationType
    parts: Callable[[], Iterator[np.ndarray]]  # float32, outermost dimension first

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.ggml_type)


ExpertMatrices = Callable[[], Callable[[int], "np.ndarray | None"]]
"""Opens a projection's source tensors once, and gives each expert's matrix (None: that expert is not adapted)."""


@dataclass(frozen=True)
class _ExpertStack:
    """One projection's LoRAs over a layer's experts."""

    a: ExpertMatrices  # expert e's A: (r_e, in)
    b: ExpertMatrices  # expert e's B: (out, r_e)
    scalings: dict[int, tuple[int, float]]  # expert -> its rank and peft's scaling


@dataclass(frozen=True)
class AdapterPlan:
    adapter: PeftAdapter
    base: MixtralShape
    out_type: QuantType
    tensors: list[PlannedLora]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)


def plan_adapter(adapter: PeftAdapter, base: MixtralShape, out_type: QuantType) -> AdapterPlan:
    """Every tensor of the GGUF adapter, named as llama.cpp names the weights they adapt."""
    planner = _Planner(adapter, base, out_type)
    experts: dict[tuple[int, str], dict[int, LoraWeight]] = {}
    for module, weight in sorted(adapter.weights.items()):
        if match := _ATTENTION.match(module):
            planner.attention(weight, match["layer"], match["proj"])
        elif match := _ROUTER.match(module):
            layer = planner.layer(match["layer"], module)
            planner.linear(weight, f"blk.{layer}.ffn_gate_inp", (base.hidden_size, base.num_experts))
        elif match := _EXPERT.match(module):
            layer, expert = planner.layer(match["layer"], module), int(match["expert"])
            if expert >= base.num_experts:
                raise planner.foreign(f"{module} adapts expert {expert} of a model with {base.num_experts}")
            planner.check(weight, *planner.expert_features(_EXPERT_NAMES[match["proj"]]))
            experts.setdefault((layer, match["proj"]), {})[expert] = weight
        elif match := _FUSED_EXPERTS.match(module):
            planner.fused_experts(weight, planner.layer(match["layer"], module))
        elif module in _WHOLE_MODEL:
            planner.whole_model(weight, _WHOLE_MODEL[module])
        else:
            raise AdapterError(
                f"{adapter.path} adapts {module}, which is no Mixtral weight llama.cpp can apply a LoRA to.",
                path=adapter.path,
            )
    for (layer, proj), by_expert in sorted(experts.items()):
        planner.experts(f"blk.{layer}.{_EXPERT_NAMES[proj]}", planner.expert_stack(by_expert))
    return AdapterPlan(adapter, base, out_type, planner.planned)


class _Planner:
    def __init__(self, adapter: PeftAdapter, base: MixtralShape, out_type: QuantType) -> None:
        self.adapter, self.base, self.out_type = adapter, base, out_type
        self.planned: list[PlannedLora] = []

    def foreign(self, what: str) -> AdapterError:
        return AdapterError(
            f"{self.adapter.path} was trained on another model: {what}.",
            path=self.adapter.path,
            hint="Use the adapter with the model it was trained on.",
        )

    def layer(self, text: str, module: str) -> int:
        layer = int(text)
        if layer >= self.base.num_layers:
            raise self.foreign(f"{module} lies past the base model's {self.base.num_layers} layers")
        return layer

    def check(self, weight: LoraWeight, in_features: int, out_features: int) -> None:
        actual = (weight.a.shape[1], weight.b.shape[0])
        if actual != (in_features, out_features):
            raise self.foreign(
                f"{weight.module} maps {actual[0]} to {actual[1]} features where the base model's weight maps "
                f"{in_features} to {out_features}"
            )

    def llama_scale(self, rank: int) -> float:
        """The factor llama.cpp puts on B @ A of a tensor of ``rank``."""
        alpha = self.adapter.lora_alpha
        return alpha / rank if alpha else 1.0

    def add(self, name: str, shape: tuple[int, ...], parts: Callable[[], Iterator[np.ndarray]]) -> None:
        import gguf

        # As the model converter keeps the router in F32: a rounded router LoRA flips which experts run.
        router = ".ffn_gate_inp." in name
        ggml_type = gguf.GGMLQuantizationType.F32 if router else storable_type(shape, self.out_type)
        self.planned.append(PlannedLora(name, shape, ggml_type, parts))

    def pair(self, name: str, a_shape: tuple[int, ...], a: Matrix, b_shape: tuple[int, ...], b: Matrix) -> None:
        self.add(f"{name}.weight.lora_a", a_shape, lambda: iter([a()]))
        self.add(f"{name}.weight.lora_b", b_shape, lambda: iter([b()]))

    def linear(self, weight: LoraWeight, name: str, features: tuple[int, int], *, rope_heads: int = 0) -> None:
        self.check(weight, *features)
        rank = weight.a.shape[0]
        factor = self.adapter.scaling(weight.module, rank) / self.llama_scale(rank)

        def b() -> np.ndarray:
            matrix = weight.b.read_f32() * factor
            return permute_for_rope(matrix, rope_heads) if rope_heads else matrix

        self.pair(name, weight.a.shape, weight.a.read_f32, weight.b.shape, b)

    def attention(self, weight: LoraWeight, layer_text: str, proj: str) -> None:
        base = self.base
        layer = self.layer(layer_text, weight.module)
        q_size, kv_size = base.num_heads * base.head_dim, base.num_kv_heads * base.head_dim
        features = {
            "q": (base.hidden_size, q_size),
            "k": (base.hidden_size, kv_size),
            "v": (base.hidden_size, kv_size),
            "o": (q_size, base.hidden_size),
        }[proj]
        # The converter permutes Q and K rows for llama.cpp's rope; B's rows are the same rows.
        rope_heads = {"q": base.num_heads, "k": base.num_kv_heads}.get(proj, 0)
        self.linear(weight, f"blk.{layer}.{_ATTENTION_NAMES[proj]}", features, rope_heads=rope_heads)

    def whole_model(self, weight: LoraWeight, name: str) -> None:
        vocab, hidden = self.base.vocab_size, self.base.hidden_size
        if name == "output":
            self.linear(weight, name, (hidden, vocab or weight.b.shape[0]))
            return
        # peft's embedding LoRA: A is (r, vocab), B (hidden, r); llama.cpp looks rows up in lora_a: (vocab, r).
        if weight.b.shape[0] != hidden or (vocab and weight.a.shape[1] != vocab):
            raise self.foreign(f"{weight.module} has {weight.a.shape[1]} rows of {weight.b.shape[0]} features")
        rank = weight.a.shape[0]
        factor = self.adapter.scaling(weight.module, rank) / self.llama_scale(rank)
        self.pair(
            name,
            (weight.a.shape[1], rank),
            lambda: weight.a.read_f32().T,
            weight.b.shape,
            lambda: weight.b.read_f32() * factor,
        )

    def expert_stack(self, by_expert: dict[int, LoraWeight]) -> _ExpertStack:
        """Per-expert LoRAs, as peft saves them for transformers 4's one module per expert."""
        return _ExpertStack(
            a=lambda: lambda e: by_expert[e].a.read_f32() if e in by_expert else None,
            b=lambda: lambda e: by_expert[e].b.read_f32() if e in by_expert else None,
            scalings={e: (w.a.shape[0], self.adapter.scaling(w.module, w.a.shape[0])) for e, w in by_expert.items()},
        )

    def fused_experts(self, weight: LoraWeight, layer: int) -> None:
        """peft's LoRA of a fused expert parameter: A is (r * experts, in), B (out, r * experts), expert-minor."""
        base = self.base
        n_experts, hidden, ffn = base.num_experts, base.hidden_size, base.intermediate_size
        stacked_rank, in_features = weight.a.shape
        out_features = weight.b.shape[0]
        if stacked_rank % n_experts:
            raise self.foreign(f"{weight.module} has a rank of {stacked_rank} for {n_experts} experts")
        rank = stacked_rank // n_experts
        owner = weight.module.split(".base_layer")[0]

        def stack(parameter: str, rows: slice) -> _ExpertStack:
            scaling = self.adapter.scaling(f"{owner}.{parameter}", rank)
            return _ExpertStack(
                a=partial(_fused_a, weight.a, n_experts),
                b=partial(_fused_b, weight.b, n_experts, rows),
                scalings=dict.fromkeys(range(n_experts), (rank, scaling)),
            )

        # Which parameter a wrapper adapts shows in its shape: gate_up_proj maps hidden to 2 * ffn, down_proj back.
        if (in_features, out_features) == (hidden, 2 * ffn):
            self.experts(f"blk.{layer}.ffn_gate_exps", stack("gate_up_proj", slice(0, ffn)))
            self.experts(f"blk.{layer}.ffn_up_exps", stack("gate_up_proj", slice(ffn, 2 * ffn)))
        elif (in_features, out_features) == (ffn, hidden):
            self.experts(f"blk.{layer}.ffn_down_exps", stack("down_proj", slice(None)))
        else:
            raise self.foreign(
                f"{weight.module} maps {in_features} to {out_features} features, neither an expert's "
                f"gate and up ({hidden} to {2 * ffn}) nor its down projection ({ffn} to {hidden})"
            )

    def expert_features(self, name: str) -> tuple[int, int]:
        hidden, ffn = self.base.hidden_size, self.base.intermediate_size
        return (ffn, hidden) if name.endswith("ffn_down_exps") else (hidden, ffn)

    def experts(self, name: str, stack: _ExpertStack) -> None:
        """Stack one projection's LoRAs over every expert: (experts, rank, in) and (experts, out, rank)."""
        import numpy as np

        base = self.base
        rank = max(r for r, _ in stack.scalings.values())
        in_features, out_features = self.expert_features(name)
        factors = {e: scaling / self.llama_scale(rank) for e, (_, scaling) in stack.scalings.items()}

        def a_parts() -> Iterator[np.ndarray]:
            a_of = stack.a()
            for e in range(base.num_experts):
                padded, a = np.zeros((rank, in_features), dtype=np.float32), a_of(e)
                if a is not None:
                    padded[: a.shape[0]] = a
                yield padded

        def b_parts() -> Iterator[np.ndarray]:
            b_of = stack.b()
            for e in range(base.num_experts):
                padded, b = np.zeros((out_features, rank), dtype=np.float32), b_of(e)
                if b is not None:
                    padded[:, : b.shape[1]] = b * factors[e]
                yield padded

        self.add(f"{name}.weight.lora_a", (base.num_experts, rank, in_features), a_parts)
        self.add(f"{name}.weight.lora_b", (base.num_experts, out_features, rank), b_parts)


def _fused_a(a: TensorRef, n_experts: int) -> Callable[[int], np.ndarray]:
    stacked = a.read_f32()
    by_expert = stacked.reshape(n_experts, -1, stacked.shape[1])
    return lambda e: by_expert[e]


def _fused_b(b: TensorRef, n_experts: int, rows: slice) -> Callable[[int], np.ndarray]:
    stacked = b.read_f32()
    by_expert = stacked.reshape(stacked.shape[0], -1, n_experts)[rows]
    return lambda e: by_expert[:, :, e]


def write_adapter_gguf(
    plan: AdapterPlan, output: Path, *, name: str, on_progress: ProgressCallback | None = None
) -> None:
    """Write the planned adapter as a GGUF LoRA adapter to ``output``; ``on_progress`` gets bytes written.

    Memory stays bounded by one source tensor: stacked experts are written one expert at a time.
    """
    import gguf

    adapter, base, planned = plan.adapter, plan.base, plan.tensors
    writer = gguf.GGUFWriter(output, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter.lora_alpha)
    writer.add_name(name)
    if adapter.base_model:
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, adapter.base_model)
    # The base's shape, which the engine checks against a model before applying the adapter to it.
    writer.add_embedding_length(base.hidden_size)
    writer.add_block_count(base.num_layers)
    writer.add_head_count(base.num_heads)
    writer.add_head_count_kv(base.num_kv_heads)
    writer.add_expert_count(base.num_experts)
    writer.add_feed_forward_length(base.intermediate_size)
    writer.add_file_type(plan.out_type.file_type)
    write_tensors(
        writer,
        [
            OutputTensor(t.name, t.shape, t.nbytes, t.ggml_type, partial(_encoded_parts, t, on_progress))
            for t in planned
        ],
    )


def _encoded_parts(tensor: PlannedLora, on_progress: ProgressCallback | None) -> Iterator[np.ndarray]:
    for part in tensor.parts():
        yield encode(part, "F32", tensor.ggml_type)
    if on_progress:
        on_progress(tensor.nbytes)
