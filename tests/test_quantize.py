"""`mixtral quantize`: the types, the output, and every guardrail."""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import gguf
import pytest

from mixtral_cli.tinymodel import TinyMixtralSpec, build_tiny_mixtral

from .helpers import run_mixtral, run_mixtral_process, with_default_sigint
from .reference import llama_cpp_logits, sentencepiece_ids


def _copy(checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(checkpoint, tmp_path / checkpoint.name))


def _tensor_types(path: Path) -> dict[str, gguf.GGMLQuantizationType]:
    return {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}


def _file_type(path: Path) -> int:
    return int(gguf.GGUFReader(path).get_field("general.file_type").contents())


def test_default_is_q4_k_m_through_llama_cpp(mixtral, tiny_checkpoint, tmp_path):
    output = tmp_path / "tiny.gguf"
    result = mixtral("quantize", tiny_checkpoint, "-o", output)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(output)
    assert _file_type(output) == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert gguf.GGMLQuantizationType.Q4_K in _tensor_types(output).values()
    assert "bits per weight" in result.stderr


def test_quantized_model_runs_close_to_the_f32_conversion(mixtral, tiny_checkpoint, convert, tmp_path):
    output = tmp_path / "tiny-Q6_K.gguf"
    assert mixtral("quantize", tiny_checkpoint, "--type", "q6_k", "-o", output).exit_code == 0
    ids = [1, *sentencepiece_ids(tiny_checkpoint, "The quick brown fox jumps over the lazy dog again and again.")]

    quantized = llama_cpp_logits(output, ids)
    reference = llama_cpp_logits(convert(TinyMixtralSpec(), "F32"), ids)
    assert (quantized.argmax(-1) == reference.argmax(-1)).mean() >= 0.8


@pytest.mark.parametrize("type_name", ["F32", "F16", "BF16", "Q8_0"])
def test_direct_types_skip_llama_cpp_and_set_the_file_type(type_name, mixtral, tiny_checkpoint, tmp_path):
    output = tmp_path / f"tiny-{type_name}.gguf"
    result = mixtral("quantize", tiny_checkpoint, "--type", type_name, "-o", output)

    assert result.exit_code == 0, result.stderr
    assert _file_type(output) == gguf.LlamaFileType[f"MOSTLY_{type_name}" if type_name != "F32" else "ALL_F32"]
    assert "Quantizing" not in result.stderr


def test_default_output_is_named_after_the_folder_and_type(mixtral, tiny_checkpoint, tmp_path):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    result = mixtral("quantize", checkpoint, "--type", "Q8_0")

    assert result.exit_code == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / f"{checkpoint.name}-Q8_0.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([checkpoint.name, f"{checkpoint.name}-Q8_0.gguf"])


def test_output_folder_gets_the_default_name(mixtral, tiny_checkpoint, tmp_path):
    result = mixtral("quantize", tiny_checkpoint, "--type", "Q8_0", "-o", tmp_path)

    assert result.exit_code == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / f"{tiny_checkpoint.name}-Q8_0.gguf"


def test_existing_output_needs_force(mixtral, tiny_checkpoint, tmp_path):
    output = tmp_path / "out.gguf"
    output.write_bytes(b"keep me")

    refused = mixtral("quantize", tiny_checkpoint, "--type", "Q8_0", "-o", output)
    assert refused.exit_code == 1
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert output.read_bytes() == b"keep me"

    forced = mixtral("quantize", tiny_checkpoint, "--type", "Q8_0", "-o", output, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert output.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize("type_name", ["Q2_K", "TQ1_0"])
def test_below_three_bits_needs_force_and_warns(type_name, mixtral, tiny_checkpoint, tmp_path):
    output = tmp_path / "low.gguf"
    refused = mixtral("quantize", tiny_checkpoint, "--type", type_name, "-o", output)
    assert refused.exit_code == 1
    assert "bits per weight" in refused.stderr and "--force" in refused.stderr
    assert not output.exists()

    forced = mixtral("quantize", tiny_checkpoint, "--type", type_name, "-o", output, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "loss of quality" in forced.stderr
    assert output.exists()


def test_types_that_need_an_importance_matrix_are_refused(mixtral, tiny_checkpoint, tmp_path):
    result = mixtral("quantize", tiny_checkpoint, "--type", "IQ2_XXS", "--force", "-o", tmp_path / "x.gguf")

    assert result.exit_code == 1
    assert "importance matrix" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_type_is_a_usage_error(mixtral, tiny_checkpoint):
    result = mixtral("quantize", tiny_checkpoint, "--type", "Q9_K")

    assert result.exit_code == 2
    assert "Q9_K" in result.stderr and "Q4_K_M" in result.stderr


def test_other_architecture_is_refused_by_name(mixtral, tiny_checkpoint, tmp_path):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    (checkpoint / "config.json").write_text(json.dumps(config))

    result = mixtral("quantize", checkpoint, "-o", tmp_path / "x.gguf")
    assert result.exit_code == 1
    assert "Qwen2ForCausalLM" in result.stderr and "not Mixtral" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda c: (c / "config.json").unlink(), "config.json"),
        (lambda c: (c / "tokenizer.model").unlink(), "tokenizer.model"),
        (lambda c: (c / "config.json").write_text("{not json"), "config.json"),
        (lambda c: (c / "model.safetensors").unlink(), "safetensors"),
        (lambda c: (c / "tokenizer.model").write_bytes(b"garbage"), "tokenizer.model"),
    ],
    ids=["no-config", "no-tokenizer", "bad-config", "no-weights", "bad-tokenizer"],
)
def test_missing_or_corrupt_files_are_named(damage, named, mixtral, tiny_checkpoint, tmp_path):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    damage(checkpoint)

    result = mixtral("quantize", checkpoint, "--type", "F16", "-o", tmp_path / "x.gguf")
    assert result.exit_code == 1
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.partial").exists()


