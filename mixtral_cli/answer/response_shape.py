"""The two shapes of the model cards' responses (card_request.py answers in them); apart, so that the CLI's
options can name them without importing what answers."""

from __future__ import annotations

from enum import Enum


class ResponseShape(str, Enum):
    PER_INPUT = "per-input"  # the 8x7B cards: [{"0": a}, {"0": b}]
    BY_INDEX = "by-index"  # the 8x22B card: [{"0": a, "1": b}]
