"""`mixtral complete --json-schema / --json-object / --grammar / --choice`: what reaches stdout, and exit codes."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest

from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions
from mixtral_cli.family.prompt_ids import Message

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["name", "age"],
}


@pytest.fixture(autouse=True)
def empty_stdin(monkeypatch):
    """Nothing piped in: the prompt is the argument (pytest's own stdin refuses to be read)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))


@pytest.fixture
def schema_file(tmp_path):
    path = tmp_path / "person.json"
    path.write_text(json.dumps(PERSON))
    return path


def test_schema_answer_is_one_valid_json_value_alone_on_stdout(mixtral, schema_file):
    result = mixtral("complete", "-m", "tiny", "--seed", "4", "-n", "120", "--json-schema", schema_file, "Who?")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1
    jsonschema.validate(json.loads(result.stdout), PERSON)


def test_schema_given_inline(mixtral):
    result = mixtral("complete", "-m", "tiny", "--seed", "2", "-n", "120", "--json-schema", json.dumps(PERSON), "Who?")

    assert result.exit_code == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout), PERSON)


def test_json_output_reports_the_answer_and_stop_reason(mixtral, schema_file):
    result = mixtral(
        "complete", "-m", "tiny", "--seed", "4", "-n", "120", "--json-schema", schema_file, "--json", "Who?"
    )
    data = json.loads(result.stdout)

    assert data["stop_reason"] == "eos"
    jsonschema.validate(json.loads(data["text"]), PERSON)


def test_json_object_gives_an_object_or_nothing_when_cut(mixtral):
    # Any object may be as long as it likes, so some of the random model's answers run into --max-tokens.
    results = [
        mixtral("complete", "-m", "tiny", "--seed", seed, "-n", "60", "--json-object", "A city as JSON")
        for seed in range(1, 7)
    ]

    for result in results:
        assert (result.exit_code, result.stdout) == (3, "") or isinstance(json.loads(result.stdout), dict)
    assert any(result.exit_code == 0 for result in results)


def test_choice_prints_one_label(mixtral):
    result = mixtral("complete", "-m", "tiny", "-n", "10", "--choice", "positive, negative,neutral", "Sentiment?")

    assert result.exit_code == 0, result.stderr
    assert result.stdout in ("positive\n", "negative\n", "neutral\n")


def test_grammar_file_shapes_the_answer(mixtral, tmp_path):
    grammar = tmp_path / "answer.gbnf"
    grammar.write_text('# a verdict and a score\nroot ::= ("yes" | "no") ", " score\nscore ::= [1-9] [0-9]?\n')
    result = mixtral("complete", "-m", "tiny", "--seed", "1", "-n", "20", "--grammar", grammar, "Good?")

    assert result.exit_code == 0, result.stderr
    assert re.fullmatch(r"(yes|no), [1-9][0-9]?\n", result.stdout)


@pytest.mark.parametrize(("option", "schema_prompt"), [((), True), (("--no-schema-prompt",), False)])
def test_prompt_says_the_schema_unless_told_not_to(mixtral, demo_model, option, schema_prompt):
    schema = '{"type": "boolean"}'
    result = mixtral("complete", "-m", "tiny", "-n", "8", "--json", "--json-schema", schema, *option, "Is it?")
    said = "Is it?\n\nAnswer with JSON that follows this JSON schema:\n" + schema if schema_prompt else "Is it?"
    with Engine(demo_model, EngineOptions(ctx_size=512)) as engine:
        expected = engine.chat_ids([Message("user", said)])

    assert json.loads(result.stdout)["prompt_tokens"] == len(expected)


def test_answer_cut_by_max_tokens_exits_3_and_prints_nothing(mixtral):
    schema = '{"type": "string", "minLength": 30}'
    result = mixtral("complete", "-m", "tiny", "--seed", "1", "-n", "14", "--json-schema", schema, "Say it")

    assert result.exit_code == 3
    assert result.stdout == ""
    assert "cut by --max-tokens (14)" in result.stderr


