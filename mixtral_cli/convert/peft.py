"""A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), read without torch or peft.

What a LoRA adds to a weight W is ``scaling * B @ A``, ``scaling = alpha / r`` (``alpha / sqrt(r)`` with
rsLoRA), where ``r`` and ``alpha`` may differ per module through ``rank_pattern`` and ``alpha_pattern``.
Whatever else PEFT can save (DoRA, trained biases, fully trained modules, ...) is refused here, by name.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import AdapterError, CheckpointError
from ..family.catalog import catalog_model_of_repo
from ..family.shape import MixtralShape
from .checkpoint import MIXTRAL_ARCHITECTURE, MixtralHParams, read_json
from .safetensors import SafetensorsFormatError, TensorRef, read_index

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_SAVED_PREFIX = "base_model.model."
_LORA_TENSOR = re.compile(r"^(?P<module>.+)\.(?:lora_(?P<linear>[AB])\.weight|lora_embedding_(?P<embedding>[AB]))$")

# Options that make an adapter compute more than scaling * B @ A, by the names users know them by.
_VARIANTS = {
    "use_dora": "DoRA",
    "lora_bias": "LoRA biases (lora_bias)",
    "use_qalora": "QA-LoRA",
    "use_bdlora": "BD-LoRA",
    "velora_config": "VeLoRA",
    "kasa_config": "KaSA",
    "monteclora_config": "MonteCLoRA",
    "layer_replication": "layer replication",
    "modules_to_save": "fully trained modules (modules_to_save)",
    "trainable_token_indices": "trained token embeddings (trainable_token_indices)",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "fan_in_fan_out": "fan_in_fan_out",
}
# Initialisations that rewrite the base weights too, so that the adapter alone no longer is the fine-tune.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


def is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class LoraWeight:
    """The A and B of one adapted module, as PEFT saved them."""

    module: str  # as PEFT names it, without its wrapper's prefix: model.layers.0.self_attn.q_proj
    a: TensorRef  # (r, in); an embedding's (r, vocab); a fused expert stack's (r * experts, in)
    b: TensorRef  # (out, r); an embedding's (hidden, r); a fused expert stack's (out, r * experts)


@dataclass(frozen=True)
class PeftAdapter:
    path: Path
    base_model: str | None  # base_model_name_or_path: a Hub repo id or the folder it was trained from
    lora_alpha: float
    rslora: bool
    alpha_pattern: dict[str, float]
    weights: dict[str, LoraWeight]

    @property
    def nbytes(self) -> int:
        return sum(w.a.nbytes + w.b.nbytes for w in self.weights.values())

    @property
    def n_params(self) -> int:
        return sum(math.prod(w.a.shape) + math.prod(w.b.shape) for w in self.weights.values())

    def scaling(self, key: str, rank: int) -> float:
        """PEFT's factor on ``B @ A`` for the weight named ``key`` (its alpha by ``alpha_pattern``) at ``rank``."""
        alpha = self.lora_alpha
        for pattern, value in self.alpha_pattern.items():
            # As peft's get_pattern_key matches: the pattern is the key's tail, after a dot.
            if re.match(rf"(.*\.)?({pattern})$", key):
                alpha = float(value)
                break
        return alpha / math.sqrt(rank) if self.rslora else alpha / rank


def read_adapter_config(path: Path) -> dict:
    """An adapter folder's adapter_config.json; what is not a plain LoRA is refused, naming the variant."""
    try:
        config = read_json(path / ADAPTER_CONFIG, path)
    except CheckpointError as exc:
        raise AdapterError(exc.message, path=path, hint=exc.hint) from exc
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterError(f"{path} holds a {peft_type} adapter; mixtral converts LoRA adapters only.", path=path)
    _refuse_variants(config, path)
    return config


def open_adapter(path: Path) -> PeftAdapter:
    """Read an adapter folder: its config (refused unless a plain LoRA) and where its matrices lie."""
    config = read_adapter_config(path)
    try:
        alpha = float(config.get("lora_alpha", 8))
        alpha_pattern = {str(k): float(v) for k, v in (config.get("alpha_pattern") or {}).items()}
        for pattern in alpha_pattern:
            re.compile(pattern)
    except (TypeError, ValueError, AttributeError, re.error) as exc:
        raise AdapterError(f"{path / ADAPTER_CONFIG} garbles lora_alpha or alpha_pattern.", path=path) from exc
    base = config.get("base_model_name_or_path")
    return PeftAdapter(
        path=path,
        base_model=str(base) if base else None,
        lora_alpha=alpha,
        rslora=bool(config.get("use_rslora")),
        alpha_pattern=alpha_pattern,
        weights=_lora_weights(path),
    )


