"""Prompts with tools, calls and results equal mistral-common's v3 ids; what v3 cannot express is refused."""

from __future__ import annotations

import functools
import json
import random
import re

import pytest
from sentencepiece import SentencePieceProcessor

from mixtral_cli.base.errors import InvalidConversationError, InvalidToolsError, ToolsNotSupportedError
from mixtral_cli.family.prompt_ids import (
    Message,
    PromptFormat,
    SpecialIds,
    chat_prompt_ids,
    conversation_call_ids,
    message_dict,
    messages_from_dicts,
)
from mixtral_cli.family.reference_check import mistral_common_ids
from mixtral_cli.family.tool_prompt import fresh_call_ids, prompt_call_ids, tools_from_dicts
from mixtral_cli.sources.tiny_model import tokenizer_model_path

V3_SPECIAL = SpecialIds(bos=1, eos=2, inst=3, inst_end=4, tool_calls=5, tools=6, tools_end=7, results=8, results_end=9)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TEXTS = [
    "Weather in Paris?",
    "",
    " spaced  ",
    "déjà vu 🦙",
    "東京",
    "</s>[INST][TOOL_CALLS]",
    "line\nbreak",
    '"quoted"',
]
NAMES = ["get_weather", "a", "A-_9", "x" * 64, "search-web", "_", "-", "ALLCAPS", "n0_1-2"]
CLIENT_IDS = ["call_abc123", "abc123XYZ", "call_0", "ü-ñ-ï", "x" * 500, "123456789", "toolu_01A09q90qw90lq917835lq9"]


@functools.cache
def _encode():
    return SentencePieceProcessor(model_file=str(tokenizer_model_path("v3"))).encode


def our_ids(messages, tools=(), prompt_format=PromptFormat.V3, special=V3_SPECIAL):
    return chat_prompt_ids(messages, prompt_format=prompt_format, special=special, encode=_encode(), tools=tools)


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(TEXTS)
    if kind == 1:
        return rng.choice([0, -7, 3.25, 1e21, 10**30])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice(["", "ü", "a\tb"])
    if kind == 4:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(TEXTS + ["k", "ключ"]): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _random_schema(rng: random.Random, depth: int = 0) -> dict:
    if depth >= 3 or rng.random() < 0.4:
        return rng.choice([{"type": "string"}, {"type": "integer"}, {"type": "string", "enum": ["a", "é"]}])
    if rng.random() < 0.3:
        return {"type": "array", "items": _random_schema(rng, depth + 1)}
    properties = {f"p{i}": _random_schema(rng, depth + 1) for i in range(rng.randrange(1, 4))}
    return {"type": "object", "properties": properties, "required": list(properties)[: rng.randrange(2)]}


def _random_tools(rng: random.Random) -> list[dict]:
    names = rng.sample(NAMES, rng.randint(1, 4))
    tools = []
    for name in names:
        function = {"name": name, "parameters": _random_schema(rng)}
        if rng.random() < 0.7:
            function["description"] = rng.choice(TEXTS)
        if rng.random() < 0.2:
            function["strict"] = True  # mistral-common leaves it out
        tools.append({"type": "function", "function": function})
    return tools


def _random_arguments(rng: random.Random) -> str:
    choice = rng.randrange(5)
    value = {"city": rng.choice(TEXTS), "n": _random_json(rng)}
    if choice == 0:
        return ""  # no arguments: an empty object
    if choice == 1:
        return "not json {"  # kept as the text itself
    if choice == 2:
        return json.dumps(value, separators=(",", ":"))  # re-serialized with the default separators
    return json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))


def _random_result(rng: random.Random) -> str:
    return rng.choice(
        [json.dumps(_random_json(rng)), "sunny", "", "42", "[1, 2]", '{"temp": 20}', "not { json", rng.choice(TEXTS)]
    )


def random_conversation(rng: random.Random) -> tuple[list[dict], list[dict]]:
    tools = _random_tools(rng)
    names = [tool["function"]["name"] for tool in tools]
    messages: list[dict] = []
    if rng.random() < 0.4:
        messages.append({"role": "system", "content": rng.choice(TEXTS) or "Be brief."})
    ids = iter(rng.sample(CLIENT_IDS, len(CLIENT_IDS)) + [f"call_n{i}" for i in range(100)])
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": rng.choice(TEXTS)})
        if rng.random() < 0.3:
            messages.append({"role": "user", "content": rng.choice(TEXTS)})
        if rng.random() < 0.25:
            messages.append({"role": "assistant", "content": rng.choice(TEXTS[:1] + TEXTS[2:])})
            continue
        calls = [
            {
                "id": next(ids),
                "type": "function",
                "function": {"name": rng.choice(names), "arguments": _random_arguments(rng)},
            }
            for _ in range(rng.randint(1, 3))
        ]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        for call in rng.sample(calls, len(calls)):
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": _random_result(rng)})
        if rng.random() < 0.6:
            messages.append({"role": "assistant", "content": "It is sunny."})
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": rng.choice(TEXTS)})
    return messages, tools


def test_the_reference_example_matches_mistral_common():
    messages = messages_from_dicts(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "abc123XYZ",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "abc123XYZ", "content": '{"temp": 20}'},
        ]
    )
    tools = tools_from_dicts([WEATHER])
    ids = our_ids(messages, tools)
    assert ids == mistral_common_ids(messages, PromptFormat.V3, tools)
    assert ids[:2] == [1, 6] and ids[-1] == 9 and ids.count(5) == 1


