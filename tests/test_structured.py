"""Answers of a given shape on the tiny model, whose random weights leave the grammar to do all the work."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import jsonschema
import pytest

from mixtral_cli.answer.shapes import (
    choice_shape,
    constrained_sampling,
    finish_answer,
    json_object_shape,
    schema_shape,
    shortest_answer,
    with_instruction,
)
from mixtral_cli.base.errors import AnswerCutError, OutputShapeError
from mixtral_cli.chat.commands import run_command
from mixtral_cli.chat.session import ChatSession
from mixtral_cli.chat.transcript import Transcript
from mixtral_cli.engine.grammar import fewest_tokens
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions
from mixtral_cli.family.prompt_ids import PromptMode

from .reference import llama_cpp_greedy

SCHEMAS = {
    "nested objects": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 6},
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "maxLength": 5},
                            "floor": {"type": "integer", "minimum": 0, "maximum": 9},
                        },
                        "required": ["city", "floor"],
                    },
                },
                "required": ["name", "address"],
            },
            "ok": {"type": "boolean"},
        },
        "required": ["person", "ok"],
    },
    "array with min and max items": {
        "type": "array",
        "items": {"type": "string", "maxLength": 3},
        "minItems": 2,
        "maxItems": 4,
    },
    "enums": {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}, "size": {"enum": [1, 2, None, "XL"]}},
        "required": ["colour", "size"],
    },
    "numbers with ranges": {
        "type": "object",
        "properties": {
            "dice": {"type": "integer", "minimum": 1, "maximum": 6},
            "offset": {"type": "integer", "exclusiveMinimum": -10, "exclusiveMaximum": 10},
            "score": {"type": "number"},
        },
        "required": ["dice", "offset", "score"],
    },
    "required and optional properties": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 0, "maximum": 999},
            "nickname": {"type": "string", "maxLength": 4},
            "admin": {"type": "boolean"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        },
        "required": ["id"],
    },
    "strings with patterns and formats": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
            "word": {"type": "string", "pattern": "^(yes|no|maybe)!?$"},
            "day": {"type": "string", "format": "date"},
        },
        "required": ["code", "word", "day"],
    },
}
SEEDS = range(5)
PROMPT = "Describe the thing you like most."
# Every token the grammar allows may be drawn: the constraint, not the sampler, must keep answers valid.
FREE = SamplingOptions(temperature=1.0, top_k=0, min_p=0.0, max_tokens=300)


@pytest.fixture(scope="module")
def engine(demo_model):
    with Engine(demo_model, EngineOptions(ctx_size=1024)) as loaded:
        yield loaded


def answers(engine: Engine, shape, sampling: SamplingOptions) -> list[str]:
    """One answer per seed of SEEDS."""
    sampling = constrained_sampling(engine.info.path, shape, sampling)
    return [answer(engine, shape, replace(sampling, seed=seed)) for seed in SEEDS]


def answer(engine: Engine, shape, sampling: SamplingOptions) -> str:
    ids, chat = engine.completion_ids(with_instruction(PROMPT, shape))
    generation = engine.generate(ids, sampling, answer=chat)
    text = "".join(generation)
    return finish_answer(shape, text, generation.stats, sampling)


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_every_answer_validates_against_its_schema(engine, schema):
    for text in answers(engine, schema_shape(json.dumps(schema)), FREE):
        jsonschema.validate(json.loads(text), schema)


FREE_STRINGS = {
    "json object": json_object_shape(),
    "free string property": schema_shape('{"type": "object", "properties": {"text": {"type": "string"}}}'),
}


@pytest.mark.parametrize("shape", FREE_STRINGS.values(), ids=FREE_STRINGS.keys())
def test_every_finished_answer_is_strict_json_as_generated(engine, shape):
    # The raw text, before finish_answer re-serializes it: what the server sends and `jq` reads.
    sampling = constrained_sampling(engine.info.path, shape, replace(FREE, max_tokens=24))
    ids, chat = engine.completion_ids(with_instruction(PROMPT, shape))
    finished = 0
    for seed in range(32):
        generation = engine.generate(ids, replace(sampling, seed=seed), answer=chat)
        text = "".join(generation)
        if generation.stats.stop_reason == "eos":
            json.loads(text)
            finished += 1
    assert finished >= 8  # enough answers ended for the check to mean something


@pytest.mark.parametrize(
    ("shape", "inside_a_string"),
    [
        (json_object_shape(), '{"'),
        (json_object_shape(), '{"key": "'),
        (schema_shape('{"type": "object", "properties": {"text": {"type": "string"}}}'), '{"text": "'),
        (schema_shape('{"type": "string", "pattern": "^.+$"}'), '"'),
        (schema_shape('{"type": "string", "pattern": "^[^a]+$"}'), '"'),
    ],
    ids=["object key", "object value", "string property", "pattern dot", "pattern negated class"],
)
def test_llama_cpps_grammar_engine_refuses_raw_control_characters_inside_strings(demo_model, shape, inside_a_string):
    # Random weights draw one of the 32 control bytes of 32000 tokens rarely: the grammar, as llama.cpp's
    # sampler runs it, is asked directly.
    allowed = _allowed_bytes_after(demo_model, shape.grammar, inside_a_string.encode())

    assert not allowed & set(range(0x20))
    assert ord("x") in allowed


def test_escapes_stay_allowed_inside_strings(demo_model):
    grammar = FREE_STRINGS["free string property"].grammar

    assert ord("\\") in _allowed_bytes_after(demo_model, grammar, b'{"text": "')
    assert {ord(c) for c in 'nrtu"\\'} <= _allowed_bytes_after(demo_model, grammar, b'{"text": "\\')


def _allowed_bytes_after(model_path, grammar: str, prefix: bytes) -> set[int]:
    """The single bytes llama.cpp's grammar sampler lets follow ``prefix`` (fed as byte tokens)."""
    import ctypes
    import math

    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        buffer = ctypes.create_string_buffer(8)
        byte_token = {}
        for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
            if n == 1 and not llama_cpp.llama_vocab_is_control(vocab, token):
                byte_token.setdefault(buffer.raw[0], token)
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        try:
            for byte in prefix:
                llama_cpp.llama_sampler_accept(sampler, byte_token[byte])
            candidates = sorted(byte_token.items())
            data = (llama_cpp.llama_token_data * len(candidates))(
                *(llama_cpp.llama_token_data(id=token, logit=0.0, p=0.0) for _, token in candidates)
            )
            array = llama_cpp.llama_token_data_array(data=data, size=len(candidates), selected=-1, sorted=False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            by_token = {token: byte for byte, token in candidates}
            return {by_token[data[i].id] for i in range(array.size) if not math.isinf(data[i].logit)}
        finally:
            llama_cpp.llama_sampler_free(sampler)
    finally:
        llama_cpp.llama_model_free(model)


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_shortest_answer_of_a_schema_is_a_valid_instance(schema):
    jsonschema.validate(json.loads(shortest_answer(schema_shape(json.dumps(schema)).grammar)), schema)


@pytest.mark.parametrize("schema", [SCHEMAS["nested objects"], SCHEMAS["array with min and max items"]])
def test_greedy_answer_is_llama_cpp_pythons_own_under_the_same_grammar(engine, schema):
    # Greedy under a grammar is the likeliest allowed token at each step, whichever way it is found.
    shape = schema_shape(json.dumps(schema))
    sampling = constrained_sampling(engine.info.path, shape, SamplingOptions(temperature=0, max_tokens=200))
    ids, _ = engine.completion_ids(PROMPT, mode=PromptMode.RAW)
    generation = engine.generate(ids, sampling)
    text = "".join(generation)

    assert generation.stats.stop_reason == "eos"
    assert text == llama_cpp_greedy(engine.info.path, PROMPT, 200, n_ctx=1024, grammar=shape.grammar)


def test_choice_gives_exactly_one_of_the_labels(engine):
    labels = ["positive", "negative", "neutral"]
    shape = choice_shape(labels)
    assert set(answers(engine, shape, replace(FREE, max_tokens=20))) <= set(labels)


def test_fewest_tokens_finds_the_shortest_spelling():
    assert fewest_tokens(b"abcd", {b"a", b"b", b"c", b"d", b"ab", b"bcd"}) == 2


def test_answer_cut_by_the_token_budget_is_refused(engine):
    shape = schema_shape('{"type": "string", "minLength": 30}')
    sampling = constrained_sampling(engine.info.path, shape, SamplingOptions(seed=1, max_tokens=12))
    with pytest.raises(AnswerCutError):
        answer(engine, shape, sampling)


def test_budget_below_the_shortest_answer_is_refused(engine):
    shape = schema_shape(json.dumps(SCHEMAS["nested objects"]))
    with pytest.raises(OutputShapeError, match="--max-tokens 5 is too small"):
        constrained_sampling(engine.info.path, shape, SamplingOptions(max_tokens=5))


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ('{"type": "number", "minimum": 0}', "minimum"),
        ('{"type": "integer", "minimum": 0, "maximum": 100000}', "100001 values"),
        ('{"not": {"type": "string"}}', '"not"'),
        ('{"type": "array", "uniqueItems": true}', '"uniqueItems"'),
        ('{"type": "string", "pattern": "[a-z]+"}', 'start with "^"'),
        ('{"$ref": "https://example.com/schema.json"}', "cannot express"),
    ],
)
def test_schema_feature_the_converter_cannot_express_is_refused(schema, message):
    with pytest.raises(OutputShapeError, match=re.escape(message)):
        schema_shape(schema)


