"""How GGUF repos name their files, and which quantizations a repo's file list offers.

Each publisher spells names its own way: TheBloke ``mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf``, MaziyarPanahi
``Mixtral-8x22B-Instruct-v0.1.Q4_K_M-00001-of-00002.gguf`` (and ``Q6``, ``fp16``), bartowski
``Mixtral-8x22B-v0.1-Q4_K_M-00001-of-00005.gguf``. The quantization is the last part of the name before
the shard suffix, after the publisher's separator; its spelling is normalised by ``quant_types``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..base.errors import HubError
from .quant_types import normalize_quant

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")


@dataclass(frozen=True)
class GGUFNaming:
    """``STEM<separator>QUANT[-0000i-of-0000n].gguf``, for one of ``separators``."""

    separators: str

    def quantization_of(self, path: str) -> str | None:
        """The normalised quantization a file name carries, or None for a file that is no such GGUF."""
        name = path.rsplit("/", 1)[-1]
        if not name.endswith(".gguf"):
            return None
        base = _SHARD.sub("", name.removesuffix(".gguf"))
        return normalize_quant(re.split(f"[{re.escape(self.separators)}]", base)[-1])


DOT_NAMING = GGUFNaming(".")  # TheBloke, MaziyarPanahi
DASH_NAMING = GGUFNaming("-")  # bartowski
ANY_NAMING = GGUFNaming(".-")  # a repo the catalog does not know


def quantizations(paths: tuple[str, ...] | list[str], naming: GGUFNaming = ANY_NAMING) -> dict[str, list[str]]:
    """Quantization -> its GGUF files (every shard, in order) among ``paths``."""
    found: dict[str, list[str]] = {}
    for path in paths:
        quant = naming.quantization_of(path)
        if quant:
            found.setdefault(quant, []).append(path)
    return {quant: sorted(files) for quant, files in found.items()}


def check_shards(repo: str, quant: str, paths: list[str]) -> None:
    """Refuse a split model with shards missing from the repo."""
    suffix = _SHARD.search(paths[0].removesuffix(".gguf"))
    if suffix and len(paths) != int(suffix[2]):
        raise HubError(f"{repo} has {len(paths)} of the {int(suffix[2])} shards of its {quant} GGUF.")
