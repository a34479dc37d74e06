"""LoRA adapters as a user meets them: `mixtral quantize ADAPTER_DIR`, `--lora` on the commands that run a
model, `--json`, and `/lora` in chat."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from mixtral_cli.gguf_format.header import inspect_gguf

from .helpers import split_gguf
from .lora_reference import HandAdapter
from .test_lora import SPEC, attention_adapter


@pytest.fixture(scope="module")
def base_model(convert) -> Path:
    return convert(SPEC, "Q8_0")


@pytest.fixture(scope="module")
def adapter_folder(build_checkpoint, tmp_path_factory) -> Path:
    adapter = attention_adapter(np.random.default_rng(11), r=8, alpha=64.0)  # strong: answers change
    return adapter.save(tmp_path_factory.mktemp("lora") / "samsum-lora", base=build_checkpoint(SPEC))


@pytest.fixture(scope="module")
def adapter(adapter_folder, tmp_path_factory) -> Path:
    from .helpers import run_mixtral

    output = tmp_path_factory.mktemp("gguf") / "samsum-lora.gguf"
    done = run_mixtral("quantize", adapter_folder, "-o", output)
    assert done.returncode == 0, done.stderr
    return output


def complete_json(mixtral, *args) -> dict:
    result = mixtral("complete", "--raw", "--temperature", "0", "-n", "12", "-c", "256", "--json", *args, "Once")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_quantize_writes_an_f16_gguf_adapter_and_prints_its_path(mixtral, adapter_folder, tmp_path):
    result = mixtral("quantize", adapter_folder, "-o", tmp_path)

    assert result.exit_code == 0, result.stderr
    output = Path(result.stdout.strip())
    assert output == tmp_path / "samsum-lora-F16.gguf"
    reader = gguf.GGUFReader(output)
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == 64.0
    assert {t.tensor_type.name for t in reader.tensors} == {"F16"}


def test_quantize_refuses_a_model_type_for_an_adapter(mixtral, adapter_folder, tmp_path):
    result = mixtral("quantize", adapter_folder, "--type", "Q4_K_M", "-o", tmp_path)

    assert result.exit_code == 1
    assert "A LoRA adapter is written as F32, F16, BF16, Q8_0, not Q4_K_M." in result.stderr
    assert not list(tmp_path.iterdir())


def test_lora_changes_the_answer_and_json_reports_it(mixtral, base_model, adapter, build_checkpoint):
    plain = complete_json(mixtral, "-m", base_model)
    adapted = complete_json(mixtral, "-m", base_model, "--lora", adapter)

    assert plain["loras"] == []
    base = str(build_checkpoint(SPEC))
    assert adapted["loras"] == [{"path": str(adapter), "scale": 1.0, "name": "samsum-lora", "base_model": base}]
    assert adapted["text"] != plain["text"]


def test_lora_at_scale_zero_answers_as_the_base_model(mixtral, base_model, adapter):
    plain = complete_json(mixtral, "-m", base_model)
    zero = complete_json(mixtral, "-m", base_model, "--lora", f"{adapter}:0")

    assert zero["text"] == plain["text"]
    assert zero["loras"][0]["scale"] == 0.0


def test_an_adapter_for_another_model_is_one_line_before_the_model_loads(mixtral, convert, adapter):
    other = convert()  # the default tiny shape: hidden size 256
    result = mixtral("complete", "-m", other, "--lora", adapter, "--verbose", "Once")

    assert result.exit_code == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error == [
        f"Error: {adapter.name} does not fit {other.name}: it was made for 128 hidden size, the model has 256."
    ]
    assert "llama_model_load" not in result.stderr and "Traceback" not in result.stderr


def test_an_unconverted_adapter_folder_says_to_convert_it(mixtral, base_model, adapter_folder):
    result = mixtral("complete", "-m", base_model, "--lora", adapter_folder, "Once")

    assert result.exit_code == 1
    assert f"mixtral quantize {adapter_folder}" in result.stderr


def test_an_adapter_given_as_the_model_is_refused(mixtral, adapter):
    result = mixtral("complete", "-m", adapter, "Once")

    assert result.exit_code == 1
    assert "is a LoRA adapter, not a model" in result.stderr and f"--lora {adapter}" in result.stderr


def test_chat_lora_commands_apply_list_and_remove_adapters(mixtral, base_model, adapter):
    script = f"/lora {adapter} 0.5\n/show\nHello\n/lora off\n/show\n/lora\n"
    result = mixtral("chat", "-m", base_model, "--temperature", "0", "-n", "8", "-c", "512", input=script)

    assert result.exit_code == 0, result.stderr
    assert f"lora: samsum-lora ({adapter}) at scale 0.5" in result.stderr
    assert "lora: (none)" in result.stderr
    assert result.stderr.count("LoRA adapters: (none)") == 1


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf", "1e39"])
def test_a_lora_scale_past_a_float_is_a_usage_error(mixtral, base_model, adapter, scale):
    result = mixtral("complete", "-m", base_model, "--lora", f"{adapter}:{scale}", "Once")

    assert result.exit_code == 2
    assert "--lora" in result.stderr and "Traceback" not in result.stderr


def test_chat_lora_scale_past_a_float_is_one_error_and_the_chat_goes_on(mixtral, base_model, adapter):
    result = mixtral("chat", "-m", base_model, "-n", "4", "-c", "512", input=f"/lora {adapter} nan\n/show\n")

    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("Error:") == 1 and "not a finite number" in result.stderr
    assert "lora: (none)" in result.stderr


def test_chat_lora_that_does_not_fit_is_one_error_and_the_chat_goes_on(mixtral, convert, adapter):
    other = convert()
    result = mixtral("chat", "-m", other, "-n", "4", "-c", "512", input=f"/lora {adapter}\n/show\n")

    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("Error:") == 1 and "does not fit" in result.stderr
    assert "lora: (none)" in result.stderr


def test_peft_adapter_with_a_dora_config_is_refused_by_name(mixtral, tmp_path, build_checkpoint):
    folder = HandAdapter(r=4, alpha=8)
    folder.add("model.layers.0.self_attn.q_proj", 128, 128, np.random.default_rng(0))
    saved = folder.save(tmp_path / "dora", base=build_checkpoint(SPEC))
    config = json.loads((saved / "adapter_config.json").read_text())
    (saved / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))

    result = mixtral("quantize", saved, "-o", tmp_path)
    assert result.exit_code == 1
    assert "uses DoRA, which llama.cpp cannot apply at run time" in result.stderr


def test_lora_on_a_split_model_finds_the_tensors_of_every_shard(mixtral, base_model, adapter, tmp_path):
    first, *_ = split_gguf(base_model, tmp_path, max_tensors=8)
    assert "blk.1.attn_q.weight" not in inspect_gguf(first).tensor_dims  # adapted, and in another shard

    assert complete_json(mixtral, "-m", first, "--lora", adapter)["loras"][0]["path"] == str(adapter)


def test_chat_model_switch_keeps_the_adapters_applied_now(mixtral, base_model, convert, adapter):
    other = convert(SPEC, "F16")  # the same model in another type: the adapter fits
    script = f"/lora off\n/lora {adapter} 0.25\n/model {other}\n/show\n"
    result = mixtral("chat", "-m", base_model, "--lora", adapter, "-n", "4", "-c", "512", input=script)

    assert result.exit_code == 0, result.stderr
    assert f"lora: samsum-lora ({adapter}) at scale 0.25" in result.stderr
    assert f"({other})" in result.stderr


def test_a_server_with_an_adapter_reports_it_and_chat_cannot_change_it(mixtral, base_model, adapter, tmp_path):
    from .servers import Server

    server = Server(base_model, tmp_path / "home", "--lora", f"{adapter}:0.5", "-c", "256")
    try:
        remote = complete_json(mixtral, "--server", server.url)
        local = complete_json(mixtral, "-m", base_model, "--lora", f"{adapter}:0.5", "--threads", "1", "--repack")
        chat = mixtral("chat", "--server", server.url, "-n", "4", input=f"/lora {adapter}\n/show\n")
    finally:
        server.stop()

    assert (
        remote["loras"]
        == local["loras"]
        == [{"path": str(adapter), "scale": 0.5, "name": "samsum-lora", "base_model": local["loras"][0]["base_model"]}]
    )
    assert chat.exit_code == 0, chat.stderr
    assert chat.stderr.count("Error:") == 1 and "the server's adapters answer" in chat.stderr
    assert f"lora: samsum-lora ({adapter}) at scale 0.5" in chat.stderr