def test_property_named_like_a_keyword_is_a_property():
    schema = {"type": "object", "properties": {"minimum": {"type": "boolean"}}, "required": ["minimum"]}
    assert '"\\"minimum\\""' in schema_shape(json.dumps(schema)).grammar


def test_chat_set_schema_makes_every_answer_follow_it(engine, tmp_path):
    schema = SCHEMAS["enums"]
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    sampling = SamplingOptions(temperature=1.0, seed=3, max_tokens=100)
    session = ChatSession(engine, Transcript(model="tiny", sampling=sampling), autosave_path=tmp_path / "chat.json")
    run_command(session, f"/set schema {tmp_path / 'schema.json'}", load_engine=None)
    for question in ("What colour?", "And now?"):
        chunks, finish = session.send(question)
        text = "".join(chunks)
        finish()
        jsonschema.validate(json.loads(text), schema)


def test_chat_set_schema_off_frees_the_answers(engine, tmp_path):
    session = ChatSession(
        engine,
        Transcript(model="tiny", sampling=replace(SamplingOptions(), max_tokens=8)),
        autosave_path=tmp_path / "c",
    )
    run_command(session, '/set schema {"type": "boolean"}', load_engine=None)
    run_command(session, "/set schema off", load_engine=None)
    assert session.shape is None and session.sampling.grammar is None
