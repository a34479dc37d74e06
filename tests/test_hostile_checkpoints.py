"""Checkpoints that lie: a config.json of the wrong types or shape, safetensors headers whose offsets,
shapes and dtypes do not add up, an index that points elsewhere. Each is named in one line before any
conversion starts, and no output is left; `mixtral tiny` of a shape that cannot be allocated leaves nothing."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_cli.convert.safetensors import read_index


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path) -> Path:
    """A copy of the tiny checkpoint to garble."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint"))


def quantize(mixtral, source: Path, tmp_path: Path):
    output = tmp_path / "out.gguf"
    result = mixtral("quantize", source, "--type", "Q8_0", "-o", output)
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists() and not list(tmp_path.glob("out.gguf.*"))
    return result.stderr.splitlines()[0]


def edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


# -- config.json ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"architectures": "MixtralForCausalLM"}, 'architectures is "MixtralForCausalLM", not a list of names'),
        ({"architectures": 5}, "architectures is 5, not a list of names"),
        ({"architectures": {"0": "MixtralForCausalLM"}}, "architectures is {"),
        ({"architectures": [5]}, "architectures is [5], not a list of names"),
        ({"hidden_size": "256"}, 'hidden_size is "256", not a whole number from 1 to 2147483647'),
        ({"hidden_size": 256.5}, "hidden_size is 256.5, not a whole number"),
        ({"hidden_size": True}, "hidden_size is true, not a whole number"),
        ({"hidden_size": -256}, "hidden_size is -256, not a whole number"),
        ({"hidden_size": 2**40}, "hidden_size is 1099511627776, not a whole number"),
        ({"num_attention_heads": 0}, "num_attention_heads is 0, not a whole number"),
        ({"num_hidden_layers": [2]}, "num_hidden_layers is [2], not a whole number"),
        ({"num_key_value_heads": 3}, "num_key_value_heads is 3, which does not divide the 8 attention heads"),
        ({"num_experts_per_tok": 9}, "num_experts_per_tok is 9, more than the 8 experts"),
        ({"rms_norm_eps": "1e-5"}, 'rms_norm_eps is "1e-5", not a number above 0'),
        ({"rms_norm_eps": 0}, "rms_norm_eps is 0, not a number above 0"),
        ({"rope_theta": -1}, "rope_theta is -1, not a number above 0"),
        ({"tie_word_embeddings": "no"}, 'tie_word_embeddings is "no", not true or false'),
    ],
)
def test_a_config_value_of_the_wrong_type_or_range_is_named_with_its_key(changes, said, checkpoint, mixtral, tmp_path):
    edit_config(checkpoint, **changes)

    error = quantize(mixtral, checkpoint, tmp_path)
    assert error.startswith(f"Error: {checkpoint / 'config.json'}: {said}")


def test_a_missing_size_is_named(checkpoint, mixtral, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    del config["num_local_experts"]
    (checkpoint / "config.json").write_text(json.dumps(config))

    assert quantize(mixtral, checkpoint, tmp_path) == (
        f"Error: {checkpoint / 'config.json'} lacks num_local_experts; it is not a complete Mixtral config."
    )


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"[]", "is not a JSON object"),
        (b"{", "is not valid JSON"),
        (b'{"a": "\xff"}', "is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
    ],
)
def test_a_config_that_is_no_json_object_is_named(content, said, checkpoint, mixtral, tmp_path):
    (checkpoint / "config.json").write_bytes(content)

    assert quantize(mixtral, checkpoint, tmp_path) == f"Error: {checkpoint / 'config.json'} {said}."


def test_a_config_that_is_a_folder_is_named(checkpoint, mixtral, tmp_path):
    (checkpoint / "config.json").unlink()
    (checkpoint / "config.json").mkdir()

    assert (
        quantize(mixtral, checkpoint, tmp_path) == f"Error: Cannot read {checkpoint / 'config.json'}: Is a directory."
    )


# -- safetensors headers ----------------------------------------------------------------------------------


def rewrite_header(file: Path, edit) -> None:
    """Give ``file`` the header ``edit`` makes of its own, keeping the data bytes as they are."""
    data = file.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    edited = edit(header)
    encoded = edited if isinstance(edited, bytes) else json.dumps(edited).encode()
    file.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length :])


def first_tensor(header: dict) -> str:
    return next(name for name in header if name != "__metadata__")


def with_entry(**changes: object):
    def edit(header: dict) -> dict:
        header[first_tensor(header)].update(changes)
        return header

    return edit


