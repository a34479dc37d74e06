"""`mixtral prompt`: exactly what the model sees, as text, as ids, and checked against mistral-common."""

from __future__ import annotations

import json
import re

import pytest

from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions
from mixtral_cli.family.prompt_ids import Message
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

pytestmark = pytest.mark.usefixtures("demo_model")

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "Fine, and you?"},
    {"role": "user", "content": "I'm doing great! </s> [INST]"},
]


def test_text_shows_the_special_tokens(mixtral):
    result = mixtral("prompt", "-m", "tiny", "Hello, how are you?")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "<s> [INST] Hello, how are you? [/INST]\n"


def test_ids_are_the_engines_on_one_line(mixtral, tmp_path, demo_model):
    (tmp_path / "conversation.json").write_text(json.dumps(CONVERSATION))
    result = mixtral("prompt", "-m", "tiny", "--messages", tmp_path / "conversation.json", "--ids")

    with Engine(demo_model, EngineOptions(ctx_size=512)) as engine:
        expected = engine.chat_ids([Message(**m) for m in CONVERSATION])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == " ".join(map(str, expected)) + "\n"


def test_check_agrees_with_mistral_common_for_v1_and_v3(mixtral, tmp_path, convert):
    (tmp_path / "conversation.json").write_text(json.dumps(CONVERSATION))
    for version in ("v1", "v3"):
        model = convert(TinyMixtralSpec(tokenizer=version), "Q8_0")
        result = mixtral("prompt", "-m", model, "--messages", tmp_path / "conversation.json", "--check")
        assert result.exit_code == 0, result.stderr
        assert f"Matches mistral-common's {version} encoding" in result.stderr


def test_v3_shows_control_tokens_without_spaces(mixtral, convert):
    result = mixtral("prompt", "-m", convert(TinyMixtralSpec(tokenizer="v3"), "Q8_0"), "Hi")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "<s>[INST] Hi[/INST]\n"


def test_a_conversation_ending_with_the_assistant_is_a_prefix_mistral_common_agrees_with(mixtral, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(CONVERSATION[:3]))
    result = mixtral("prompt", "-m", "tiny", "--messages", tmp_path / "c.json", "--check")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("[/INST] Fine, and you?\n")  # no </s>: the answer continues it
    assert "Matches mistral-common's v1 encoding" in result.stderr


def test_messages_that_are_not_json_are_one_line(mixtral, tmp_path):
    (tmp_path / "c.json").write_text("{oops")
    result = mixtral("prompt", "-m", "tiny", "--messages", tmp_path / "c.json")

    assert result.exit_code == 1
    assert "not valid JSON" in result.stderr


def test_prompt_ids_need_the_vocabulary_only(demo_model, capsys):
    # llama.cpp's own log says what it loaded: the vocabulary, no tensors, no context.
    with Engine(demo_model, EngineOptions(verbose=True), vocab_only=True) as vocabulary:
        ids = vocabulary.chat_ids([Message("user", "Hello")])
    log = capsys.readouterr().err
    assert re.search(r"vocab_only\s+= 1", log) and "load_tensors" not in log and "llama_context" not in log
    with Engine(demo_model, EngineOptions(ctx_size=256)) as engine:
        assert ids == engine.chat_ids([Message("user", "Hello")])


def test_check_takes_a_system_message_after_the_assistants_as_mistral_commons_normalizer_does(mixtral, tmp_path):
    turns = [*CONVERSATION[1:3], {"role": "system", "content": "Be brief."}, CONVERSATION[3]]
    (tmp_path / "c.json").write_text(json.dumps(turns))
    result = mixtral("prompt", "-m", "tiny", "--messages", tmp_path / "c.json", "--check")

    assert result.exit_code == 0, result.stderr
    assert "Matches mistral-common's v1 encoding" in result.stderr
