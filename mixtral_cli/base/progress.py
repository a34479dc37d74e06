"""How long jobs report their stages (downloads, conversion, quantization); the CLI shows them as progress bars."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """A job's stages, each a total and the amounts done; implemented by ``ui.progress.StageProgress``."""

    def stage(self, description: str, total: int, *, unit: str = "bytes") -> None: ...

    def advance(self, amount: int) -> None: ...
