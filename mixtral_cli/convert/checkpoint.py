"""A Hugging Face Mixtral folder: its hyperparameters and where each tensor lies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, UnsupportedArchitectureError
from .safetensors import SafetensorsFormatError, TensorRef, read_index

MIXTRAL_ARCHITECTURE = "MixtralForCausalLM"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class MixtralHParams:
    """What llama.cpp needs to know about the model's shape, read from config.json."""

    vocab_size: int
    context_length: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    experts_per_token: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: dict, *, path: Path) -> MixtralHParams:
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            return cls(
                vocab_size=int(config["vocab_size"]),
                context_length=int(config.get("max_position_embeddings", 32768)),
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                num_experts=int(config["num_local_experts"]),
                experts_per_token=int(config["num_experts_per_tok"]),
                rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
                rope_theta=_rope_theta(config),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path / 'config.json'} lacks or garbles {exc}; it is not a complete Mixtral config.", path=path
            ) from exc


def _rope_theta(config: dict) -> float:
    # transformers 5 moved rope_theta into rope_parameters; checkpoints in the wild have either.
    parameters = config.get("rope_parameters") or {}
    return float(config.get("rope_theta") or parameters.get("rope_theta") or 1e6)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    name: str
    hparams: MixtralHParams
    tensors: dict[str, TensorRef]
    tokenizer_config: dict

    @property
    def tokenizer_model(self) -> Path:
        return self.path / "tokenizer.model"

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def tensor(self, name: str) -> TensorRef:
        try:
            return self.tensors[name]
        except KeyError:
            raise CheckpointError(
                f"{self.path} lacks tensor {name}; the checkpoint is incomplete.",
                path=self.path,
                hint="Download the model again.",
            ) from None


def open_checkpoint(path: Path) -> Checkpoint:
    """Read a model folder's config and tensor tables, checking every file they name."""
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist.", path=path, hint="Check the spelling; give the folder that holds config.json."
        )
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a folder.", path=path, hint="Give the folder that holds config.json.")
    config = _read_json(path / "config.json", path)
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    if architectures[0] != MIXTRAL_ARCHITECTURE:
        raise UnsupportedArchitectureError(str(architectures[0]), path=path)
    if not (path / "tokenizer.model").is_file():
        raise CheckpointError(
            f"{path} has no tokenizer.model.", path=path, hint="Download the model's tokenizer.model into it."
        )
    tokenizer_config_path = path / "tokenizer_config.json"
    tokenizer_config = _read_json(tokenizer_config_path, path) if tokenizer_config_path.exists() else {}
    return Checkpoint(
        path=path,
        name=path.resolve().name,
        hparams=MixtralHParams.from_config(config, path=path),
        tensors=_tensor_table(path),
        tokenizer_config=tokenizer_config,
    )


def _tensor_table(path: Path) -> dict[str, TensorRef]:
    if (path / INDEX_FILE).exists():
        weight_map = _read_json(path / INDEX_FILE, path).get("weight_map") or {}
        files = sorted(set(weight_map.values()))
    else:
        # consolidated.* files repeat the same weights under Mistral's own names.
        files = sorted(p.name for p in path.glob("*.safetensors") if not p.name.startswith("consolidated"))
    if not files:
        raise CheckpointError(f"{path} holds no safetensors weights.", path=path)
    tensors: dict[str, TensorRef] = {}
    for filename in files:
        file = path / filename
        if not file.is_file():
            raise CheckpointError(
                f"{path} is missing {filename}, which {INDEX_FILE} lists.", path=path, hint="Download the model again."
            )
        try:
            tensors.update(read_index(file))
        except SafetensorsFormatError as exc:
            raise CheckpointError(f"{exc}.", path=path, hint="Download that file again.") from exc
    return tensors


def _read_json(file: Path, folder: Path) -> dict:
    try:
        value = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder} has no {file.name}; it is not a Hugging Face model folder.", path=folder
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file} is not valid JSON.", path=folder, hint="Download it again.") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{file} is not a JSON object.", path=folder)
    return value
