"""From what the user typed after -m to a GGUF on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import ModelNotFoundError
from ..base.paths import exists

if TYPE_CHECKING:
    from ..base.progress import Progress
    from ..engine.options import LoraSpec

MODEL_ENV = "MIXTRAL_MODEL"
_HOW_TO_GET_ONE = (
    "Use -m tiny for the built-in demo, -m PATH.gguf for a GGUF file, or get one with "
    "`mixtral pull 8x7b-instruct` or `mixtral quantize ./Mixtral-8x7B-Instruct-v0.1`."
)


@dataclass(frozen=True)
class ModelFile:
    """A GGUF to load, and what the store knows of it: the catalog name it was pulled by and whether that
    entry is Instruct (None where the store knows no such thing)."""

    path: Path
    pulled_as: tuple[str, bool] | None = None


def resolve_model(spec: str | None, *, progress: Progress | None = None) -> ModelFile:
    """``spec`` (else $MIXTRAL_MODEL, else the store's default): ``tiny``, a GGUF path, or a pulled name.

    The store is read only where ``spec`` needs it: ``tiny`` and a file load whatever state it is in.
    """
    from .demo import DEMO_NAME, ensure_demo_model
    from .store import ModelStore

    store = ModelStore()
    spec = spec or os.environ.get(MODEL_ENV) or store.default()
    if not spec:
        raise ModelNotFoundError("No model given.", hint=f"Pass -m MODEL or set {MODEL_ENV}. {_HOW_TO_GET_ONE}")
    if spec == DEMO_NAME:
        return ModelFile(ensure_demo_model(progress))
    path = Path(spec).expanduser()
    if exists(path):
        return ModelFile(path, store.pulled_as(path))
    entry = store.get(spec)
    if entry is not None:
        return ModelFile(entry.path, None if entry.instruct is None else (entry.name, entry.instruct))
    raise ModelNotFoundError(
        f"No model {spec!r}: no such file, and no pulled model by that name.", hint=_HOW_TO_GET_ONE
    )


def resolve_lora(text: str) -> LoraSpec:
    """``FILE[:SCALE]`` of --lora, where FILE may also name a pulled adapter (ORG/NAME, or ORG/NAME:TYPE)."""
    from ..engine.options import LoraSpec
    from .store import ModelStore

    spec = LoraSpec.parse(text)
    if exists(spec.path):
        return spec
    name = str(spec.path)
    adapters = [e for e in ModelStore().entries() if e.kind == "adapter" and name in (e.name, e.repo)]
    # Not found: the engine's check says so, naming the file.
    return LoraSpec(adapters[0].path, spec.scale) if len(adapters) == 1 else spec