def test_answer_cut_reports_length_in_json_and_exits_3(mixtral):
    schema = '{"type": "string", "minLength": 30}'
    result = mixtral("complete", "-m", "tiny", "--seed", "1", "-n", "14", "--json-schema", schema, "--json", "Say it")

    assert result.exit_code == 3
    assert json.loads(result.stdout)["stop_reason"] == "length"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--json-schema", "{not json"), "The schema is not valid JSON"),
        (("--json-schema", '{"type": "string", "format": "email", "not": {}}'), '"not"'),
        (("--json-schema", '{"type": "number", "maximum": 1}'), "maximum"),
        (("--json-schema", "no-such-schema.json"), "Cannot read the schema file"),
        (("--json-schema", "{}", "--choice", "a,b"), "exclude each other"),
        (("--choice", "a,,b"), "none of them empty"),
    ],
)
def test_bad_shape_is_one_line_and_exit_2_before_the_model_is_found(mixtral, tmp_path, args, message):
    result = mixtral("complete", "-m", tmp_path / "missing.gguf", *args, "x")

    assert result.exit_code == 2
    assert message in result.stderr and "does not exist" not in result.stderr
    assert result.stderr.count("\n") <= 2  # the message and its hint


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ("root ::= answer", "Undefined rule identifier 'answer'"),
        ('root ::= "unclosed', "unexpected end of input"),
        ('answer ::= "yes"', "grammar does not contain a 'root' symbol"),
    ],
)
def test_grammar_that_does_not_parse_is_refused_before_the_model_loads(mixtral, tmp_path, grammar, reason):
    (tmp_path / "bad.gbnf").write_text(grammar)
    result = mixtral("complete", "-m", "tiny", "--verbose", "--grammar", tmp_path / "bad.gbnf", "x")

    assert result.exit_code == 2
    assert f"The grammar does not parse: {reason}" in result.stderr
    assert "load_tensors" not in result.stderr  # llama.cpp's log (--verbose) of loading the weights


def test_max_tokens_below_the_shortest_answer_is_refused_before_the_model_loads(mixtral, schema_file):
    result = mixtral("complete", "-m", "tiny", "--verbose", "-n", "4", "--json-schema", schema_file, "Who?")

    assert result.exit_code == 2
    assert "--max-tokens 4 is too small" in result.stderr and '{"name":"","age":0}' in result.stderr
    assert "load_tensors" not in result.stderr


def test_request_file_schema_constrains_every_answer(mixtral, tmp_path):
    request = {
        "input_data": {
            "input_string": ["Describe Anna.", "Describe Bob."],
            "parameters": {"max_new_tokens": 120, "temperature": 0.8, "json_schema": PERSON},
        }
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = mixtral("complete", "-m", "tiny", "--seed", "3", "--request", tmp_path / "request.json")

    assert result.exit_code == 0, result.stderr
    answers = json.loads(result.stdout)
    assert len(answers) == 2
    for answer in answers:
        jsonschema.validate(json.loads(answer["0"]), PERSON)


def test_request_file_with_a_schema_that_is_not_an_object_is_refused(mixtral, tmp_path):
    request = {"input_data": {"input_string": ["Hi"], "parameters": {"json_schema": "person.json"}}}
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = mixtral("complete", "-m", "tiny", "--request", tmp_path / "request.json")

    assert result.exit_code == 1
    assert '"parameters.json_schema" must be a JSON schema object' in result.stderr


# jq where it is installed; otherwise Python's own JSON reader stands in at the end of the pipe.
READ_AGE = (
    ["jq", "-e", ".age"]
    if shutil.which("jq")
    else [sys.executable, "-c", "import json, sys; print(json.load(sys.stdin)['age'])"]
)


def test_answer_pipes_into_jq(schema_file):
    mixtral = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "complete", "-m", "tiny", "--seed", "4", "-n", "120"]
        + ["--json-schema", str(schema_file), "Who?"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader = subprocess.run(READ_AGE, stdin=mixtral.stdout, capture_output=True, text=True)
    mixtral.stdout.close()
    assert mixtral.wait() == 0, mixtral.stderr.read()

    assert reader.returncode == 0, reader.stderr
    assert 0 <= int(reader.stdout) <= 99
