"""`mixtral quantize` with a GGUF as source: requantizing, and rewriting the old per-expert layout."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .helpers import write_gguf_of_architecture, write_legacy_layout
from .reference import llama_cpp_logits, sentencepiece_ids


def _tensor_bytes(path: Path) -> dict[str, bytes]:
    return {t.name: bytes(np.asarray(t.data).tobytes()) for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def legacy_f16(convert, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("legacy") / "legacy.gguf"
    write_legacy_layout(convert(TinyMixtralSpec(), "F16"), output)
    return output


def test_legacy_layout_is_rewritten_with_the_same_bytes(mixtral, legacy_f16, convert, tmp_path):
    output = tmp_path / "current.gguf"
    result = mixtral("quantize", legacy_f16, "-o", output)

    assert result.exit_code == 0, result.stderr
    assert "one tensor per expert" in result.stderr
    assert _tensor_bytes(output) == _tensor_bytes(convert(TinyMixtralSpec(), "F16"))


def test_legacy_layout_is_rewritten_then_quantized(mixtral, legacy_f16, tiny_checkpoint, tmp_path):
    output = tmp_path / "current-Q4_K_M.gguf"
    result = mixtral("quantize", legacy_f16, "--type", "Q4_K_M", "-o", output)

    assert result.exit_code == 0, result.stderr
    names = set(_tensor_bytes(output))
    assert "blk.0.ffn_gate_exps.weight" in names and "blk.0.ffn_gate.0.weight" not in names
    ids = [1, *sentencepiece_ids(tiny_checkpoint, "Quantized from an old file, still a Mixtral.")]
    assert np.isfinite(llama_cpp_logits(output, ids)).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current-Q4_K_M.gguf"]


def test_current_gguf_without_type_asks_for_one(mixtral, convert):
    result = mixtral("quantize", convert(TinyMixtralSpec(), "F16"))

    assert result.exit_code == 1
    assert "--type" in result.stderr


def test_requantizing_a_quantized_gguf_warns(mixtral, convert, tmp_path):
    output = tmp_path / "re.gguf"
    result = mixtral("quantize", convert(TinyMixtralSpec(), "Q8_0"), "--type", "Q4_K_M", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert "already quantized" in result.stderr
    assert int(gguf.GGUFReader(output).get_field("general.file_type").contents()) == gguf.LlamaFileType.MOSTLY_Q4_K_M


def test_gguf_of_another_architecture_is_refused(mixtral, tmp_path):
    other = write_gguf_of_architecture(tmp_path / "qwen.gguf", "qwen2")

    result = mixtral("quantize", other, "--type", "Q8_0")
    assert result.exit_code == 1
    assert "qwen2" in result.stderr and "not Mixtral" in result.stderr


def test_truncated_gguf_is_one_clear_error(mixtral, convert, tmp_path):
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(convert(TinyMixtralSpec(), "F16").read_bytes()[:100_000])

    result = mixtral("quantize", truncated, "--type", "Q4_K_M")
    assert result.exit_code == 1
    assert "truncated or corrupt" in result.stderr and "Traceback" not in result.stderr


def test_file_that_is_not_gguf_is_refused(mixtral, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("hello")

    result = mixtral("quantize", fake, "--type", "Q4_K_M")
    assert result.exit_code == 1
    assert "neither a model folder nor a GGUF file" in result.stderr
