"""What the converted GGUF says about itself: hyperparameters, vocabulary and the MoE tensor layout."""

from __future__ import annotations

import json

import gguf
import pytest
from sentencepiece import SentencePieceProcessor

from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .reference import PROMPT, llama_cpp_tokenize, sentencepiece_ids

TEXTS = [
    PROMPT,
    "Hello, how are you?",
    "  leading spaces and trailing   ",
    "tabs\tand\n\nnewlines\r\n",
    "accents: àéîõü ÀÉÎÕÜ ç ñ ß",
    "emoji 🦙🚀👩‍💻 and CJK 東京都 한국어",
    "code: for (int i = 0; i < n; ++i) { s += a[i]; }",
    "literal specials stay text: </s> <s> [INST] [/INST]",
    "numbers 3.14159 1,000,000 2026-11-22",
]


def _fields(path):
    reader = gguf.GGUFReader(path)
    return reader, {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


@pytest.mark.parametrize("tokenizer", ["v1", "v3"])
def test_llama_cpp_tokenizes_like_sentencepiece(tokenizer, build_checkpoint, convert):
    spec = TinyMixtralSpec(tokenizer=tokenizer)
    gguf_path = convert(spec, "F32")
    checkpoint = build_checkpoint(spec)
    for text in TEXTS:
        assert llama_cpp_tokenize(gguf_path, text) == sentencepiece_ids(checkpoint, text), text


def test_hyperparameters_come_from_config(build_checkpoint, convert):
    spec = TinyMixtralSpec(num_layers=3, num_experts=6, experts_per_token=2, num_heads=4, num_kv_heads=2, seed=7)
    config = json.loads((build_checkpoint(spec) / "config.json").read_text())
    _, fields = _fields(convert(spec, "F32"))

    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == config["num_hidden_layers"]
    assert fields["llama.expert_count"] == config["num_local_experts"]
    assert fields["llama.expert_used_count"] == config["num_experts_per_tok"]
    assert fields["llama.embedding_length"] == config["hidden_size"]
    assert fields["llama.feed_forward_length"] == config["intermediate_size"]
    assert fields["llama.attention.head_count"] == config["num_attention_heads"]
    assert fields["llama.attention.head_count_kv"] == config["num_key_value_heads"]
    assert fields["llama.context_length"] == config["max_position_embeddings"]
    assert fields["llama.rope.freq_base"] == pytest.approx(config["rope_theta"])
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    assert fields["general.name"] == build_checkpoint(spec).name


@pytest.mark.parametrize("tokenizer", ["v1", "v3"])
def test_vocabulary_carries_pieces_scores_types_and_special_ids(tokenizer, build_checkpoint, convert):
    spec = TinyMixtralSpec(tokenizer=tokenizer)
    processor = SentencePieceProcessor(model_file=str(build_checkpoint(spec) / "tokenizer.model"))
    _, fields = _fields(convert(spec, "F32"))

    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == processor.get_piece_size()
    assert tokens == [processor.id_to_piece(i) for i in range(len(tokens))]
    assert fields["tokenizer.ggml.scores"] == pytest.approx([processor.get_score(i) for i in range(len(tokens))])
    assert fields["tokenizer.ggml.token_type"][:3] == [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    assert fields["tokenizer.ggml.bos_token_id"] == processor.bos_id() == 1
    assert fields["tokenizer.ggml.eos_token_id"] == processor.eos_id() == 2
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.ggml.add_eos_token"] is False


def test_experts_are_stacked_per_layer(convert):
    spec = TinyMixtralSpec()
    reader, _ = _fields(convert(spec, "F32"))
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}

    for layer in range(spec.num_layers):
        assert shapes[f"blk.{layer}.ffn_gate_exps.weight"] == (8, spec.intermediate_size, spec.hidden_size)
        assert shapes[f"blk.{layer}.ffn_up_exps.weight"] == (8, spec.intermediate_size, spec.hidden_size)
        assert shapes[f"blk.{layer}.ffn_down_exps.weight"] == (8, spec.hidden_size, spec.intermediate_size)
        assert shapes[f"blk.{layer}.ffn_gate_inp.weight"] == (8, spec.hidden_size)
    assert not any(".ffn_gate.0." in name for name in shapes)


def test_norms_and_router_stay_f32_in_quantized_output(convert):
    reader, _ = _fields(convert(TinyMixtralSpec(), "Q8_0"))
    types = {t.name: t.tensor_type for t in reader.tensors}

    assert types["blk.0.ffn_gate_inp.weight"] == gguf.GGMLQuantizationType.F32
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert types["blk.0.ffn_gate_exps.weight"] == gguf.GGMLQuantizationType.Q8_0