def test_truncated_safetensors_is_named(mixtral, tiny_checkpoint, tmp_path):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    result = mixtral("quantize", checkpoint, "-o", tmp_path / "x.gguf")
    assert result.exit_code == 1
    assert "model.safetensors is truncated" in result.stderr


def test_missing_shard_is_named(mixtral, build_checkpoint, tmp_path):
    checkpoint = _copy(build_checkpoint(TinyMixtralSpec(shards=3)), tmp_path)
    (checkpoint / "model-00002-of-00003.safetensors").unlink()

    result = mixtral("quantize", checkpoint, "-o", tmp_path / "x.gguf")
    assert result.exit_code == 1
    assert "model-00002-of-00003.safetensors" in result.stderr


def test_duplicate_consolidated_weights_are_ignored(mixtral, tiny_checkpoint, convert, tmp_path):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    # Mistral's own layout of the same weights, as some Hub repos carry beside the transformers files.
    (checkpoint / "consolidated.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:4096])
    output = tmp_path / "out.gguf"

    result = mixtral("quantize", checkpoint, "--type", "F32", "-o", output)
    assert result.exit_code == 0, result.stderr
    assert output.read_bytes() == convert(TinyMixtralSpec(), "F32").read_bytes()


def test_missing_source_is_one_line(mixtral, tmp_path):
    result = mixtral("quantize", tmp_path / "nowhere")

    assert result.exit_code == 1
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr


def test_short_disk_is_refused_before_writing(mixtral, tiny_checkpoint, tmp_path):
    # A sparse checkpoint of 15 TB: real files on a real filesystem, taking no space.
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    _add_sparse_tensor(checkpoint / "model.safetensors", "model.huge.weight", n_bytes=15 * 2**40)

    result = mixtral("quantize", checkpoint, "--type", "F16", "-o", tmp_path / "x.gguf")
    assert result.exit_code == 1
    assert "free but this needs" in result.stderr
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.partial").exists()


def _add_sparse_tensor(weights: Path, name: str, *, n_bytes: int) -> None:
    """Rewrite a safetensors file with one more BF16 tensor whose bytes are a hole in the file."""
    data = weights.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    header[name] = {"dtype": "BF16", "shape": [n_bytes // 2], "data_offsets": [len(body), len(body) + n_bytes]}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(weights, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + body)
        f.truncate(8 + len(encoded) + len(body) + n_bytes)


def _slow_checkpoint(tmp_path: Path) -> Path:
    # Large enough (about 300 MB) that conversion is still running when the signal arrives.
    spec = TinyMixtralSpec(hidden_size=1024, intermediate_size=2048, num_layers=4, num_heads=8, num_kv_heads=2)
    return build_tiny_mixtral(tmp_path / "slow", spec)


def _start_and_wait_for_partial(checkpoint: Path, output: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "quantize", str(checkpoint), "--type", "F32", "-o", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=with_default_sigint,
    )
    partial = output.with_name(output.name + ".partial")
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 10 * 2**20):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return process


def test_ctrl_c_leaves_no_output_and_no_partial(tmp_path):
    output = tmp_path / "out.gguf"
    process = _start_and_wait_for_partial(_slow_checkpoint(tmp_path), output)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow"]


def test_killed_run_leaves_only_a_partial_that_the_next_run_replaces(tmp_path):
    output = tmp_path / "out.gguf"
    checkpoint = _slow_checkpoint(tmp_path)
    process = _start_and_wait_for_partial(checkpoint, output)
    process.kill()
    process.wait()
    assert not output.exists()
    assert output.with_name("out.gguf.partial").exists()

    rerun = run_mixtral("quantize", checkpoint, "--type", "F32", "-o", output)
    assert rerun.returncode == 0, rerun.stderr
    assert output.exists() and not output.with_name("out.gguf.partial").exists()


def test_python_dash_m_runs_the_cli(tiny_checkpoint):
    result = run_mixtral_process("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("mixtral ")
