"""Answers of a given shape: a JSON schema, any JSON object, a GBNF grammar, or one of a few labels.

Each becomes a GBNF grammar that llama.cpp's grammar sampler enforces token by token. JSON schemas go
through llama-cpp-python's own converter (``llama_cpp.llama_grammar``); the keywords it cannot express
are refused here rather than silently ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import AnswerCutError, InputError, LimitError, MixtralError, OutputShapeError
from ..engine.options import SamplingOptions
from ..family.prompt_ids import Message
from .gbnf import exclude_from_negated_classes, shortest_answer

if TYPE_CHECKING:
    from ..engine.model import GenerationStats

# What llama-cpp-python's SchemaConverter enforces; every other keyword that constrains is refused.
CONVERTED_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
        "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern",
        "minLength", "maxLength", "format",
    }
)  # fmt: skip
ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated", "readOnly"}
)
# The converter has no numeric bounds; an integer range this small is given to it as the list of its values.
_MAX_INTEGER_CHOICES = 1000
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
MAX_SHAPE_BYTES = 2**20  # a schema or grammar file; llama.cpp's parser is not made for more
# The converter writes each repetition of minLength, maxItems, {m,n}, ... out in full (recursively, for
# items with separators): past a few hundred it runs out of stack, and near a billion out of memory.
MAX_SCHEMA_REPETITIONS = 500
_REPETITION_KEYWORDS = (("minLength", "maxLength"), ("minItems", "maxItems"))
_PATTERN_REPETITION = re.compile(r"(?<!\\)\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")
# Every "[^...]" class of a converted schema spells characters inside a JSON string: the converter's own lets
# raw control characters through (strict JSON refuses them), a pattern's '.' even quotes and backslashes.
_NOT_RAW_IN_JSON_STRINGS = r'"\\\x00-\x1F'


class AnswerKind(str, Enum):
    JSON = "json"  # one JSON value, printed as JSON
    TEXT = "text"  # text as the grammar spells it


@dataclass(frozen=True)
class OutputShape:
    grammar: str  # GBNF; its start rule is "root"
    kind: AnswerKind
    instruction: str | None  # what the prompt tells the model about the shape


def output_shape(
    *, json_schema: str | None = None, json_object: bool = False, grammar: str | None = None, choice: str | None = None
) -> OutputShape | None:
    """The shape asked for by at most one of the options (``json_schema``: a file, '-' or the schema itself)."""
    options = {
        "--json-schema": json_schema is not None,
        "--json-object": json_object,
        "--grammar": grammar is not None,
        "--choice": choice is not None,
    }
    given = [name for name, used in options.items() if used]
    if len(given) > 1:
        raise OutputShapeError(f"{' and '.join(given)} exclude each other: give one.")
    if json_schema is not None:
        return schema_shape(json_schema if json_schema.lstrip().startswith("{") else read_source(json_schema, "schema"))
    if json_object:
        return json_object_shape()
    if grammar is not None:
        return grammar_shape(read_source(grammar, "grammar"))
    if choice is not None:
        return choice_shape([label.strip() for label in choice.split(",")])
    return None


def read_source(
    source: str, what: str, *, error: type[MixtralError] = OutputShapeError, limit: int = MAX_SHAPE_BYTES
) -> str:
    """A file's text, or stdin's for '-', as UTF-8; ``error`` says why it cannot be read."""
    from ..base.textinput import read_stdin, read_text_file

    try:
        return read_stdin(limit=limit) if source == "-" else read_text_file(Path(source), limit=limit)
    except (InputError, LimitError) as exc:
        raise error(f"Cannot read the {what} file: {exc.message}", hint=exc.hint) from exc


def constrained_sampling(model_path: Path, shape: OutputShape, sampling: SamplingOptions) -> SamplingOptions:
    """``sampling`` with the shape's grammar, once llama.cpp has parsed it and the token budget can hold an answer."""
    from ..engine.grammar import check_grammar

    shortest = shortest_answer(shape.grammar)
    needed = check_grammar(model_path, shape.grammar, answer=shortest)
    # The answer's end (the end-of-sequence token) is sampled after its last token, under the same budget.
    if needed is not None and sampling.max_tokens < needed + 1:
        raise OutputShapeError(
            f"--max-tokens {sampling.max_tokens} is too small: the shortest valid answer, {shortest}, "
            f"takes {needed} tokens and its end one more.",
            hint=f"Give --max-tokens {needed + 1} or more.",
        )
    return replace(sampling, grammar=shape.grammar)


