"""The Mixtral family by short name: where each lives on the Hub, and its shape for memory planning."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..base.errors import MixtralError
from ..base.paths import exists
from ..gguf_format.naming import ANY_NAMING, DASH_NAMING, DOT_NAMING, GGUFNaming
from ..gguf_format.quant_types import normalize_quant
from .shape import MixtralShape

# The two sizes (shared/reference/models.md): 46.7B and 141B parameters, 12.9B and 39B active per token.
SHAPE_8X7B = MixtralShape(
    hidden_size=4096,
    intermediate_size=14336,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    vocab_size=32000,
)
# The Instruct's vocabulary (v3); the base's has 32000, which changes the parameter count by 0.005%.
SHAPE_8X22B = MixtralShape(
    hidden_size=6144,
    intermediate_size=16384,
    num_layers=56,
    num_heads=48,
    num_kv_heads=8,
    head_dim=128,
    context_length=65536,
    vocab_size=32768,
)


@dataclass(frozen=True)
class GGUFRepo:
    """A repo of pre-quantized GGUFs: how it names its files, and whether they predate stacked experts."""

    repo: str
    naming: GGUFNaming
    legacy_layout: bool = False  # one tensor per expert: rewritten once after download


@dataclass(frozen=True)
class CatalogModel:
    name: str
    repo: str  # the official safetensors checkpoint (gated), converted only when asked
    gguf_repos: tuple[GGUFRepo, ...]  # tried in order: current layout first
    shape: MixtralShape
    instruct: bool

    @property
    def checkpoint_bytes(self) -> int:
        return self.shape.parameter_count() * 2  # bf16


# File names from public listings of the real repos (shared/reference/models.md).
CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            "8x7b",
            "mistralai/Mixtral-8x7B-v0.1",
            (GGUFRepo("TheBloke/Mixtral-8x7B-v0.1-GGUF", DOT_NAMING, legacy_layout=True),),
            SHAPE_8X7B,
            instruct=False,
        ),
        CatalogModel(
            "8x7b-instruct",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            (
                GGUFRepo("bartowski/Mixtral-8x7B-Instruct-v0.1-GGUF", DASH_NAMING),
                GGUFRepo("TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF", DOT_NAMING, legacy_layout=True),
            ),
            SHAPE_8X7B,
            instruct=True,
        ),
        CatalogModel(
            "8x22b",
            "mistralai/Mixtral-8x22B-v0.1",
            (
                GGUFRepo("bartowski/Mixtral-8x22B-v0.1-GGUF", DASH_NAMING),
                GGUFRepo("MaziyarPanahi/Mixtral-8x22B-v0.1-GGUF", DOT_NAMING),
            ),
            SHAPE_8X22B,
            instruct=False,
        ),
        CatalogModel(
            "8x22b-instruct",
            "mistralai/Mixtral-8x22B-Instruct-v0.1",
            (
                GGUFRepo("MaziyarPanahi/Mixtral-8x22B-Instruct-v0.1-GGUF", DOT_NAMING),
                GGUFRepo("bartowski/Mixtral-8x22B-Instruct-v0.1-GGUF", DASH_NAMING),
            ),
            SHAPE_8X22B,
            instruct=True,
        ),
    )
}


def gguf_repo(repo: str) -> GGUFRepo:
    """The catalog's knowledge of a GGUF repo; any other repo's names are read either way."""
    known = (g for m in CATALOG.values() for g in m.gguf_repos if g.repo.lower() == repo.lower())
    return next(known, GGUFRepo(repo, ANY_NAMING))


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
    """A catalog name or a Hub repo id, with an optional ``:QUANT``; anything else is refused in one line."""
    source, _, quant = text.strip().partition(":")
    if source and looks_like_a_path(source):
        raise MixtralError(
            f"{_shown(text)} is a path, not a Mixtral name or Hub repo id.",
            hint=f"To convert a model folder or GGUF on this machine: `mixtral quantize {text}`.",
        )
    if not source or (CATALOG.get(source.lower()) is None and source.count("/") != 1):
        raise MixtralError(f"{_shown(text)} is neither a Mixtral name nor a Hub repo id.", hint=_NAMES_HINT)
    if source.lower() not in CATALOG:
        _check_repo_id(text, source)
    return ModelRef(source.lower() if source.lower() in CATALOG else source, _normal_quant(quant) if quant else None)


_NAMES_HINT = f"Use one of {', '.join(CATALOG)} or ORG/NAME, optionally with :QUANT (e.g. 8x7b-instruct:Q4_K_M)."


def looks_like_a_path(source: str) -> bool:
    """Whether a SOURCE names something on this machine rather than a Hub repo: it exists, or it is spelled
    as only paths are (./ ../ / ~, or more parts than ORG/NAME), so a mistyped folder is never sent to the Hub."""
    path = Path(source)
    return source.startswith((".", "~")) or path.is_absolute() or len(path.parts) > 2 or exists(path.expanduser())


def _check_repo_id(text: str, repo: str) -> None:
    """Hub repo ids as huggingface_hub checks them, said in one sentence before any request."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise MixtralError(
            f"{_shown(text)} is not a valid Hub repo id: ORG/NAME takes letters, digits, '-', '_' and '.', "
            "at most 96 of them, with no '--' or '..' and no '-' or '.' at either end.",
            hint=_NAMES_HINT,
        ) from None


def _shown(text: str) -> str:
    """``text`` quoted, and cut where it is too long to read in one line."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def canonical_name(text: str) -> str:
    """A model name as the store records it: catalog names in lower case, the quantization normalised."""
    source, _, quant = text.partition(":")
    source = source.lower() if source.lower() in CATALOG else source
    return f"{source}:{_normal_quant(quant)}" if quant else source


def _normal_quant(quant: str) -> str:
    return normalize_quant(quant) or quant.upper()


def catalog_model_of_repo(repo: str) -> CatalogModel | None:
    """The catalog model whose official checkpoint is ``repo`` (as a PEFT adapter names its base), if any."""
    return next((m for m in CATALOG.values() if m.repo.lower() == repo.strip().lower()), None)
