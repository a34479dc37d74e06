"""`mixtral complete --tools` and `mixtral prompt --tools` on a tiny v3 Mixtral: calls printed as JSON, a round
continued with --messages, the prompt checked against mistral-common, refusals in one line."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .test_serve_tools import ASK, CITY

pytestmark = pytest.mark.usefixtures("demo_model")

SEEDED = ("--temperature", "0", "--seed", "1", "-n", "300")


@pytest.fixture(scope="module")
def v3_model(convert):
    return convert(TinyMixtralSpec(tokenizer="v3", instruct=True), "Q8_0")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps([CITY]))
    return tmp_path


def test_required_calls_print_one_openai_call_object_per_line(mixtral, v3_model, files):
    result = mixtral(
        "complete", "-m", v3_model, "--tools", files / "tools.json", "--tool-choice", "required", *SEEDED, "Weather?"
    )
    assert result.exit_code == 0, result.stderr
    calls = [json.loads(line) for line in result.stdout.splitlines()]
    assert calls and all(call["function"]["name"] == "get_weather" for call in calls)
    for call in calls:
        assert re.fullmatch(r"[a-zA-Z0-9]{9}", call["id"])
        jsonschema.validate(json.loads(call["function"]["arguments"]), CITY["function"]["parameters"])


def test_json_reports_the_calls_with_the_stop_reason(mixtral, v3_model, files):
    result = mixtral(
        "complete", "-m", v3_model, "--tools", files / "tools.json", "--tool-choice", "get_weather",
        "--no-parallel-calls", "--json", *SEEDED, "Weather?",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stop_reason"] == "tool_calls" and len(report["tool_calls"]) == 1


def test_messages_continue_a_round_with_its_results(mixtral, v3_model, files):
    round_ = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]  # fmt: skip
    (files / "round.json").write_text(json.dumps(round_))
    result = mixtral(
        "complete", "-m", v3_model, "--tools", files / "tools.json", "--messages", files / "round.json",
        "--tool-choice", "none", "--json", "--temperature", "0", "-n", "8",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert "tool_calls" not in report and report["completion_tokens"] > 0


def test_prompt_with_tools_matches_mistral_common(mixtral, v3_model, files):
    (files / "ask.json").write_text(json.dumps(ASK))
    result = mixtral(
        "prompt", "-m", v3_model, "--messages", files / "ask.json", "--tools", files / "tools.json", "--check"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("<s>[AVAILABLE_TOOLS] [{") and "Matches" in result.stderr


def test_tools_on_the_8x7b_format_are_one_line_naming_the_8x22b_instruct(mixtral, files):
    result = mixtral("complete", "-m", "tiny", "--chat", "--tools", files / "tools.json", "Weather?")
    assert result.exit_code != 0 and "Mixtral-8x22B-Instruct" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_tools_file_that_is_not_json_is_one_line(mixtral, v3_model, files):
    (files / "bad.json").write_text("[{")
    result = mixtral("complete", "-m", v3_model, "--tools", files / "bad.json", "Weather?")
    assert result.exit_code != 0 and "Traceback" not in result.stderr and "tools" in result.stderr


def test_tool_choice_without_tools_is_refused(mixtral, v3_model):
    result = mixtral("complete", "-m", v3_model, "--tool-choice", "required", "Weather?")
    assert result.exit_code != 0 and "--tools" in result.stderr
