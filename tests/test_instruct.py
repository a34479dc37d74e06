"""Instruct or base comes from the model's data (chat template, catalog entry), never from its name."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mixtral_cli.convert.checkpoint import open_checkpoint
from mixtral_cli.convert.gguf_file import copy_metadata
from mixtral_cli.convert.hf_to_gguf import write_gguf
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions
from mixtral_cli.family.instruct import CHAT_TEMPLATE_KEY
from mixtral_cli.gguf_format.quant_types import quant_type
from mixtral_cli.sources.store import ModelStore, StoreEntry
from mixtral_cli.sources.tiny_model import MISTRAL_CHAT_TEMPLATE, TinyMixtralSpec


def converted_from(checkpoint: Path, folder: Path) -> Path:
    """``checkpoint`` copied into a folder named ``folder.name`` and converted, so only its name differs."""
    shutil.copytree(checkpoint, folder)
    output = folder.with_suffix(".gguf")
    write_gguf(open_checkpoint(folder), output, quant_type("Q8_0"))
    return output


@pytest.fixture(scope="module")
def instruct_model(build_checkpoint, tmp_path_factory) -> Path:
    return converted_from(build_checkpoint(TinyMixtralSpec(instruct=True)), tmp_path_factory.mktemp("i") / "model")


@pytest.fixture(scope="module")
def base_model(build_checkpoint, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("b") / "Mixtral-8x7B-Instruct-v0.1"  # a name that says the opposite
    return converted_from(build_checkpoint(TinyMixtralSpec()), folder)


def complete_json(mixtral, model: Path, *flags: str) -> dict:
    result = mixtral("complete", "-m", model, "--json", "-n", "1", *flags, "Hello")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_the_checkpoints_chat_template_reaches_the_gguf(instruct_model):
    import gguf

    field = gguf.GGUFReader(instruct_model).get_field(CHAT_TEMPLATE_KEY)
    assert field is not None and field.contents() == MISTRAL_CHAT_TEMPLATE


def test_an_instruct_checkpoint_in_a_folder_named_model_is_instruct(mixtral, instruct_model):
    data = complete_json(mixtral, instruct_model)
    assert (data["instruct"], data["instruct_source"]) == (True, "it has a chat template")
    assert data["prompt_format"] == "chat v1"


def test_a_base_checkpoint_whose_folder_says_instruct_is_base(mixtral, base_model):
    data = complete_json(mixtral, base_model)
    assert (data["instruct"], data["instruct_source"]) == (False, "it has no chat template")
    assert data["prompt_format"] == "raw"


def test_a_gguf_with_a_chat_template_is_instruct(base_model, tmp_path):
    import gguf

    with_template = tmp_path / "base-named.gguf"
    reader = gguf.GGUFReader(base_model)
    writer = gguf.GGUFWriter(with_template, "llama")
    copy_metadata(reader, writer)
    writer.add_chat_template(MISTRAL_CHAT_TEMPLATE)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with Engine(with_template, EngineOptions(ctx_size=256)) as engine:
        assert (engine.info.instruct, engine.info.instruct_source) == (True, "it has a chat template")


@pytest.mark.parametrize(("instruct", "name"), [(True, "8x7b-instruct:Q8_0"), (False, "8x7b:Q8_0")])
def test_the_catalog_entry_a_model_was_pulled_by_decides(instruct, name, instruct_model, base_model, mixtral):
    # Pulled GGUFs stay in the Hub cache as they were published: the catalog's word beats the file's.
    path = base_model if instruct else instruct_model
    ModelStore().add(
        StoreEntry(name, "test/tiny", "0" * 40, "Q8_0", "gguf", (str(path),), path.stat().st_size, instruct=instruct)
    )
    data = complete_json(mixtral, name)
    assert (data["instruct"], data["instruct_source"]) == (instruct, f"pulled as {name}")

    shown = mixtral("models", "show", name)
    assert shown.exit_code == 0, shown.stderr
    kind = "Instruct: chat format" if instruct else "base: plain completion"
    assert f"prompt: {kind} (pulled as {name})" in shown.stdout


@pytest.mark.parametrize(("model", "flag", "expected"), [("instruct", "--raw", "raw"), ("base", "--chat", "chat v1")])
def test_chat_and_raw_override_what_the_model_is(model, flag, expected, mixtral, request):
    data = complete_json(mixtral, request.getfixturevalue(f"{model}_model"), flag)
    assert data["prompt_format"] == expected


def test_models_show_reports_a_converted_models_template(mixtral, instruct_model):
    ModelStore().add(
        StoreEntry("test/tiny:Q8_0", "test/tiny", "0" * 40, "Q8_0", "converted", (str(instruct_model),), 1)
    )
    shown = mixtral("models", "show", "test/tiny:Q8_0")
    assert shown.exit_code == 0, shown.stderr
    assert re.search(r"^prompt: Instruct: chat format \(it has a chat template\)$", shown.stdout, re.M)
