"""Inputs without a size or depth bound: endless files, JSON nested past any sense, schemas whose repetition
counts would blow up the grammar converter. Each is read with a limit and refused naming it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mixtral_cli.answer.shapes import MAX_SCHEMA_REPETITIONS
from mixtral_cli.base.textinput import MAX_JSON_DEPTH

pytestmark = pytest.mark.usefixtures("demo_model")


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (
            ("complete", "-m", "tiny", "--request", "/dev/zero"),
            "/dev/zero holds more than 64 MiB, the most this reads.",
        ),
        (("prompt", "-m", "tiny", "--messages", "/dev/zero"), "/dev/zero holds more than 64 MiB"),
        (("complete", "-m", "tiny", "--json-schema", "/dev/zero", "Hi"), "/dev/zero holds more than 1 MiB"),
        (("complete", "-m", "tiny", "--grammar", "/dev/zero", "Hi"), "/dev/zero holds more than 1 MiB"),
        (("summarize", "-m", "tiny", "/dev/zero"), "/dev/zero holds more than 64 MiB"),
    ],
)
def test_an_endless_file_is_refused_at_its_limit(mixtral, args, refusal):
    result = mixtral(*args)

    assert result.exit_code in (1, 2)
    assert refusal in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("complete", "-m", "tiny"),
        ("complete", "-m", "tiny", "--request", "-"),
        ("summarize", "-m", "tiny"),
        ("chat", "-m", "tiny", "--ctx-size", "512"),
    ],
    ids=" ".join,
)
def test_an_endless_stdin_is_refused_at_its_limit(args):
    with open("/dev/zero", "rb") as zero:
        result = subprocess.run(
            [sys.executable, "-m", "mixtral_cli", *args], stdin=zero, capture_output=True, text=True, timeout=120
        )

    assert result.returncode == 1
    assert "stdin holds more than 64 MiB, the most this reads." in result.stderr
    assert "Traceback" not in result.stderr


def nested(depth: int, *, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 100_000])
@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("complete", "-m", "tiny", "--request", "-"), "The request"),
        (("prompt", "-m", "tiny", "--messages", "-"), "stdin"),
        (("complete", "-m", "tiny", "--json-schema", "-", "Hi"), "The schema"),
    ],
)
def test_json_nested_past_the_depth_bound_is_refused_naming_it(mixtral, args, name, depth, kind):
    result = mixtral(*args, input=nested(depth, kind=kind))

    assert result.exit_code in (1, 2)
    assert f"{name} nests deeper than {MAX_JSON_DEPTH} levels, the most this reads." in result.stderr
    assert "RecursionError" not in result.stderr


def test_json_nested_within_the_bound_is_read(mixtral):
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}

    result = mixtral("complete", "-m", "tiny", "-n", "64", "--json-schema", json.dumps(schema), "Hi")

    assert result.exit_code in (0, 3)  # an answer, or one cut by -n: the schema itself was taken


def test_a_json_number_with_thousands_of_digits_is_refused(mixtral):
    request = '{"input_data": {"input_string": ["Hi"], "parameters": {"max_new_tokens": ' + "9" * 5000 + "}}}"

    result = mixtral("complete", "-m", "tiny", "--request", "-", input=request)

    assert result.exit_code == 1
    assert "The request is not JSON this can read" in result.stderr


@pytest.mark.parametrize(
    ("schema", "refusal"),
    [
        ({"type": "string", "minLength": 1_000_000_000}, '"minLength" (at /) is 1000000000'),
        ({"type": "string", "maxLength": 10**12}, '"maxLength" (at /) is 1000000000000'),
        ({"type": "array", "minItems": 100_000_000}, '"minItems" (at /) is 100000000'),
        ({"type": "array", "items": {"type": "string"}, "maxItems": 5000}, '"maxItems" (at /) is 5000'),
        ({"type": "string", "minLength": "5"}, '"minLength" (at /) is "5"'),
        ({"type": "string", "minLength": -1}, '"minLength" (at /) is -1'),
        ({"type": "string", "maxLength": 2.5}, '"maxLength" (at /) is 2.5'),
        ({"type": "string", "minLength": True}, '"minLength" (at /) is true'),
        (
            {"type": "object", "properties": {"tags": {"type": "array", "minItems": 3, "maxItems": 2}}},
            '"minItems" is more than its "maxItems" (at /properties/tags)',
        ),
        ({"type": "string", "pattern": "^a{1000000000}$"}, "pattern repeats {1000000000}"),
        ({"type": "string", "pattern": "^a{2,100000}$"}, "pattern repeats {2,100000}"),
        ({"type": "string", "pattern": "^a{" + "9" * 5000 + "}$"}, "pattern repeats"),
    ],
)
def test_schema_repetitions_past_what_the_converter_writes_out_are_refused(mixtral, schema, refusal):
    result = mixtral("complete", "-m", "tiny", "--json-schema", json.dumps(schema), "Hi")

    assert result.exit_code == 2
    assert refusal in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_repetitions_at_the_bound_are_enforced(mixtral):
    schema = {"type": "string", "minLength": 2, "maxLength": MAX_SCHEMA_REPETITIONS}

    result = mixtral("complete", "-m", "tiny", "-n", "600", "--json-schema", json.dumps(schema), "Hi")

    assert result.exit_code in (0, 3)
    if result.exit_code == 0:
        assert 2 <= len(json.loads(result.stdout)) <= MAX_SCHEMA_REPETITIONS


def test_a_piped_chat_line_past_the_limit_is_refused_and_nothing_is_lost(isolated_home):
    line = b"word " * (13 * 2**20 + 1)  # 65 MiB, no newline
    result = subprocess.run(
        [sys.executable, "-m", "mixtral_cli", "chat", "-m", "tiny", "-n", "2", "--ctx-size", "512"],
        input=b"Hi\n" + line,
        capture_output=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert b"A line of stdin holds more than 64 MiB" in result.stderr
    assert result.stdout  # the first turn was answered


def test_a_chat_to_resume_that_never_ends_is_refused_at_its_limit(mixtral):
    result = mixtral("chat", "-m", "tiny", "--resume", "/dev/zero")

    assert result.exit_code == 1
    assert "/dev/zero holds more than 64 MiB, the most this reads." in result.stderr


@pytest.mark.parametrize("text", [nested(100_000, kind="object"), '{"messages": [], "n": ' + "9" * 5000 + "}"])
def test_a_chat_to_resume_nested_past_the_stack_or_with_an_endless_number_is_one_line(mixtral, tmp_path, text):
    (path := tmp_path / "chat.json").write_text(text)

    result = mixtral("chat", "-m", "tiny", "--resume", path)

    assert result.exit_code == 1
    assert "its JSON nests too deep or holds too long a number to read" in result.stderr
