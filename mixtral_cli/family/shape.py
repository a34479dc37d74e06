"""A Mixtral's shape: the hyperparameters that fix its tensors, in one spelling for every part that needs them.

The converter reads it from config.json, the adapter converter lays an adapter's rows and columns by it, the
catalog plans memory with it, and the tiny model is built to it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MixtralShape:
    hidden_size: int
    intermediate_size: int  # one expert's
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int = 8
    experts_per_token: int = 2
    context_length: int = 32768
    vocab_size: int | None = None  # None: not known (an adapter's base from the catalog); llama.cpp checks it

    def parameter_count(self, *, active: bool = False) -> int:
        """Every weight, or (``active``) those one token runs through: its experts of each layer, not all.

        Needs the vocabulary: embeddings and output are a large share of a small model."""
        if self.vocab_size is None:
            raise ValueError("a shape without its vocabulary has no parameter count")
        h, experts = self.hidden_size, self.experts_per_token if active else self.num_experts
        attention = 2 * h * self.head_dim * (self.num_heads + self.num_kv_heads)
        router = self.num_experts * h
        per_layer = attention + router + experts * 3 * self.intermediate_size * h + 2 * h  # two norms
        return 2 * self.vocab_size * h + self.num_layers * per_layer + h  # embeddings, output, final norm
