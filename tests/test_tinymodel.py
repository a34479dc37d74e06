"""The tiny Mixtral builder: exact Hub layout, the real tokenizer, deterministic from a seed."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from mixtral_cli.sources.tiny_model import TinyMixtralSpec, build_tiny_mixtral, tokenizer_model_path

MISTRAL_COMMON_FILES = {"v1": "tokenizer.model.v1", "v3": "mistral_instruct_tokenizer_240323.model.v3"}


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_tokenizer_is_mistral_commons_own_file(version):
    shipped = resources.files("mistral_common") / "data" / MISTRAL_COMMON_FILES[version]
    assert tokenizer_model_path(version).read_bytes() == shipped.read_bytes()


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_tokenizer_loads_as_mistral_commons(version, build_checkpoint):
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    checkpoint = build_checkpoint(TinyMixtralSpec(tokenizer=version))
    reference = getattr(MistralTokenizer, version)().instruct_tokenizer.tokenizer
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["vocab_size"] == reference.n_words


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    first = build_tiny_mixtral(tmp_path / "a", TinyMixtralSpec(seed=3))
    again = build_tiny_mixtral(tmp_path / "b", TinyMixtralSpec(seed=3))
    other = build_tiny_mixtral(tmp_path / "c", TinyMixtralSpec(seed=4))

    assert (first / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()


def test_transformers_reads_the_config_and_weights_as_bf16(tiny_checkpoint):
    from transformers import AutoConfig, MixtralForCausalLM

    config = AutoConfig.from_pretrained(tiny_checkpoint)
    model = MixtralForCausalLM.from_pretrained(tiny_checkpoint)
    spec = TinyMixtralSpec()

    assert config.model_type == "mixtral"
    assert (config.num_local_experts, config.num_experts_per_tok) == (spec.num_experts, spec.experts_per_token)
    assert str(model.dtype) == "torch.bfloat16"


def test_the_shapes_parameter_count_is_what_transformers_counts(build_checkpoint):
    from transformers import MixtralForCausalLM

    spec = TinyMixtralSpec(num_layers=3, num_experts=6, experts_per_token=3, num_heads=4, num_kv_heads=1)
    model = MixtralForCausalLM.from_pretrained(build_checkpoint(spec))

    assert model.num_parameters() == spec.shape.parameter_count()


def test_shards_come_with_an_index_covering_every_tensor(build_checkpoint):
    checkpoint = build_checkpoint(TinyMixtralSpec(shards=3))
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in checkpoint.glob("*.safetensors"))

    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == shards
    single = build_checkpoint(TinyMixtralSpec())
    from mixtral_cli.convert.safetensors import read_index

    assert set(index["weight_map"]) == set(read_index(single / "model.safetensors"))
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in read_index(single / "model.safetensors").values())


def test_cli_writes_a_checkpoint_and_prints_its_folder(mixtral, tmp_path):
    result = mixtral("tiny", tmp_path / "t", "--layers", "1", "--experts", "4", "--tokenizer", "v3")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "t")
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_local_experts"], config["vocab_size"]) == (1, 4, 32768)


def test_cli_refuses_an_impossible_shape_in_one_line(mixtral, tmp_path):
    result = mixtral("tiny", tmp_path / "t", "--hidden-size", "100", "--heads", "8")

    assert result.exit_code == 1
    assert "no valid shape" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("instruct", [True, False])
def test_instruct_gives_tokenizer_config_mistrals_chat_template(instruct, mixtral, tmp_path):
    from mixtral_cli.sources.tiny_model import MISTRAL_CHAT_TEMPLATE

    result = mixtral("tiny", tmp_path / "t", "--layers", "1", *(["--instruct"] if instruct else []))

    assert result.exit_code == 0, result.stderr
    config = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    assert config.get("chat_template") == (MISTRAL_CHAT_TEMPLATE if instruct else None)


def test_cli_names_a_folder_it_cannot_write_with_the_reason(mixtral, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = mixtral("tiny", tmp_path / "a-file" / "tiny")

    assert result.exit_code == 1
    assert f"{tmp_path / 'a-file'} is not a folder." in result.stderr and "Traceback" not in result.stderr
