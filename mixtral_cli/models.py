"""From what the user typed after -m to a GGUF on disk."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelNotFoundError
from .quantize import Progress

MODEL_ENV = "MIXTRAL_MODEL"
_HOW_TO_GET_ONE = (
    "Use -m tiny for the built-in demo, -m PATH.gguf for a GGUF file, or make one with "
    "`mixtral quantize ./Mixtral-8x7B-Instruct-v0.1`."
)


def resolve_model(spec: str | None, *, progress: Progress | None = None) -> Path:
    """``spec`` (or $MIXTRAL_MODEL): ``tiny``, or a path to a GGUF file."""
    from .demo import DEMO_NAME, ensure_demo_model

    spec = spec or os.environ.get(MODEL_ENV)
    if not spec:
        raise ModelNotFoundError("No model given.", hint=f"Pass -m MODEL or set {MODEL_ENV}. {_HOW_TO_GET_ONE}")
    if spec == DEMO_NAME:
        return ensure_demo_model(progress)
    path = Path(spec).expanduser()
    if path.exists():
        return path
    raise ModelNotFoundError(f"No model {spec!r}: no such file.", hint=_HOW_TO_GET_ONE)
