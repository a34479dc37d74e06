"""`mixtral quantize`: the types, the output, and every guardrail."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import gguf
import pytest

from mixtral_cli.sources.tiny_model import TinyMixtralSpec, build_tiny_mixtral

from .helpers import files_of_one_mebibyte_at_most, run_mixtral, run_mixtral_process, with_default_signals
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
    assert not (tmp_path / "x.gguf").exists() and not _partials(tmp_path / "x.gguf")


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
    assert not (tmp_path / "x.gguf").exists() and not _partials(tmp_path / "x.gguf")


def test_an_output_that_cannot_be_written_is_named_with_the_reason(mixtral, tiny_checkpoint, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    output = tmp_path / "a-file" / "x.gguf"

    result = mixtral("quantize", tiny_checkpoint, "--type", "F16", "-o", output)

    assert result.exit_code == 1
    assert f"Cannot write {output}: {tmp_path / 'a-file'} is not a folder." in result.stderr
    assert "GiB free" not in result.stderr and "Traceback" not in result.stderr


def test_a_disk_that_fills_up_while_writing_is_named_and_leaves_nothing(tiny_checkpoint, tmp_path):
    output = tmp_path / "x.gguf"
    result = run_mixtral_process(
        "quantize", tiny_checkpoint, "--type", "F16", "-o", output, preexec_fn=files_of_one_mebibyte_at_most
    )

    assert result.returncode == 1
    assert f"Cannot write {output}: File too large." in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


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
        preexec_fn=with_default_signals,
    )
    _wait_for_partial(output, process, n_bytes=10 * 2**20)
    return process


def _partials(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f"{output.name}.*.partial"))


def _wait_for_partial(output: Path, process: subprocess.Popen[str] | None = None, *, n_bytes: int) -> None:
    deadline = time.monotonic() + 60
    while not any(_size(p) > n_bytes for p in _partials(output)):
        assert process is None or process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed or removed since it was listed
        return 0


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
    assert _partials(output)

    rerun = run_mixtral("quantize", checkpoint, "--type", "F32", "-o", output)
    assert rerun.returncode == 0, rerun.stderr
    assert output.exists() and not _partials(output)


# Quantizing this F16 GGUF to Q4_K_M on one thread takes seconds: time to interrupt the quantizer itself.
SLOW_SPEC = TinyMixtralSpec(hidden_size=1024, intermediate_size=2048, num_layers=4, num_heads=8, num_kv_heads=2)


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def _files_open_by(pid: int) -> list[str]:
    opened = []
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process has ended
        return []
    for fd in descriptors:
        try:
            opened.append(str(fd.readlink()))
        except OSError:  # closed since it was listed
            continue
    return opened


def _gone(pid: int, *, within_s: float) -> bool:
    """Whether process ``pid`` ended (exited, or a zombie left to be reaped) within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def test_ctrl_c_while_llama_quantizes_stops_the_quantizer_and_leaves_nothing(convert, tmp_path):
    source, output = convert(SLOW_SPEC, "F16"), tmp_path / "out.gguf"
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "quantize", source, "--type", "Q4_K_M", "--threads", "1", "-o", output],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # whatever the test runner ignores
    )
    _wait_for_partial(output, process, n_bytes=2**20)
    quantizers = _children(process.pid)
    assert quantizers

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr
    assert all(_gone(pid, within_s=5) for pid in quantizers)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_quantize_leaves_nothing_writing_the_output(convert, tmp_path):
    from mixtral_cli.convert.pipeline import quantize_model

    source, output = convert(SLOW_SPEC, "F16"), tmp_path / "out.gguf"

    def interrupt_while_writing() -> None:
        _wait_for_partial(output, n_bytes=2**20)
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_while_writing)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        quantize_model(source, type_name="Q4_K_M", output=output, threads=1)
    interrupter.join()

    still_open = [f for pid in (os.getpid(), *_children(os.getpid())) for f in _files_open_by(pid)]
    assert not [f for f in still_open if output.name in f]
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_runs_the_cli(tiny_checkpoint):
    result = run_mixtral_process("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("mixtral ")
