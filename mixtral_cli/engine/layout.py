"""Which CPU weight layout runs a job: repacked, plain, or plain for the prompt and repacked for the answer.

llama.cpp's CPU backend repacks quantized weights at load into an interleaved layout
(``llama_model_params.use_extra_bufts``). On the CPUs measured so far the repacked layout decodes faster
and the file's own ("plain") layout evaluates long prompts two to three times faster, but the balance
depends on the instruction set and the quantization type, so the choice is made from rates measured on
this machine (see calibration.py), never from constants. Pure: no llama.cpp here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from ..base.units import format_bytes
from .options import EngineOptions


class Layout(str, Enum):
    REPACKED = "repacked"
    PLAIN = "plain"
    HANDOVER = "hand-over"  # a plain-layout context evaluates the prompt, a repacked one decodes


@dataclass(frozen=True)
class Work:
    """What a job is expected to ask of the model, in tokens."""

    prompt_tokens: int
    answer_tokens: int


@dataclass(frozen=True)
class LayoutRates:
    """This machine's measured rates for one model in both layouts, in tokens per second."""

    plain_prompt: float
    plain_decode: float
    repacked_prompt: float
    repacked_decode: float
    repack_load_s: float  # what loading the repacked layout costs beyond loading the plain one


@dataclass(frozen=True)
class Memory:
    """Whether RAM holds both layouts at once: the mapped file, the repacked copy and two KV caches."""

    model_bytes: int
    kv_bytes: int
    available: int | None

    @property
    def needed(self) -> int:
        return 2 * self.model_bytes + 2 * self.kv_bytes

    @property
    def holds_both(self) -> bool:
        return self.available is not None and self.needed <= self.available

    def describe(self) -> str:
        available = format_bytes(self.available) if self.available is not None else "unknown"
        return (
            f"both layouts need {format_bytes(self.needed)} (2 x {format_bytes(self.model_bytes)} weights "
            f"+ 2 x {format_bytes(self.kv_bytes, digits=2)} KV cache), {available} available"
        )


@dataclass(frozen=True)
class LayoutPlan:
    layout: Layout
    expected_s: dict[Layout, float]  # the estimate for each layout considered
    memory: Memory | None

    def describe(self) -> str:
        estimates = ", ".join(f"{layout.value} {seconds:.1f} s" for layout, seconds in self.expected_s.items())
        memory = f"; {self.memory.describe()}" if self.memory else ""
        return f"Weight layout: {self.layout.value} (expected {estimates}{memory})."


def choose_layout(work: Work, rates: LayoutRates, memory: Memory) -> LayoutPlan:
    """The layout that should finish ``work`` soonest; the hand-over only where RAM holds both layouts.

    The plain layout is loaded first (it only maps the file), so the repacked one costs its load time.
    """
    load = rates.repack_load_s
    expected = {
        Layout.PLAIN: expected_seconds(work, rates, Layout.PLAIN),
        Layout.REPACKED: load + expected_seconds(work, rates, Layout.REPACKED),
    }
    if memory.holds_both:
        expected[Layout.HANDOVER] = load + expected_seconds(work, rates, Layout.HANDOVER)
    best = min(expected, key=expected.__getitem__)
    return LayoutPlan(best, expected, memory)


def expected_seconds(work: Work, rates: LayoutRates, layout: Layout) -> float:
    """How long ``work`` takes in ``layout`` at ``rates``, once the layout is loaded."""
    prompt_rate = rates.repacked_prompt if layout is Layout.REPACKED else rates.plain_prompt
    decode_rate = rates.plain_decode if layout is Layout.PLAIN else rates.repacked_decode
    return work.prompt_tokens / prompt_rate + work.answer_tokens / decode_rate


def prefill_elsewhere(own_tokens: int, prefill_tokens: int, rates: LayoutRates) -> bool:
    """Whether a hand-over engine evaluates a prompt in its plain-layout context rather than its own.

    ``own_tokens`` and ``prefill_tokens`` are what each context would evaluate, after the prefix it holds.
    """
    return prefill_tokens / rates.plain_prompt < own_tokens / rates.repacked_prompt


def for_chat(options: EngineOptions) -> EngineOptions:
    """Chat starts repacked on auto: its prompts arrive a turn at a time, and its answers are the work."""
    return options if options.repack is not None else replace(options, repack=True)
