"""This machine's prompt and decode rates for a model in both weight layouts, measured once and cached.

The first time a model runs with ``--repack`` on auto on a machine, a short run in each layout (one batch
of prompt tokens, then tokens one at a time) measures the rates that layout.choose_layout weighs. They are
kept in ``MIXTRAL_HOME/calibration.json`` under the model file (path, size, modification time) and the CPU
(model name, instruction set, threads), so a new file, CPU or thread count is measured anew.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Protocol, TypeVar

from ..base.atomic import write_state
from ..base.paths import mixtral_home
from .layout import LayoutRates

PROMPT_TOKENS = 128  # one batch: prompts are evaluated in batches, and the batch size sets the rate
DECODE_TOKENS = 16
_FIRST_ID = 1000  # ordinary pieces of both vocabularies; the rates do not depend on which ids


class Measurable(Protocol):
    """What calibration needs of an engine: a context to evaluate tokens in, emptied between runs."""

    load_s: float  # seconds its model took to load
    n_ctx: int

    def reset_cache(self) -> None: ...

    def time_evaluation(self, ids: Sequence[int], *, one_by_one: bool) -> float: ...

    def close(self) -> None: ...


EngineT = TypeVar("EngineT", bound=Measurable)


def cache_path() -> Path:
    return mixtral_home() / "calibration.json"


def cache_key(model: Path, *, threads: int) -> str:
    stat = model.stat()
    return f"{model.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{cpu_signature()}|{threads} threads"


def cpu_signature() -> str:
    """The CPU's model name and a digest of its instruction-set flags (what the kernels are chosen by)."""
    import platform

    name, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = value.strip()
    except OSError:
        pass
    return f"{name} [{hashlib.sha256(flags.encode()).hexdigest()[:12]}]"


def cached_rates(key: str) -> LayoutRates | None:
    entry = _read_cache().get(key)
    if not isinstance(entry, dict) or not all(_is_number(v) for v in entry.values()):
        return None  # garbled: measure again
    try:
        rates = LayoutRates(**entry)
    except TypeError:  # written by another version: measure again
        return None
    if min(rates.plain_prompt, rates.plain_decode, rates.repacked_prompt, rates.repacked_decode) <= 0:
        return None
    return rates


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def store_rates(key: str, rates: LayoutRates, *, on_notice: Callable[[str], None] | None = None) -> None:
    """Keep ``rates`` for the next run; where they cannot be kept, they are measured again then."""
    entries = _read_cache()
    entries[key] = asdict(rates)
    text = json.dumps(entries, indent=2) + "\n"
    write_state(cache_path(), text, what="This machine's measured speeds for the model", on_notice=on_notice)


def calibrate(plain: EngineT, load_repacked: Callable[[], EngineT]) -> tuple[LayoutRates, EngineT]:
    """Measure ``plain`` and a repacked engine of the same file; return the rates and the repacked engine."""
    plain_prompt, plain_decode = measure(plain)
    started = time.perf_counter()
    repacked = load_repacked()
    repack_load_s = max(0.0, time.perf_counter() - started - plain.load_s)
    try:
        repacked_prompt, repacked_decode = measure(repacked)
    except BaseException:
        repacked.close()
        raise
    return LayoutRates(plain_prompt, plain_decode, repacked_prompt, repacked_decode, repack_load_s), repacked


def measure(engine: Measurable) -> tuple[float, float]:
    """Prompt tokens per second (one batch) and decode tokens per second of an engine; its cache ends empty."""
    count = min(PROMPT_TOKENS, engine.n_ctx - DECODE_TOKENS - 1)
    ids = list(range(_FIRST_ID, _FIRST_ID + count + DECODE_TOKENS))
    engine.reset_cache()
    engine.time_evaluation(ids[:1], one_by_one=True)  # the first call of a context allocates its buffers
    engine.reset_cache()
    prompt_s = engine.time_evaluation(ids[:count], one_by_one=False)
    decode_s = engine.time_evaluation(ids[count:], one_by_one=True)
    engine.reset_cache()
    return count / prompt_s, DECODE_TOKENS / decode_s


def _read_cache() -> dict[str, dict]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
