"""Tool calls on a tiny v3 Mixtral that llama.cpp really runs: the grammar, the lazy trigger, banned tokens, and
reading the calls by token id."""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace

import jsonschema
import pytest

from mixtral_cli.answer.tool_calls import (
    MAX_PARALLEL_CALLS,
    ToolAnswerReader,
    ToolCallAnswer,
    ToolCallError,
    ToolCallReader,
    ToolChoice,
    tool_request,
    tool_sampling,
)
from mixtral_cli.base.errors import AnswerCutError, InvalidToolsError, ToolsNotSupportedError
from mixtral_cli.engine.generation import ControlToken
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions
from mixtral_cli.family.prompt_ids import Message, PromptFormat, messages_from_dicts
from mixtral_cli.family.reference_check import mistral_common_ids
from mixtral_cli.family.tool_prompt import fresh_call_ids, tools_from_dicts
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .test_tool_prompt import WEATHER, random_conversation

GREEDY = SamplingOptions(temperature=0, max_tokens=900, seed=1)  # the seed picks the call ids
NESTED = {
    "type": "function",
    "function": {
        "name": "book-trip_2",
        "description": "Réserver un voyage 🚆",
        "parameters": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "enum": ["Paris", "東京"]},
                "legs": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"day": {"type": "integer", "minimum": 1, "maximum": 7}}},
                    "maxItems": 2,
                },
            },
            "required": ["to", "legs"],
        },
    },
}
# The tiny model's random weights write strings until a bound ends them.
CITY = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 6}},
            "required": ["city"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def engine(convert):
    with Engine(convert(TinyMixtralSpec(tokenizer="v3"), "Q8_0"), EngineOptions(ctx_size=2048)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def v1_engine(convert):
    with Engine(convert(TinyMixtralSpec(tokenizer="v1"), "Q8_0"), EngineOptions(ctx_size=512)) as loaded:
        yield loaded


def answer(engine, messages, request, sampling=GREEDY):
    """The content, the deltas and the calls of one answer, as the answer job reads them."""
    tools = request.tools if request else ()
    ids = engine.chat_ids(messages, tools=tools)
    sampling, call_ids = tool_sampling(request, sampling, trigger=engine.special.tool_calls, taken_ids=())
    reader = ToolAnswerReader(trigger=engine.special.tool_calls, ids=call_ids)
    generation = engine.generate(ids, sampling, answer=True)
    items = list(reader.read(generation))
    content = "".join(i for i in items if isinstance(i, str))
    deltas = [i for i in items if not isinstance(i, str)]
    return content, deltas, reader.calls(generation.stats.stop_reason), call_ids


def test_the_v3_vocabulary_gives_the_tool_control_tokens(engine):
    special = engine.special
    assert (special.tool_calls, special.tools, special.tools_end, special.results, special.results_end) == (
        5,
        6,
        7,
        8,
        9,
    )


def test_llama_cpp_ids_with_tools_equal_mistral_common_on_fuzzed_conversations(engine):
    rng = random.Random(11)
    for _ in range(60):
        raw_messages, raw_tools = random_conversation(rng)
        messages, tools = messages_from_dicts(raw_messages), tools_from_dicts(raw_tools)
        assert engine.chat_ids(messages, tools=tools) == mistral_common_ids(messages, PromptFormat.V3, tools)


@pytest.mark.parametrize("tool", [CITY, NESTED])
def test_required_calls_start_with_the_token_and_their_arguments_follow_the_schema(engine, tool):
    request = tool_request([tool], choice="required", parallel=False)
    content, deltas, calls, call_ids = answer(engine, [Message("user", "Go.")], request)
    assert content == "" and calls
    for call, call_id in zip(calls, call_ids, strict=False):
        assert call.name == tool["function"]["name"] and call.id == call_id
        assert re.fullmatch(r"[a-zA-Z0-9]{9}", call.id)
        jsonschema.validate(json.loads(call.arguments), tool["function"]["parameters"])


@pytest.fixture(scope="module")
def parallel_answer(engine):
    """Greedy with seed 1 calls several times."""
    return answer(engine, [Message("user", "Go.")], tool_request([NOW], choice="required"))


def test_streamed_deltas_add_up_to_the_calls(parallel_answer):
    _, deltas, calls, _ = parallel_answer
    assert len(calls) > 1
    rebuilt: dict[int, dict] = {}
    for delta in deltas:
        entry = rebuilt.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
        if delta.id is not None:
            assert entry["id"] is None  # an id is given once, on the call's first delta
            entry.update(id=delta.id, name=delta.name)
        entry["arguments"] += delta.arguments
    assert [ToolCallAnswer(**rebuilt[i]) for i in sorted(rebuilt)] == list(calls)


def test_a_named_function_is_the_one_called(engine):
    choice = {"type": "function", "function": {"name": "book-trip_2"}}
    request = tool_request([CITY, NESTED], choice=choice, parallel=False)
    _, _, calls, _ = answer(engine, [Message("user", "Go.")], request)
    assert calls and all(call.name == "book-trip_2" for call in calls)


def test_without_parallel_calls_there_is_exactly_one(engine):
    request = tool_request([NOW], choice="required", parallel=False)
    for seed in range(2):
        _, _, calls, _ = answer(engine, [Message("user", "Go.")], request, SamplingOptions(seed=seed, max_tokens=200))
        assert len(calls) == 1


def test_parallel_calls_come_with_the_ids_the_grammar_pinned(parallel_answer):
    _, _, calls, call_ids = parallel_answer
    assert 1 < len(calls) <= MAX_PARALLEL_CALLS
    assert [call.id for call in calls] == list(call_ids[: len(calls)]) and len(set(call_ids)) == len(call_ids)


def test_tool_choice_none_bans_the_tool_calls_token(engine):
    request = tool_request([WEATHER], choice="none")
    sampling, ids = tool_sampling(request, GREEDY, trigger=5, taken_ids=())
    assert sampling.banned_tokens == (5,) and sampling.grammar is None and ids == ()
    _, deltas, calls, _ = answer(engine, [Message("user", "Go.")], request, replace(GREEDY, max_tokens=60))
    assert deltas == [] and calls == ()


def generated_tokens(engine, ids, sampling):
    """The ids a generation samples, each reported in its place, and how it stopped."""
    every = tuple(range(engine.info.n_vocab))
    generation = engine.generate(ids, replace(sampling, reported_tokens=every))
    tokens = [chunk.id for chunk in generation if isinstance(chunk, ControlToken)]
    return tokens, generation.stats.stop_reason


def test_a_banned_token_is_never_sampled(engine):
    ids = engine.chat_ids([Message("user", "Hello")])
    free, _ = generated_tokens(engine, ids, SamplingOptions(temperature=0, max_tokens=40))
    banned, _ = generated_tokens(engine, ids, SamplingOptions(temperature=0, max_tokens=40, banned_tokens=(free[0],)))
    assert free[0] not in banned and len(banned) == 40


def test_a_lazy_grammar_applies_from_its_trigger_token_on(engine):
    ids = engine.chat_ids([Message("user", "Hello")])
    free, _ = generated_tokens(engine, ids, SamplingOptions(temperature=0, max_tokens=12))
    at = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    grammar = f'root ::= <[{free[at]}]> "done"'
    lazy = SamplingOptions(temperature=0, max_tokens=12, grammar=grammar, grammar_trigger=free[at])
    tokens, stop_reason = generated_tokens(engine, ids, lazy)
    assert tokens[: at + 1] == free[: at + 1] and stop_reason == "eos"
    assert b"".join(engine.piece(token) for token in tokens[at + 1 :]) == b"done"


def test_auto_answers_text_while_the_model_does_not_choose_the_token(engine):
    request = tool_request([WEATHER], choice="auto")
    content, deltas, calls, _ = answer(
        engine, [Message("user", "Hello")], request, SamplingOptions(temperature=0, max_tokens=20)
    )
    plain = "".join(
        engine.generate(
            engine.chat_ids([Message("user", "Hello")], tools=request.tools),
            SamplingOptions(temperature=0, max_tokens=20),
            answer=True,
        )
    )
    assert (content, deltas, calls) == (plain, [], ())


def test_cut_calls_are_an_error_not_an_answer(engine):
    request = tool_request([NESTED], choice="required")
    with pytest.raises(AnswerCutError):
        answer(engine, [Message("user", "Go.")], request, SamplingOptions(temperature=0, max_tokens=6))


def test_the_control_token_is_reported_in_its_place(engine):
    request = tool_request([NOW], choice="required", parallel=False)
    sampling, _ = tool_sampling(request, GREEDY, trigger=5, taken_ids=())
    chunks = list(
        engine.generate(engine.chat_ids([Message("user", "Go.")], tools=request.tools), sampling, answer=True)
    )
    assert chunks[0] == ControlToken(5) and all(isinstance(c, str) for c in chunks[1:])


def test_tools_on_a_v1_model_are_refused_naming_the_8x22b_instruct(v1_engine):
    with pytest.raises(ToolsNotSupportedError, match="Mixtral-8x22B-Instruct"):
        v1_engine.chat_ids([Message("user", "Hi")], tools=tools_from_dicts([WEATHER]))


def test_tools_on_a_raw_completion_are_refused(engine):
    from mixtral_cli.family.prompt_ids import PromptMode

    with pytest.raises(ToolsNotSupportedError):
        engine.completion_ids("Once upon a time", mode=PromptMode.RAW, tools=tools_from_dicts([WEATHER]))


@pytest.mark.parametrize(
    "tools, choice",
    [
        ([{"type": "function", "function": {"name": "a", "parameters": {"type": "object", "not": {}}}}], None),
        ([{"type": "function", "function": {"name": "a", "parameters": {"type": "string", "pattern": "(("}}}], None),
        ([{"type": "function", "function": {"name": "a", "parameters": {"type": "string", "minLength": 10**9}}}], None),
        ([WEATHER], {"type": "function", "function": {"name": "missing"}}),
        ([WEATHER], "sometimes"),
        (None, "required"),
    ],
)
def test_tools_the_grammar_cannot_take_are_refused_in_one_sentence(tools, choice):
    with pytest.raises(InvalidToolsError) as caught:
        tool_request(tools, choice=choice)
    assert caught.value.message.endswith(".")


def test_parallel_tool_calls_must_be_a_boolean():
    with pytest.raises(InvalidToolsError):
        tool_request([WEATHER], parallel="yes")


def test_a_reader_gives_a_missing_id_a_fresh_one():
    reader = ToolAnswerReader(trigger=5, ids=())
    items = list(reader.read([ControlToken(5), ' [{"name": "now", "arguments": {}}]']))
    (call,) = reader.calls("eos")
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", call.id) and items[0].id == call.id


def test_text_before_the_token_is_content():
    reader = ToolAnswerReader(trigger=5, ids=["abcdefghi"])
    items = list(reader.read(["Let me check. ", ControlToken(5), ' [{"name": "now", "arguments": {}, "id": "x"}]']))
    assert items[0] == "Let me check. " and reader.calls("eos")[0].id == "abcdefghi"


def test_the_text_of_the_token_is_only_text():
    reader = ToolAnswerReader(trigger=5)
    items = list(reader.read(['[TOOL_CALLS] [{"name": "now", "arguments": {}}]']))
    assert items == ['[TOOL_CALLS] [{"name": "now", "arguments": {}}]'] and reader.calls("eos") == ()


@pytest.mark.parametrize("text", [' [{"arguments": {}}]', " not json", ' {"name": "now", "arguments": {}}', " [1]"])
def test_what_is_not_a_list_of_calls_is_refused(text):
    reader = ToolCallReader(lambda: "abcdefghi")
    with pytest.raises(ToolCallError):
        list(reader.feed(text))
        reader.finish()


def test_a_seed_gives_the_same_call_ids_and_none_the_same_twice():
    assert fresh_call_ids(3, seed=4) == fresh_call_ids(3, seed=4)
    assert fresh_call_ids(3) != fresh_call_ids(3)


def test_tool_choice_values():
    assert tool_request([WEATHER]).choice is ToolChoice.AUTO
    assert tool_request([WEATHER], choice="none").choice is ToolChoice.NONE
    assert tool_request([]) is None