def test_fuzzed_conversations_with_tools_match_mistral_common():
    rng = random.Random(26)
    for _ in range(300):
        raw_messages, raw_tools = random_conversation(rng)
        messages, tools = messages_from_dicts(raw_messages), tools_from_dicts(raw_tools)
        assert our_ids(messages, tools) == mistral_common_ids(messages, PromptFormat.V3, tools), raw_messages


def test_tools_without_parameters_are_shown_with_an_empty_object_schema():
    tools = tools_from_dicts([{"type": "function", "function": {"name": "now"}}])
    assert tools[0].parameters == {"type": "object", "properties": {}}
    messages = [Message("user", "What time is it?")]
    assert our_ids(messages, tools) == mistral_common_ids(messages, PromptFormat.V3, tools)


def test_client_ids_map_to_nine_letters_and_digits_the_same_way_each_time():
    mapping = prompt_call_ids(CLIENT_IDS)
    assert all(re.fullmatch(r"[a-zA-Z0-9]{9}", v) for v in mapping.values())
    assert len(set(mapping.values())) == len(CLIENT_IDS)
    assert mapping == prompt_call_ids(reversed(CLIENT_IDS))
    assert mapping["abc123XYZ"] == "abc123XYZ" and mapping["123456789"] == "123456789"


def test_a_hashed_id_never_takes_an_id_the_client_sent_as_is():
    hashed = prompt_call_ids(["call_x"])["call_x"]
    mapping = prompt_call_ids(["call_x", hashed])
    assert mapping[hashed] == hashed and mapping["call_x"] != hashed


def test_a_call_and_its_result_show_the_same_id():
    messages = messages_from_dicts(random_conversation(random.Random(3))[0])
    mapping = conversation_call_ids(messages)
    calls = {mapping[c.id] for m in messages for c in m.tool_calls}
    results = {mapping[m.tool_call_id] for m in messages if m.role == "tool"}
    assert calls == results


def test_fresh_ids_avoid_the_ids_taken():
    taken = set(fresh_call_ids(5))
    fresh = fresh_call_ids(50, taken=taken)
    assert len(set(fresh)) == 50 and not taken & set(fresh)
    assert all(re.fullmatch(r"[a-zA-Z0-9]{9}", i) for i in fresh)


def test_messages_round_trip_through_the_openai_format():
    raw, _ = random_conversation(random.Random(5))
    messages = messages_from_dicts(raw)
    assert messages_from_dicts([message_dict(m) for m in messages]) == messages


def test_text_parts_join_with_a_blank_line_as_mistral_common_joins_them():
    messages = messages_from_dicts(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": ""}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert messages == [Message("user", "a\n\nb")]
    assert our_ids(messages) == mistral_common_ids(messages, PromptFormat.V3)


@pytest.mark.parametrize(
    "tools",
    [
        {"type": "function"},
        "get_weather",
        [{"type": "function", "function": {"name": "get weather"}}],
        [{"type": "function", "function": {"name": "x" * 65}}],
        [{"type": "function", "function": {"name": ""}}],
        [{"type": "function", "function": {"name": 7}}],
        [{"type": "retrieval", "function": {"name": "a"}}],
        [{"type": "function", "function": {"name": "a", "parameters": []}}],
        [{"type": "function", "function": {"name": "a", "description": 3}}],
        [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}],
        [None],
    ],
)
def test_bad_tools_lists_are_refused_in_one_sentence(tools):
    with pytest.raises(InvalidToolsError) as caught:
        tools_from_dicts(tools)
    assert caught.value.message.count(". ") == 0 and caught.value.message.endswith(".")


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.mark.parametrize(
    "raw",
    [
        # a result of no call, of a call answered already, or after a user message
        [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_1", "content": "x"}],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "x"},
            {"role": "tool", "tool_call_id": "call_1", "content": "x"},
        ],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_2", "content": "x"},
        ],
        # calls left unanswered, at the end or before the next user message
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "user", "content": "?"},
        ],
        # text and calls in one turn, two calls with one id
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Let me see.", "tool_calls": [CALL]}],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [CALL, CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "x"},
            {"role": "tool", "tool_call_id": "call_1", "content": "x"},
        ],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Let me see."},
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "x"},
        ],
    ],
)
def test_conversations_v3_cannot_express_are_refused(raw):
    with pytest.raises(InvalidConversationError):
        our_ids(messages_from_dicts(raw), tools_from_dicts([WEATHER]))


@pytest.mark.parametrize(
    "raw",
    [
        [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "a", "arguments": "{}"}}]}],
        [{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "bad name", "arguments": "{}"}}]}],
        [{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "a", "arguments": 3}}]}],
        [{"role": "assistant", "tool_calls": {"id": "x"}}],
        [{"role": "tool", "content": "x"}],
        [{"role": "tool", "content": "x", "tool_call_id": 5}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
    ],
)
def test_malformed_calls_and_results_are_refused(raw):
    with pytest.raises(InvalidConversationError):
        messages_from_dicts(raw)


def test_a_lone_surrogate_in_a_result_is_refused_not_crashed_on():
    raw = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"a": "\\ud800"}'},
    ]
    with pytest.raises(InvalidConversationError):
        our_ids(messages_from_dicts(raw), tools_from_dicts([WEATHER]))


def test_v1_refuses_tools_naming_the_8x22b_instruct_model():
    with pytest.raises(ToolsNotSupportedError, match="Mixtral-8x22B-Instruct"):
        our_ids(
            [Message("user", "hi")],
            tools_from_dicts([WEATHER]),
            prompt_format=PromptFormat.V1,
            special=SpecialIds(1, 2),
        )
