"""LoRA adapters: checked against a model's header before it loads, then applied to its context by llama.cpp.

llama.cpp's own check runs only once the model's weights are loaded, and says "wrong base model?" in its log;
the one here reads two headers and names what differs.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import AdapterError, GGUFError, LlamaCppError
from ..gguf_format.header import GGUFInfo, read_header
from .options import LoraSpec

# The base model's shape as a converted adapter records it, and how to say each in a sentence.
_SHAPE_KEYS = {
    "embedding_length": "hidden size",
    "block_count": "layers",
    "attention.head_count": "attention heads",
    "attention.head_count_kv": "KV heads",
    "expert_count": "experts",
    "feed_forward_length": "expert FFN size",
}
_HALVES = (".lora_a", ".lora_b")
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class AdapterInfo:
    """What `/show` and `--json` say of an applied adapter."""

    path: Path
    scale: float
    name: str
    base_model: str | None


def check_adapter(spec: LoraSpec, model: GGUFInfo) -> AdapterInfo:
    """Refuse, in one line, an adapter that is not a LoRA or was made for another model than ``model``."""
    path = spec.path
    if path.is_dir():
        raise AdapterError(
            f"{path} is a folder, not a GGUF adapter.", path=path, hint=f"Convert it first: mixtral quantize {path}"
        )
    try:
        header = read_header(path)
    except GGUFError as exc:
        raise AdapterError(exc.message, path=path, hint=exc.hint or "Give a GGUF LoRA adapter.") from exc
    meta = header.metadata
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise AdapterError(
            f"{path} is not a LoRA adapter (GGUF type {meta.get('general.type') or 'model'}).",
            path=path,
            hint="Give a GGUF LoRA adapter, made by `mixtral quantize ADAPTER_FOLDER`.",
        )
    if meta.get("general.architecture") != model.architecture:
        raise _mismatch(path, model, f"it adapts a {meta.get('general.architecture')} model, not {model.architecture}")
    arch = model.architecture
    for key, what in _SHAPE_KEYS.items():
        theirs, ours = meta.get(f"{arch}.{key}"), model.metadata.get(f"{arch}.{key}")
        if theirs is not None and ours is not None and theirs != ours:
            raise _mismatch(path, model, f"it was made for {theirs} {what}, the model has {ours}")
    _check_tensors(path, model, {name: dims for name, dims, _ in header.tensors})
    return AdapterInfo(
        path=path,
        scale=spec.scale,
        name=str(meta.get("general.name") or path.stem),
        base_model=str(meta["general.base_model.0.name"]) if "general.base_model.0.name" in meta else None,
    )


def _check_tensors(path: Path, model: GGUFInfo, tensors: dict[str, tuple[int, ...]]) -> None:
    weights, complete = _model_tensors(model)
    for name, dims in sorted(tensors.items()):
        if name.endswith("_norm.weight"):
            continue  # norms that mergekit adds; llama.cpp skips them
        if not name.endswith(_HALVES):
            raise AdapterError(f"{path} holds {name}, which is no LoRA tensor.", path=path)
        target = name[: -len(".lora_a")]
        other = target + (".lora_b" if name.endswith(".lora_a") else ".lora_a")
        if other not in tensors:
            raise AdapterError(f"{path} has {name} without {other}.", path=path, hint="Convert the adapter again.")
        if target not in weights:
            if complete:
                raise _mismatch(path, model, f"it adapts {target}, which the model does not have")
            continue
        if name.endswith(".lora_a") and not _fits(weights[target], dims, tensors[other], target):
            raise _mismatch(path, model, f"its LoRA of {target} does not fit that weight's shape {weights[target]}")


def _model_tensors(model: GGUFInfo) -> tuple[dict[str, tuple[int, ...]], bool]:
    """The model's tensors, the other shards' of a split model too; and whether that is all of them."""
    weights = dict(model.tensor_dims)
    count = model.metadata.get("split.count")
    if not isinstance(count, int) or count <= 1:
        return weights, True
    match = _SHARD.match(model.path.name)
    if match is None:
        return weights, False
    for number in range(1, count + 1):
        shard = model.path.with_name(f"{match['stem']}-{number:05d}-of-{count:05d}.gguf")
        if shard == model.path:
            continue
        try:
            weights.update({name: dims for name, dims, _ in read_header(shard).tensors})
        except GGUFError:
            return weights, False  # llama.cpp's load names the missing shard
    return weights, True


def _fits(weight: tuple[int, ...], a: tuple[int, ...], b: tuple[int, ...], target: str) -> bool:
    """llama.cpp's rule (dims innermost first): A takes the weight's inputs, B gives its outputs, ranks agree."""
    if len(a) != len(weight) or len(b) != len(weight) or a[2:] != weight[2:] or b[2:] != weight[2:]:
        return False
    if target == "token_embd.weight":  # looked up by row: A is (vocab, r), B (hidden, r)
        return weight[0] == b[1] and weight[1] == a[1] and a[0] == b[0]
    return weight[0] == a[0] and weight[1] == b[1] and a[1] == b[0]


def _mismatch(path: Path, model: GGUFInfo, what: str) -> AdapterError:
    return AdapterError(
        f"{path.name} does not fit {model.path.name}: {what}.",
        path=path,
        hint="Use the adapter with the model it was trained on.",
    )


class LoadedAdapters:
    """The adapters loaded on one llama.cpp model, and which of them, at what scale, its context applies."""

    def __init__(self, model, *, last_error: Callable[[], str]) -> None:  # noqa: ANN001 - a llama_model_p
        self._model = model
        self._last_error = last_error
        self._loaded: dict[Path, object] = {}

    def apply(self, ctx, specs: Sequence[LoraSpec]) -> None:  # noqa: ANN001 - a llama_context_p
        """Apply exactly ``specs`` to ``ctx`` (none: the plain model), loading new ones and freeing the rest."""
        import llama_cpp

        for spec in specs:
            if spec.path not in self._loaded:
                adapter = llama_cpp.llama_adapter_lora_init(self._model, str(spec.path).encode())
                if not adapter:
                    raise AdapterError(
                        f"llama.cpp could not load the adapter {spec.path}{self._last_error()}.",
                        path=spec.path,
                        hint="Convert the adapter again with `mixtral quantize`.",
                    )
                self._loaded[spec.path] = adapter
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * len(specs))(*(self._loaded[s.path] for s in specs))
        scales = (ctypes.c_float * len(specs))(*(s.scale for s in specs))
        if llama_cpp.llama_set_adapters_lora(ctx, adapters, len(specs), scales) != 0:
            raise LlamaCppError(f"llama.cpp could not apply the LoRA adapters{self._last_error()}.")
        kept = {s.path for s in specs}
        for path in [p for p in self._loaded if p not in kept]:
            llama_cpp.llama_adapter_lora_free(self._loaded.pop(path))
