"""The built-in demo model (`-m tiny`): the tiny random Mixtral, run through the real quantize pipeline.

Built on first use and cached in the mixtral home; later runs load it in milliseconds. It speaks
gibberish, but every part of the tool works on it offline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..base.atomic import locked
from ..base.paths import mixtral_home
from ..base.progress import Progress
from ..convert.pipeline import quantize_model
from .tiny_model import TinyMixtralSpec, build_tiny_mixtral

DEMO_NAME = "tiny"
DEMO_TYPE = "Q4_K_M"
DEMO_MODEL_NAME = "Tiny-Mixtral-Instruct (random weights)"


def demo_model_path() -> Path:
    # "-chat": built with the chat template that makes it Instruct; demo files built before lack it.
    return mixtral_home() / "demo" / f"tiny-mixtral-instruct-chat-{DEMO_TYPE}.gguf"


def ensure_demo_model(progress: Progress | None = None) -> Path:
    """The demo GGUF, built if it is not there yet."""
    path = demo_model_path()
    if path.exists():
        return path
    # Two first runs at once: the second waits for the first's model instead of writing its own over it.
    with locked(path):
        if path.exists():
            return path
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            checkpoint = build_tiny_mixtral(Path(scratch) / "tiny-mixtral-instruct", TinyMixtralSpec(instruct=True))
            quantize_model(checkpoint, type_name=DEMO_TYPE, output=path, name=DEMO_MODEL_NAME, progress=progress)
    return path