def schema_shape(text: str) -> OutputShape:
    """A JSON schema as a grammar; a schema that is not JSON, or that the converter cannot express, is refused."""
    from ..base.textinput import parse_json

    schema = parse_json(text, "The schema", error=OutputShapeError)
    if not isinstance(schema, dict):
        raise OutputShapeError("The schema must be a JSON object.")
    grammar = json_grammar(_bounded_integers_as_enums(schema, ""))
    instruction = f"Answer with JSON that follows this JSON schema:\n{json.dumps(schema, ensure_ascii=False)}"
    return OutputShape(grammar, AnswerKind.JSON, instruction)


def json_object_shape() -> OutputShape:
    return OutputShape(json_grammar({"type": "object"}), AnswerKind.JSON, "Answer with a JSON object.")


def json_grammar(schema: object) -> str:
    """llama-cpp-python's grammar for ``schema``, whose strings can only be strict JSON (escapes allowed)."""
    from ..engine.grammar import json_schema_grammar

    return exclude_from_negated_classes(json_schema_grammar(json.dumps(schema)), _NOT_RAW_IN_JSON_STRINGS)


def grammar_shape(text: str) -> OutputShape:
    """A GBNF grammar as llama.cpp takes it; llama.cpp's parser checks it against the model's vocabulary."""
    if not text.strip():
        raise OutputShapeError("The grammar is empty.")
    return OutputShape(text, AnswerKind.TEXT, None)


def choice_shape(labels: list[str]) -> OutputShape:
    if not labels or any(not label for label in labels):
        raise OutputShapeError("--choice needs labels separated by commas, none of them empty: --choice yes,no.")
    grammar = "root ::= " + " | ".join(gbnf_literal(label) for label in labels)
    return OutputShape(grammar, AnswerKind.TEXT, f"Answer with exactly one of: {', '.join(labels)}.")


def with_instruction(prompt: str | list[Message], shape: OutputShape | None) -> str | list[Message]:
    """The prompt (or the conversation's last message), with the shape of the answer said after it."""
    if shape is None or shape.instruction is None:
        return prompt
    if isinstance(prompt, str):
        return f"{prompt}\n\n{shape.instruction}"
    *earlier, last = prompt
    return [*earlier, replace(last, content=f"{last.content}\n\n{shape.instruction}")]


def finish_answer(shape: OutputShape, text: str, stats: GenerationStats, sampling: SamplingOptions) -> str:
    """The answer to print: one JSON value (re-serialized) or the grammar's text; a cut answer raises."""
    if stats.stop_reason != "eos":
        cause = {"length": f"--max-tokens ({sampling.max_tokens})", "context": "the context"}.get(
            stats.stop_reason, "a --stop text"
        )
        raise AnswerCutError(
            f"The answer was cut by {cause} before it was complete; it is not printed.",
            hint="Raise --max-tokens (or --ctx-size), or ask for a shorter answer.",
        )
    if shape.kind is AnswerKind.TEXT:
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputShapeError(
            f"The answer is not valid JSON ({exc.msg}); the schema's patterns may allow unescaped quotes.",
            hint="Use character classes instead of '.' in patterns.",
        ) from exc
    return json.dumps(value, ensure_ascii=False)


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


_SCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> schema
_SCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf", "allOf")


