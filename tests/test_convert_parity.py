"""The GGUF the converter writes, run by llama.cpp, computes what transformers computes on the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .reference import PROMPT, llama_cpp_logits, sentencepiece_ids, transformers_logits

SHAPES = {
    "v1": TinyMixtralSpec(tokenizer="v1"),
    "v3": TinyMixtralSpec(tokenizer="v3"),
    "sharded": TinyMixtralSpec(shards=3),
    "6-experts-3-layers-2-kv-heads": TinyMixtralSpec(
        num_layers=3, num_experts=6, experts_per_token=2, num_heads=4, num_kv_heads=2, seed=7
    ),
}


@pytest.fixture(scope="module")
def reference(build_checkpoint):
    """transformers' logits per shape, computed once."""
    cache: dict[str, tuple[list[int], np.ndarray]] = {}

    def logits(shape: str) -> tuple[list[int], np.ndarray]:
        if shape not in cache:
            checkpoint = build_checkpoint(SHAPES[shape])
            ids = [1, *sentencepiece_ids(checkpoint, PROMPT)]
            cache[shape] = ids, transformers_logits(checkpoint, ids)
        return cache[shape]

    return logits


def test_prompt_is_long_enough(tiny_checkpoint):
    assert len(sentencepiece_ids(tiny_checkpoint, PROMPT)) >= 30


@pytest.mark.parametrize("shape", SHAPES)
def test_f32_logits_match_transformers(shape, reference, convert):
    ids, expected = reference(shape)
    actual = llama_cpp_logits(convert(SHAPES[shape], "F32"), ids)

    assert np.abs(actual - expected).max() <= 5e-3 * np.abs(expected).max()
    assert (actual.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_q8_0_keeps_the_ranking(shape, reference, convert):
    ids, expected = reference(shape)
    actual = llama_cpp_logits(convert(SHAPES[shape], "Q8_0"), ids)

    argmax_agreement = (actual.argmax(-1) == expected.argmax(-1)).mean()
    top5_actual = np.argsort(-actual, axis=-1)[:, :5]
    top5_expected = np.argsort(-expected, axis=-1)[:, :5]
    top5_overlap = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(top5_actual, top5_expected, strict=True)])
    assert argmax_agreement >= 0.85
    assert top5_overlap >= 0.80


@pytest.mark.parametrize("type_name", ["F16", "BF16"])
def test_16_bit_outputs_match_transformers_closely(type_name, reference, convert):
    # The checkpoint is bf16, so BF16 output is lossless and F16 nearly so.
    ids, expected = reference("v1")
    actual = llama_cpp_logits(convert(SHAPES["v1"], type_name), ids)

    assert np.abs(actual - expected).max() <= 2e-2 * np.abs(expected).max()
    assert (actual.argmax(-1) == expected.argmax(-1)).mean() >= 0.95
