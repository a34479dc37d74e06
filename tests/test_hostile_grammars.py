"""Grammars and schemas that are valid but odd: each is refused before the model loads where llama.cpp's
grammar engine would abort or the answer could only be empty, and runs where it can be answered."""

from __future__ import annotations

import json

import pytest

from mixtral_cli.answer.gbnf import MAX_NESTING

pytestmark = pytest.mark.usefixtures("demo_model")


def complete_in(mixtral, tmp_path, grammar: str, *args: str):
    (path := tmp_path / "grammar.gbnf").write_text(grammar)
    return mixtral(
        "complete", "-m", "tiny", "-t", "1", "-n", "16", "--temperature", "0", "--grammar", path, *args, "Hi"
    )


@pytest.mark.parametrize(
    "grammar",
    [
        r"root ::= [^\x00-\U0010FFFF]",  # a class that excludes every character
        r"root ::= [b-a]",  # a range that holds none
        r"root ::= []",
        r'root ::= "a" [^\x00-\U0010FFFF] "b"',
        'root ::= "a" root',  # no alternative ever ends
        'root ::= x\nx ::= "(" x ")"',
        r'root ::= "\uD800"',  # no UTF-8 text holds a surrogate
        r'root ::= "\U00110000"',  # past Unicode
        r"root ::= [\uD800-\uDFFF]+",
    ],
)
def test_a_grammar_that_matches_no_text_is_refused_before_the_model_loads(mixtral, tmp_path, grammar):
    result = complete_in(mixtral, tmp_path, grammar)

    assert result.exit_code == 2
    assert "The grammar matches no text at all" in result.stderr


@pytest.mark.parametrize("grammar", ['root ::= ""', 'root ::= "a"{0}', 'root ::= x*\nx ::= ""', 'root ::= ("" | "")?'])
def test_a_grammar_that_matches_only_the_empty_text_is_refused(mixtral, tmp_path, grammar):
    result = complete_in(mixtral, tmp_path, grammar)

    assert result.exit_code == 2
    assert "The grammar matches only the empty text" in result.stderr


@pytest.mark.parametrize(
    ("grammar", "allowed"),
    [
        ("root ::= [^a0 A_]", lambda text: len(text) == 1 and text not in "a0 A_"),
        ("root ::= [^a-zA-Z0-9 _]{1,3}", lambda text: 1 <= len(text) <= 3 and not any(c.isalnum() for c in text)),
        (r"root ::= [^\x00-\x7F]", lambda text: len(text) == 1 and ord(text) > 0x7F),
        (r'root ::= "x" | [^\x00-\U0010FFFF] root', lambda text: text == "x"),
        ('root ::= "b" | "a" root', lambda text: text.endswith("b") and set(text[:-1]) <= {"a"}),
    ],
)
def test_odd_but_answerable_grammars_are_answered_inside_them(mixtral, tmp_path, grammar, allowed):
    result = complete_in(mixtral, tmp_path, grammar)

    assert result.exit_code in (0, 3), result.stderr  # 3: cut by -n, but never a crash
    if result.exit_code == 0:
        assert allowed(result.stdout.rstrip("\n"))


@pytest.mark.parametrize(
    "grammar",
    [
        'root ::= "a"{3000}',
        'root ::= (("a"{2000}){2000}){2000}',
        'root ::= root "a" | "a"',  # left recursion
        "root ::= missing",
    ],
)
def test_grammars_llama_cpps_parser_refuses_end_in_one_line(mixtral, tmp_path, grammar):
    result = complete_in(mixtral, tmp_path, grammar)

    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_groups_nested_past_the_bound_are_refused(mixtral, tmp_path):
    result = complete_in(mixtral, tmp_path, "root ::= " + "(" * 5000 + '"a"' + ")" * 5000)

    assert result.exit_code == 2
    assert f"The grammar nests groups 5000 deep; up to {MAX_NESTING} can be read." in result.stderr


def test_groups_nested_to_the_bound_are_answered(mixtral, tmp_path):
    result = complete_in(mixtral, tmp_path, "root ::= " + "(" * MAX_NESTING + '"a"' + ")" * MAX_NESTING)

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "a\n"


@pytest.mark.parametrize("pattern", ["^[a-$", "^(a$", "^a**$", "^(?<n>a)(?P=m)$"])
def test_an_invalid_regular_expression_in_a_schema_is_refused_naming_it(mixtral, pattern):
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}

    result = mixtral("complete", "-m", "tiny", "--json-schema", json.dumps(schema), "Hi")

    assert result.exit_code == 2
    assert f"The schema's pattern {json.dumps(pattern)} (at /properties/code) is not a valid regular expression" in (
        result.stderr
    )


@pytest.mark.parametrize("pattern", [5, None, ["^a$"]])
def test_a_pattern_that_is_not_a_string_is_refused(mixtral, pattern):
    result = mixtral(
        "complete", "-m", "tiny", "--json-schema", json.dumps({"type": "string", "pattern": pattern}), "Hi"
    )

    assert result.exit_code == 2
    assert "not a string" in result.stderr


def test_a_schema_pattern_class_excluding_the_usual_characters_is_answered(mixtral):
    # Quotes and backslashes excluded too: the converter writes a pattern's class as is, so a random model
    # that draws an unescaped quote ends the JSON string early (an answer refused with exit 2, not this test).
    schema = {"type": "string", "pattern": '^[^a0 A_"\\\\]{2}$'}

    result = mixtral("complete", "-m", "tiny", "-t", "1", "-n", "32", "--json-schema", json.dumps(schema), "Hi")

    assert result.exit_code in (0, 3), result.stderr
    if result.exit_code == 0:
        answer = json.loads(result.stdout)
        assert len(answer) == 2 and not set(answer) & set('a0 A_"\\')


@pytest.mark.parametrize(
    "grammar",
    [
        r'root ::= "b" | "a" [^\x00-\U0010FFFF]',  # "a" can be chosen; nothing can follow it
        'root ::= "b" | "a" x\nx ::= "c" x',  # "ac..." never ends
        r'root ::= "a" ("c" [b-a])*',
        r'root ::= "ok" | "n" "o" "\uDC00"',
    ],
)
def test_a_grammar_with_a_dead_end_is_refused_before_the_model_loads(mixtral, tmp_path, grammar):
    result = complete_in(mixtral, tmp_path, grammar)

    assert result.exit_code == 2
    assert "The grammar has a dead end" in result.stderr