def _bounded_integers_as_enums(schema: object, where: str) -> object:
    """The schema with small integer ranges listed out; a keyword the converter would ignore is refused."""
    if not isinstance(schema, dict):
        return schema
    _check_repetitions(schema, where)
    if "pattern" in schema:
        _check_pattern(schema["pattern"], where)
    bounds = {key: schema[key] for key in _BOUNDS if key in schema}
    if bounds:
        schema = {**{k: v for k, v in schema.items() if k not in bounds}, "enum": _integer_range(schema, bounds, where)}
    converted = {}
    for key, value in schema.items():
        path = f"{where}/{key}"
        if key not in CONVERTED_KEYWORDS and key not in ANNOTATIONS:
            raise OutputShapeError(
                f"The schema's \"{key}\" (at {where or '/'}) is beyond what llama-cpp-python's converter can express.",
                hint="README.md lists the schema features it supports.",
            )
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: _bounded_integers_as_enums(sub, f"{path}/{name}") for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list) or key == "items" and isinstance(value, list):
            value = [_bounded_integers_as_enums(sub, f"{path}/{i}") for i, sub in enumerate(value)]
        elif key in ("items", "additionalProperties"):
            value = _bounded_integers_as_enums(value, path)
        converted[key] = value
    return converted


def _check_repetitions(schema: dict, where: str) -> None:
    for least_key, most_key in _REPETITION_KEYWORDS:
        counts = {}
        for key in (least_key, most_key):
            if key in schema:
                counts[key] = _repetition_count(schema[key], f'"{key}"', where)
        if len(counts) == 2 and counts[least_key] > counts[most_key]:
            raise OutputShapeError(
                f'The schema\'s "{least_key}" is more than its "{most_key}" (at {where or "/"}): '
                "no value can follow it."
            )


def _repetition_count(value: object, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCHEMA_REPETITIONS:
        raise OutputShapeError(
            f"The schema's {what} (at {where or '/'}) is {json.dumps(value)}; a whole number from 0 to "
            f"{MAX_SCHEMA_REPETITIONS} can be enforced, as llama-cpp-python's converter writes each repetition out.",
            hint="Lower it, or check the length after the answer.",
        )
    return value


def _check_pattern(pattern: object, where: str) -> None:
    """A pattern that is a valid regular expression, with repetitions the converter can write out."""
    if not isinstance(pattern, str):
        raise OutputShapeError(f"The schema's pattern (at {where or '/'}) is {json.dumps(pattern)}, not a string.")
    for match in _PATTERN_REPETITION.finditer(pattern):
        # int() refuses more than 4300 digits; a count that long is past any bound anyway.
        if any(len(count) > 9 or int(count) > MAX_SCHEMA_REPETITIONS for count in filter(None, match.groups())):
            raise OutputShapeError(
                f"The schema's pattern repeats {match[0]} (at {where or '/'}); up to {MAX_SCHEMA_REPETITIONS} "
                "repetitions can be enforced, as llama-cpp-python's converter writes each one out.",
                hint="Lower the count, or check the length after the answer.",
            )
    try:
        re.compile(pattern)
    except (re.error, ValueError, OverflowError, RecursionError) as exc:
        raise OutputShapeError(
            f"The schema's pattern {json.dumps(pattern)} (at {where or '/'}) is not a valid regular expression "
            f"({exc}).",
            hint="Fix the pattern; JSON schema patterns are ECMA-262 regular expressions.",
        ) from exc


def _integer_range(schema: dict, bounds: dict, where: str) -> list[int]:
    low = bounds.get("minimum", bounds.get("exclusiveMinimum"))
    high = bounds.get("maximum", bounds.get("exclusiveMaximum"))
    integral = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high))
    if schema.get("type") != "integer" or not integral:
        raise OutputShapeError(
            f"The schema's bounds {', '.join(bounds)} (at {where or '/'}) are beyond what llama-cpp-python's "
            f"converter can express, except as an integer range with both ends.",
            hint="Use an integer range, an enum, or drop the bounds.",
        )
    low += "exclusiveMinimum" in bounds
    high -= "exclusiveMaximum" in bounds
    if not 0 < high - low + 1 <= _MAX_INTEGER_CHOICES:
        raise OutputShapeError(
            f"The integer range at {where or '/'} holds {max(high - low + 1, 0)} values; "
            f"from 1 to {_MAX_INTEGER_CHOICES} can be enforced."
        )
    return list(range(low, high + 1))
