"""The ranges numbers can take: what each bound is, so a refusal can name it.

A number past what its field can mean is refused where it enters, before anything is allocated or
handed to llama.cpp: a C field of 32 bits would wrap it silently, a thread count past the cores makes
llama.cpp abort. Each option, request parameter and chat setting checks its value with the same Bound.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

INT32_MAX = 2**31 - 1  # llama.cpp's int32_t fields: token positions, top-k, layers
UINT32_MAX = 2**32 - 1  # its uint32_t fields: seeds (this one means "random")
FLOAT32_MAX = 3.4028234663852886e38  # its float fields: past this a number is infinite

MAX_WAIT_S = threading.TIMEOUT_MAX  # the longest wait a lock or queue takes: past it they overflow

IN_A_32_BIT_FIELD = "the most llama.cpp's 32-bit field holds"
IN_A_FLOAT = "the largest 32-bit float llama.cpp takes"


@dataclass(frozen=True)
class Bound:
    """``least`` to ``most``, both included unless ``above_least``; ``most_is`` says what the upper bound is."""

    least: float
    most: float
    most_is: str = IN_A_32_BIT_FIELD
    least_is: str = ""
    above_least: bool = False

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range (a phrase to follow it), or None when it is in."""
        if isinstance(value, float) and not math.isfinite(value):
            return "is not a finite number"
        if value < self.least or self.above_least and value == self.least:
            below = "is not above" if self.above_least else "is below"
            return f"{below} {number_text(self.least)}" + (f", {self.least_is}" if self.least_is else "")
        if value > self.most:
            return f"is above {number_text(self.most)}, {self.most_is}"
        return None

    def check(self, name: str, value: float, *, error: type[Exception]) -> None:
        """Raise ``error`` with one sentence naming ``name``, its value and the bound it is past."""
        problem = self.problem(value)
        if problem is not None:
            raise error(f"{name} {number_text(value)} {problem}.")


def logical_cpus() -> int:
    return os.cpu_count() or 1


def thread_bound() -> Bound:
    cpus = logical_cpus()
    return Bound(1, cpus, f"this machine's {cpus} logical CPU{'s' if cpus > 1 else ''}")


def number_text(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)