def overlapping(header: dict) -> dict:
    names = [name for name in header if name != "__metadata__"]
    a, b = header[names[0]], header[names[1]]
    b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + b["data_offsets"][1] - b["data_offsets"][0]]
    return header


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (with_entry(data_offsets=["0", "512"]), "has a corrupt entry for"),
        (with_entry(data_offsets=[0]), "has a corrupt entry for"),
        (with_entry(data_offsets=[512, 0]), "has a corrupt entry for"),
        (with_entry(data_offsets=[True, 513]), "has a corrupt entry for"),
        (with_entry(shape=[-1, -256]), "has a corrupt entry for"),
        (with_entry(shape=[256.0, 1.0]), "has a corrupt entry for"),
        (with_entry(shape="256"), "has a corrupt entry for"),
        (with_entry(dtype=["BF16"]), "has a corrupt entry for"),
        (with_entry(dtype="I64"), "as I64; only BF16, F16 and F32 are read"),
        (with_entry(dtype=None), "has a corrupt entry for"),
        (with_entry(data_offsets=[2**62, 2**62 + 512]), "has a corrupt entry for"),
        (overlapping, "in the same bytes"),
        (lambda header: {**header, first_tensor(header): "BF16"}, "has a corrupt entry for"),
        (lambda header: b"[" * 50_000 + b"]" * 50_000, "has a corrupt header"),
        (lambda header: b'{"a": "\xff"}', "has a corrupt header"),
    ],
)
def test_a_safetensors_header_that_lies_is_named_in_one_line(edit, said, checkpoint, mixtral, tmp_path):
    rewrite_header(checkpoint / "model.safetensors", edit)

    error = quantize(mixtral, checkpoint, tmp_path)
    assert error.startswith(f"Error: {checkpoint / 'model.safetensors'}") and said in error


def test_offsets_past_the_end_of_the_file_are_named(checkpoint):
    file = checkpoint / "model.safetensors"
    rewrite_header(file, lambda header: header)
    size = file.stat().st_size
    file.write_bytes(file.read_bytes()[: size - 1])

    with pytest.raises(ValueError, match="is truncated: .* ends past the end of the file"):
        read_index(file)


def test_a_very_long_tensor_name_is_cut_in_the_message(checkpoint, mixtral, tmp_path):
    def renamed(header: dict) -> dict:
        name = first_tensor(header)
        header["x" * 100_000] = {**header.pop(name), "dtype": "I64"}
        return header

    rewrite_header(checkpoint / "model.safetensors", renamed)

    assert len(quantize(mixtral, checkpoint, tmp_path)) < 400


# -- the index of a sharded checkpoint ------------------------------------------------------------------


@pytest.fixture
def sharded(build_checkpoint, tmp_path) -> Path:
    from mixtral_cli.sources.tiny_model import TinyMixtralSpec

    return Path(shutil.copytree(build_checkpoint(TinyMixtralSpec(shards=2)), tmp_path / "sharded"))


@pytest.mark.parametrize("file_name", ["../model.safetensors", "/etc/passwd", "", 5, ".."])
def test_an_index_that_names_a_file_outside_the_folder_is_refused(file_name, sharded, mixtral, tmp_path):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = file_name
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))

    assert "has a weight_map that is not tensor names to file names" in quantize(mixtral, sharded, tmp_path)


def test_a_tensor_in_two_shards_is_refused(sharded, mixtral, tmp_path):
    first, second = sorted(sharded.glob("model-*.safetensors"))
    name = first_tensor(json.loads(first.read_bytes()[8 : 8 + struct.unpack("<Q", first.read_bytes()[:8])[0]]))

    def renamed(header: dict) -> dict:
        other = first_tensor(header)
        header[name] = header.pop(other)
        return header

    rewrite_header(second, renamed)

    assert f"has tensor {name} in both {first.name} and {second.name}" in quantize(mixtral, sharded, tmp_path)


# -- mixtral tiny -----------------------------------------------------------------------------------------


def test_tiny_of_a_shape_that_cannot_be_allocated_leaves_nothing(tmp_path):
    # A shape this machine's memory holds (so the check before writing lets it through), in a child whose
    # address space cannot: the allocation fails for real, half-way through the folder.
    child = (
        "import resource, sys\n"
        "from mixtral_cli.cli import main\n"
        "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 2**29, resource.RLIM_INFINITY))\n"
        "main(sys.argv[1:])\n"
    )
    target = tmp_path / "huge"
    result = subprocess.run(
        [sys.executable, "-c", child, "tiny", str(target), "--hidden-size", "8192"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("Error: A tiny Mixtral of this shape cannot be allocated: ")
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_tiny_of_a_shape_past_this_machines_memory_is_refused_before_writing(mixtral, tmp_path):
    result = mixtral("tiny", tmp_path / "huge", "--hidden-size", "4000000")

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Writing this checkpoint takes about ")
    assert list(tmp_path.iterdir()) == []


def test_tiny_into_a_folder_that_fails_keeps_what_the_folder_held(mixtral, tmp_path):
    target = tmp_path / "existing"
    target.mkdir()
    (target / "notes.txt").write_text("mine")

    assert mixtral("tiny", target, "--hidden-size", "4000000").exit_code == 1
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_tiny_into_an_existing_folder_adds_the_checkpoint_beside_what_it_held(mixtral, tmp_path):
    target = tmp_path / "existing"
    target.mkdir()
    (target / "notes.txt").write_text("mine")

    result = mixtral("tiny", target)

    assert result.exit_code == 0, result.stderr
    assert {"notes.txt", "config.json", "model.safetensors"} <= {p.name for p in target.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]
