"""A Hugging Face Mixtral folder: its hyperparameters and where each tensor lies."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ..base.errors import CheckpointError, UnsupportedArchitectureError
from ..family.shape import MixtralShape
from .safetensors import SafetensorsFormatError, TensorRef, read_index

MIXTRAL_ARCHITECTURE = "MixtralForCausalLM"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class MixtralHParams:
    """What llama.cpp needs to know about the model, read from config.json: its shape and the numbers of its
    norms, rotary embedding and output."""

    shape: MixtralShape  # with its vocabulary
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: dict, *, path: Path) -> MixtralHParams:
        """The hyperparameters, each checked for its type and range, so a lying config.json is named here
        rather than met later as a crash, a division by zero or a model llama.cpp refuses."""
        read = _ConfigReader(config, path / "config.json")
        hidden, heads = read.count("hidden_size"), read.count("num_attention_heads")
        kv_heads = read.count("num_key_value_heads", default=heads)
        experts = read.count("num_local_experts")
        shape = MixtralShape(
            vocab_size=read.count("vocab_size"),
            context_length=read.count("max_position_embeddings", default=32768),
            hidden_size=hidden,
            intermediate_size=read.count("intermediate_size"),
            num_layers=read.count("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=read.count("head_dim", default=hidden // heads),
            num_experts=experts,
            experts_per_token=read.count("num_experts_per_tok"),
        )
        hparams = cls(
            shape,
            rms_norm_eps=read.positive("rms_norm_eps", default=1e-5),
            rope_theta=read.positive("rope_theta", default=_rope_theta(config)),
            tie_word_embeddings=read.flag("tie_word_embeddings", default=False),
        )
        if heads % kv_heads:
            read.fail("num_key_value_heads", f"{kv_heads}, which does not divide the {heads} attention heads")
        if shape.experts_per_token > experts:
            read.fail("num_experts_per_tok", f"{shape.experts_per_token}, more than the {experts} experts")
        return hparams


class _ConfigReader:
    """Reads config.json's values by type; a missing or wrong one is a CheckpointError naming the key."""

    def __init__(self, config: dict, file: Path) -> None:
        self.config, self.file = config, file

    def fail(self, key: str, what: str) -> NoReturn:
        raise CheckpointError(
            f"{self.file}: {key} is {what}; it is not a valid Mixtral config.",
            path=self.file.parent,
            hint="Download config.json again, or fix that value.",
        )

    def _value(self, key: str, default: object) -> object:
        value = self.config.get(key)
        if value is None and default is None:
            raise CheckpointError(
                f"{self.file} lacks {key}; it is not a complete Mixtral config.", path=self.file.parent
            )
        return default if value is None else value

    def count(self, key: str, default: int | None = None) -> int:
        value = self._value(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**31:
            self.fail(key, f"{_shown(value)}, not a whole number from 1 to 2147483647")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self._value(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
            self.fail(key, f"{_shown(value)}, not a number above 0")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self._value(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"{_shown(value)}, not true or false")
        return value


def _shown(value: object) -> str:
    shown = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _rope_theta(config: dict) -> float:
    # transformers 5 moved rope_theta into rope_parameters; checkpoints in the wild have either.
    parameters = config.get("rope_parameters")
    theta = parameters.get("rope_theta") if isinstance(parameters, dict) else None
    return theta if theta is not None else 1e6


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
    config = read_json(path / "config.json", path)
    architectures = config.get("architectures") or [config.get("model_type") or "unknown"]
    if not (isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)):
        _ConfigReader(config, path / "config.json").fail(
            "architectures", f"{_shown(architectures)}, not a list of names"
        )
    if architectures[0] != MIXTRAL_ARCHITECTURE:
        raise UnsupportedArchitectureError(architectures[0][:80], path=path)
    if not (path / "tokenizer.model").is_file():
        raise CheckpointError(
            f"{path} has no tokenizer.model.", path=path, hint="Download the model's tokenizer.model into it."
        )
    tokenizer_config_path = path / "tokenizer_config.json"
    tokenizer_config = read_json(tokenizer_config_path, path) if tokenizer_config_path.exists() else {}
    return Checkpoint(
        path=path,
        name=path.resolve().name,
        hparams=MixtralHParams.from_config(config, path=path),
        tensors=_tensor_table(path),
        tokenizer_config=tokenizer_config,
    )


def _tensor_table(path: Path) -> dict[str, TensorRef]:
    if (path / INDEX_FILE).exists():
        weight_map = read_json(path / INDEX_FILE, path).get("weight_map") or {}
        # Names of files in this folder, never paths: an index cannot send the reader elsewhere.
        if not (isinstance(weight_map, dict) and all(_is_file_name(f) for f in weight_map.values())):
            raise CheckpointError(
                f"{path / INDEX_FILE} has a weight_map that is not tensor names to file names in {path}.",
                path=path,
                hint="Download it again.",
            )
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
            found = read_index(file)
        except SafetensorsFormatError as exc:
            raise CheckpointError(f"{exc}.", path=path, hint="Download that file again.") from exc
        except OSError as exc:
            raise CheckpointError(f"Cannot read {file}: {exc.strerror or exc}.", path=path) from exc
        if twice := found.keys() & tensors.keys():
            name = min(twice)
            raise CheckpointError(
                f"{path} has tensor {name[:80]} in both {tensors[name].path.name} and {filename}.",
                path=path,
                hint="Download the model again.",
            )
        tensors.update(found)
    return tensors


def _is_file_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def read_json(file: Path, folder: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder} has no {file.name}; it is not a Hugging Face model folder.", path=folder
        ) from None
    except OSError as exc:
        raise CheckpointError(f"Cannot read {file}: {exc.strerror or exc}.", path=folder) from exc
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{file} is not valid JSON.", path=folder, hint="Download it again.") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{file} is not a JSON object.", path=folder)
    return value