def _refuse_variants(config: dict, path: Path) -> None:
    used = [name for key, name in _VARIANTS.items() if config.get(key)]
    if config.get("bias", "none") != "none":
        used.append(f"trained biases (bias={config['bias']})")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        used.append(f"{init} initialisation, which changes the base weights too")
    if used:
        raise AdapterError(
            f"{path} uses {', '.join(used)}, which llama.cpp cannot apply at run time.",
            path=path,
            hint="Merge the adapter into the model with peft (merge_and_unload) and convert the merged checkpoint.",
        )


def _lora_weights(path: Path) -> dict[str, LoraWeight]:
    file = path / ADAPTER_WEIGHTS
    if not file.is_file():
        other = "adapter_model.bin" if (path / "adapter_model.bin").exists() else None
        raise AdapterError(
            f"{path} has no {ADAPTER_WEIGHTS}" + (f", only {other} (a pickle)." if other else "."),
            path=path,
            hint="Save the adapter with safetensors (peft's save_pretrained does by default).",
        )
    try:
        tensors = read_index(file)
    except SafetensorsFormatError as exc:
        raise AdapterError(f"{exc}.", path=path, hint="Download or save the adapter again.") from exc
    halves: dict[str, dict[str, TensorRef]] = {}
    for name, ref in tensors.items():
        match = _LORA_TENSOR.match(name.removeprefix(_SAVED_PREFIX))
        if not match or len(ref.shape) != 2:
            raise AdapterError(f"{file} holds {name}, which is no LoRA A or B matrix.", path=path, hint=_NOT_LORA_HINT)
        halves.setdefault(match["module"], {})[match["linear"] or match["embedding"]] = ref
    if not halves:
        raise AdapterError(f"{file} holds no LoRA matrices.", path=path)
    weights = {}
    for module, pair in halves.items():
        if set(pair) != {"A", "B"} or pair["A"].shape[0] != pair["B"].shape[1]:
            raise AdapterError(f"{file} has no matching A and B for {module}.", path=path, hint=_NOT_LORA_HINT)
        weights[module] = LoraWeight(module, pair["A"], pair["B"])
    return weights


_NOT_LORA_HINT = "The file is corrupt or was not written by peft's LoRA: save the adapter again."


def base_shape(adapter: PeftAdapter) -> MixtralShape:
    """The shape of the model the adapter was trained on: where each matrix's rows and columns lie.

    From a config.json in the adapter's folder, else from the folder it names as its base, else from the
    catalog when it names an official Mixtral.
    """
    for folder in (adapter.path, Path(adapter.base_model).expanduser() if adapter.base_model else None):
        if folder is not None and (folder / "config.json").is_file():
            return _mixtral_hparams(folder, adapter).shape
    known = catalog_model_of_repo(adapter.base_model) if adapter.base_model else None
    if known is not None:
        # A catalog size stands for base and Instruct, whose vocabularies may differ: llama.cpp checks it.
        return dataclasses.replace(known.shape, vocab_size=None)
    raise AdapterError(
        f"{adapter.path} was trained on {adapter.base_model or 'a model it does not name'}, "
        "whose shape mixtral does not know.",
        path=adapter.path,
        hint="Copy that model's config.json into the adapter's folder.",
    )


def _mixtral_hparams(folder: Path, adapter: PeftAdapter) -> MixtralHParams:
    try:
        config = read_json(folder / "config.json", folder)
        architecture = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
        if architecture != MIXTRAL_ARCHITECTURE:
            raise AdapterError(
                f"{adapter.path} adapts a {architecture} model ({folder / 'config.json'}), not Mixtral.",
                path=adapter.path,
            )
        return MixtralHParams.from_config(config, path=folder)
    except CheckpointError as exc:
        raise AdapterError(exc.message, path=adapter.path, hint=exc.hint) from exc
