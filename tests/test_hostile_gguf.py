"""GGUF hyperparameters that llama.cpp asserts on (or divides by): each is refused by the header reader, in
one line naming the key, before llama.cpp loads the file and aborts the process."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_cli.base.errors import GGUFError, UnsupportedArchitectureError
from mixtral_cli.gguf_format.header import inspect_gguf

VALID = {
    "llama.context_length": 64,
    "llama.embedding_length": 8,
    "llama.block_count": 1,
    "llama.feed_forward_length": 16,
    "llama.attention.head_count": 2,
    "llama.attention.head_count_kv": 1,
    "llama.expert_count": 8,
    "llama.expert_used_count": 2,
    "llama.rope.freq_base": 1e6,
    "llama.attention.layer_norm_rms_epsilon": 1e-5,
    "general.file_type": 0,
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
}
TOKENS = ["<unk>", "<s>", "</s>", "▁a", "b"]


def write_header(path: Path, changes: dict[str, object] | None = None) -> Path:
    """A small Mixtral GGUF with VALID's hyperparameters, ``changes`` applied (None removes a key).

    A value's GGUF type follows its Python type: int → UINT32 (INT32 when negative), float → FLOAT32, str,
    bool, list → ARRAY.
    """
    import gguf
    import numpy as np

    values = {**VALID, **(changes or {})}
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            (writer.add_uint32 if 0 <= value < 2**32 else writer.add_int64)(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    if "tokenizer.ggml.tokens" not in values:
        writer.add_token_list(TOKENS)
    if "tokenizer.ggml.scores" not in values:
        writer.add_token_scores([0.0] * len(TOKENS))
    writer.add_tensor("token_embd.weight", np.zeros((len(TOKENS), 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_valid_header_is_accepted(tmp_path):
    assert inspect_gguf(write_header(tmp_path / "ok.gguf")).expert_count == 8


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"llama.block_count": "2"}, "llama.block_count is '2', not a whole number"),
        ({"llama.block_count": 513}, "llama.block_count 513 is above 512, llama.cpp's most layers (512)"),
        ({"llama.block_count": 0}, "llama.block_count 0 is below 1"),
        ({"llama.block_count": None}, "llama.block_count is missing"),
        ({"llama.expert_count": 1025}, "llama.expert_count 1025 is above 1024, llama.cpp's most experts"),
        ({"llama.expert_count": "8"}, "llama.expert_count is '8', not a whole number"),
        ({"llama.expert_count": True}, "llama.expert_count is True, not a whole number"),
        ({"llama.expert_used_count": 9}, "llama.expert_used_count (9) is more than llama.expert_count"),
        ({"llama.expert_used_count": 0}, "llama.expert_used_count 0 is below 1"),
        ({"llama.expert_used_count": [2]}, "llama.expert_used_count is a list, not one number"),
        ({"llama.attention.head_count": 3}, "llama.attention.head_count (3) does not divide llama.embedding_length"),
        ({"llama.attention.head_count": 0}, "llama.attention.head_count 0 is below 1"),
        ({"llama.attention.head_count": [2]}, "llama.attention.head_count is a list"),
        ({"llama.attention.head_count_kv": 0}, "llama.attention.head_count_kv 0 is below 1"),
        ({"llama.attention.head_count_kv": 3}, "llama.attention.head_count_kv (3) does not divide"),
        ({"llama.context_length": 0}, "llama.context_length 0 is below 1"),
        ({"llama.context_length": 2**40}, "llama.context_length 1099511627776 is above 2147483647"),
        ({"llama.context_length": "4096"}, "llama.context_length is '4096', not a whole number"),
        ({"llama.embedding_length": -8}, "llama.embedding_length -8 is below 1"),
        ({"llama.embedding_length": 2.5}, "llama.embedding_length is 2.5, not a whole number"),
        ({"llama.feed_forward_length": "x"}, "llama.feed_forward_length is 'x', not a whole number"),
        ({"llama.rope.freq_base": float("nan")}, "llama.rope.freq_base nan is not a finite number"),
        ({"llama.rope.freq_base": -1.0}, "llama.rope.freq_base -1 is not above 0"),
        ({"llama.rope.freq_base": "1e6"}, "llama.rope.freq_base is '1e6', not a number"),
        ({"llama.attention.layer_norm_rms_epsilon": 0.0}, "llama.attention.layer_norm_rms_epsilon 0 is not above 0"),
        ({"llama.rope.scaling.type": "bogus"}, "llama.rope.scaling.type is 'bogus', not one of none, linear"),
        ({"llama.rope.scaling.factor": float("inf")}, "llama.rope.scaling.factor inf is not a finite number"),
        ({"llama.rope.dimension_count": 3}, "llama.rope.dimension_count (3) is odd"),
        ({"llama.vocab_size": 6}, "llama.vocab_size is 6 but tokenizer.ggml.tokens holds 5"),
        ({"tokenizer.ggml.tokens": [1, 2, 3]}, "tokenizer.ggml.tokens is missing or not a list of strings"),
        ({"tokenizer.ggml.scores": [0.0, 1.0]}, "tokenizer.ggml.scores does not hold one entry per token (5)"),
        ({"tokenizer.ggml.bos_token_id": 5}, "tokenizer.ggml.bos_token_id 5 is above 4, the last of the 5 tokens"),
        ({"tokenizer.ggml.eos_token_id": "2"}, "tokenizer.ggml.eos_token_id is '2', not a whole number"),
        ({"general.file_type": "Q4_K_M"}, "general.file_type is 'Q4_K_M', not a whole number"),
    ],
)
def test_a_hyperparameter_llama_cpp_would_fail_on_is_refused_naming_the_key(tmp_path, changes, refusal):
    path = write_header(tmp_path / "lying.gguf", changes)

    with pytest.raises(GGUFError) as caught:
        inspect_gguf(path)

    assert refusal in caught.value.message
    assert caught.value.message.startswith(f"{path} is corrupt: ")
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"llama.block_count": 513}, "llama.block_count"),  # GGML_ASSERT(n_layer <= LLAMA_MAX_LAYERS)
        ({"llama.expert_used_count": 9}, "llama.expert_used_count"),  # GGML_ASSERT(n_expert_used <= n_expert)
        ({"llama.attention.head_count_kv": 0}, "llama.attention.head_count_kv"),  # n_head / n_head_kv
        ({"llama.rope.scaling.type": "bogus"}, "llama.rope.scaling.type"),  # GGML_ASSERT(type != UNSPECIFIED)
    ],
)
def test_a_model_llama_cpp_would_abort_on_ends_in_one_line_from_the_cli(tmp_path, changes, key):
    path = write_header(tmp_path / "lying.gguf", changes)

    result = subprocess.run(
        [sys.executable, "-m", "mixtral_cli", "complete", "-m", str(path), "Hi"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )

    assert result.returncode == 1
    assert f"is corrupt: {key}" in result.stderr
    assert "GGML_ASSERT" not in result.stderr


# Lies of every GGUF value type for the fuzz below.
LIES: list[object] = [0, 1, 2, 3, 7, 9, 512, 513, 1024, 1025, 2**31, 2**32 - 1, -1, -(2**40), 0.0, -1.5, 1e-40,
                      float("nan"), float("inf"), True, False, "", "8", "yarn", "bogus", [], [1, 2], ["a"]]  # fmt: skip


def test_every_hyperparameter_lie_loads_or_is_refused_naming_its_key(tmp_path):
    rng = random.Random(19)
    keys = [*VALID, "llama.rope.scaling.type", "llama.rope.dimension_count", "llama.vocab_size"]
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(300):
        key, lie = rng.choice(keys), rng.choice(LIES)
        path = write_header(tmp_path / f"fuzz{case}.gguf", {key: lie})
        try:
            inspect_gguf(path)
            outcomes["loaded"] += 1
        except (GGUFError, UnsupportedArchitectureError) as exc:  # no experts: a dense llama
            outcomes["refused"] += 1
            assert "\n" not in exc.message
            dense = isinstance(exc, UnsupportedArchitectureError) and key == "llama.expert_count"
            assert dense or any(k in exc.message for k in (*keys, "tokenizer.ggml.tokens")), exc.message
        path.unlink()
    assert outcomes["loaded"] and outcomes["refused"]
