"""The GGUF file types `mixtral quantize` can produce, what each costs in bits per weight, and their spellings."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..base.errors import QuantizationTypeError

DEFAULT_TYPE = "Q4_K_M"
# Below this a mixture of experts loses too much: each expert sees only a share of the training signal.
LOW_BITS_THRESHOLD = 3.0


@dataclass(frozen=True)
class QuantType:
    name: str
    file_type: int  # llama.cpp's llama_ftype, the same numbers as gguf.LlamaFileType
    bits_per_weight: float  # of the dominant tensor type, as llama.cpp's block layouts give it
    direct: bool = False  # written straight by the converter, without llama.cpp's quantizer
    needs_imatrix: bool = False  # llama.cpp refuses these without an importance matrix

    @property
    def low_bits(self) -> bool:
        return self.bits_per_weight < LOW_BITS_THRESHOLD


_TYPES = [
    QuantType("F32", 0, 32.0, direct=True),
    QuantType("F16", 1, 16.0, direct=True),
    QuantType("BF16", 32, 16.0, direct=True),
    QuantType("Q8_0", 7, 8.5, direct=True),
    QuantType("Q6_K", 18, 6.5625),
    QuantType("Q5_K_M", 17, 5.5),
    QuantType("Q5_K_S", 16, 5.5),
    QuantType("Q5_1", 9, 6.0),
    QuantType("Q5_0", 8, 5.5),
    QuantType("Q4_K_M", 15, 4.5),
    QuantType("Q4_K_S", 14, 4.5),
    QuantType("Q4_1", 3, 5.0),
    QuantType("Q4_0", 2, 4.5),
    QuantType("IQ4_NL", 25, 4.5),
    QuantType("IQ4_XS", 30, 4.25),
    QuantType("Q3_K_L", 13, 3.4375),
    QuantType("Q3_K_M", 12, 3.4375),
    QuantType("Q3_K_S", 11, 3.4375),
    QuantType("IQ3_M", 27, 3.4375),
    QuantType("IQ3_S", 26, 3.4375),
    QuantType("IQ3_XS", 22, 3.3),
    QuantType("IQ3_XXS", 23, 3.0625),
    QuantType("Q2_K", 10, 2.625),
    QuantType("Q2_K_S", 21, 2.625, needs_imatrix=True),
    QuantType("IQ2_M", 29, 2.7, needs_imatrix=True),
    QuantType("IQ2_S", 28, 2.5, needs_imatrix=True),
    QuantType("IQ2_XS", 20, 2.3125, needs_imatrix=True),
    QuantType("IQ2_XXS", 19, 2.0625, needs_imatrix=True),
    QuantType("IQ1_M", 31, 1.75, needs_imatrix=True),
    QuantType("IQ1_S", 24, 1.5625, needs_imatrix=True),
    QuantType("TQ2_0", 37, 2.0625),
    QuantType("TQ1_0", 36, 1.6875),
]
QUANT_TYPES: dict[str, QuantType] = {t.name: t for t in _TYPES}


# Other spellings seen in GGUF repos: llama.cpp's own aliases (tools/quantize) and MaziyarPanahi's file names.
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q6": "Q6_K", "FP16": "F16", "FP32": "F32"}


def normalize_quant(spelling: str) -> str | None:
    """The type's name however it is spelled (any case, ``-`` or ``.`` between its parts, an alias); None if unknown."""
    name = re.sub(r"[-.]", "_", spelling.strip()).upper()
    name = _ALIASES.get(name, name)
    return name if name in QUANT_TYPES else None


def quant_type(name: str) -> QuantType:
    """Look a type up by any spelling of its name."""
    normal = normalize_quant(name)
    if normal is None:
        raise QuantizationTypeError(
            f"{name!r} is not a quantization type.", hint=f"Choose one of {', '.join(QUANT_TYPES)}."
        )
    return QUANT_TYPES[normal]
