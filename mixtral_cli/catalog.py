"""The Mixtral family by short name: where each lives on the Hub, and its shape for memory planning."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MixtralError


@dataclass(frozen=True)
class MixtralShape:
    """What memory planning needs of a model size (shared/reference/models.md)."""

    total_params: float
    active_params: float
    n_layers: int
    n_kv_heads: int
    head_dim: int
    context: int


SHAPE_8X7B = MixtralShape(46.7e9, 12.9e9, n_layers=32, n_kv_heads=8, head_dim=128, context=32768)
SHAPE_8X22B = MixtralShape(141e9, 39e9, n_layers=56, n_kv_heads=8, head_dim=128, context=65536)


@dataclass(frozen=True)
class CatalogModel:
    name: str
    repo: str  # the official safetensors checkpoint
    gguf_repos: tuple[str, ...]  # well-known pre-quantized GGUFs, tried first
    shape: MixtralShape
    instruct: bool


CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            "8x7b", "mistralai/Mixtral-8x7B-v0.1", ("TheBloke/Mixtral-8x7B-v0.1-GGUF",), SHAPE_8X7B, instruct=False
        ),
        CatalogModel(
            "8x7b-instruct",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            ("TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF",),
            SHAPE_8X7B,
            instruct=True,
        ),
        CatalogModel(
            "8x22b",
            "mistral-community/Mixtral-8x22B-v0.1",
            ("MaziyarPanahi/Mixtral-8x22B-v0.1-GGUF",),
            SHAPE_8X22B,
            instruct=False,
        ),
        CatalogModel(
            "8x22b-instruct",
            "mistralai/Mixtral-8x22B-Instruct-v0.1",
            ("MaziyarPanahi/Mixtral-8x22B-Instruct-v0.1-GGUF",),
            SHAPE_8X22B,
            instruct=True,
        ),
    )
}


@dataclass(frozen=True)
class ModelRef:
    """What the user typed: a catalog name or ``ORG/NAME``, with an optional ``:QUANT`` tag."""

    source: str
    quant: str | None

    @property
    def catalog(self) -> CatalogModel | None:
        return CATALOG.get(self.source.lower())

    @property
    def name(self) -> str:
        return f"{self.source}:{self.quant}" if self.quant else self.source


def parse_model_ref(text: str) -> ModelRef:
    source, _, quant = text.strip().partition(":")
    if not source or (CATALOG.get(source.lower()) is None and source.count("/") != 1):
        raise MixtralError(
            f"{text!r} is neither a Mixtral name nor a Hub repo id.",
            hint=f"Use one of {', '.join(CATALOG)} or ORG/NAME, optionally with :QUANT (e.g. 8x7b-instruct:Q4_K_M).",
        )
    return ModelRef(source, quant.upper() or None)
