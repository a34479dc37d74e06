"""Function calling through `mixtral serve` as agent clients see it: the official `openai` client with `tools`
against a real server on a tiny v3 Mixtral, and the prompt ids checked against mistral-common."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest

from mixtral_cli.family.prompt_ids import PromptFormat, messages_from_dicts
from mixtral_cli.family.reference_check import mistral_common_ids
from mixtral_cli.family.tool_prompt import tools_from_dicts
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .servers import Server
from .test_tool_calls import CITY

pytestmark = pytest.mark.usefixtures("demo_model")

MODEL = "tiny-Q8_0"  # the served file's name, which a request must name
ASK = [{"role": "user", "content": "Weather in Paris?"}]
SEEDED = {"temperature": 0, "seed": 1, "max_tokens": 300}  # the seed picks the new calls' ids


@pytest.fixture(scope="module")
def server(convert, tmp_path_factory):
    model = convert(TinyMixtralSpec(tokenizer="v3", instruct=True), "Q8_0")
    running = Server(model, tmp_path_factory.mktemp("serve-tools-home"), "--ctx-size", "2048")
    yield running
    running.stop()


@pytest.fixture
def client(server) -> openai.OpenAI:
    return server.openai_client()


def post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def required_call(client, **options):  # noqa: ANN201
    options = {"tool_choice": "required", "parallel_tool_calls": False, **SEEDED, **options}
    return client.chat.completions.create(model=MODEL, messages=ASK, tools=[CITY], **options)


def test_required_calls_have_arguments_that_follow_the_schema(client):
    response = required_call(client)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", call.id)
    jsonschema.validate(json.loads(call.function.arguments), CITY["function"]["parameters"])


def test_streamed_deltas_reassemble_to_the_same_calls(client):
    whole = required_call(client).choices[0].message.tool_calls
    stream = required_call(client, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or ():
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            entry["name"] += (delta.function.name or "") if delta.function else ""
            entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    expected = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in whole]
    assert [calls[i] for i in sorted(calls)] == expected and finish == "tool_calls"


def test_a_full_round_prompts_what_mistral_common_encodes_with_the_clients_own_ids(client, server):
    # The client invents its ids, as OpenAI's do; the model sees 9 letters and digits in their place.
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_Xy12_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_Xy12_abc", "content": "sunny, 20°C"},
    ]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=[CITY], tool_choice="none", **SEEDED)
    status, prompt = post(f"{server.url}/apply-template", {"messages": history, "tools": [CITY]})
    assert status == 200
    expected = mistral_common_ids(messages_from_dicts(history), PromptFormat.V3, tools_from_dicts([CITY]))
    assert prompt["tokens"] == expected and answer.usage.prompt_tokens == len(expected)
    assert "call_Xy12_abc" not in prompt["prompt"] and re.search(r'"call_id": "[a-zA-Z0-9]{9}"', prompt["prompt"])


def test_a_call_the_server_made_continues_into_an_answer(client):
    call = required_call(client).choices[0].message.tool_calls[0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 20}'},
    ]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=[CITY], tool_choice="none", **SEEDED)
    assert answer.choices[0].message.tool_calls is None and answer.choices[0].message.content


def test_tool_choice_none_never_calls(client):
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[CITY], tool_choice="none", **SEEDED)
    assert response.choices[0].finish_reason != "tool_calls" and response.choices[0].message.tool_calls is None


def test_tool_choice_none_outweighs_a_logit_bias_towards_the_calls_token(client):
    options = {**SEEDED, "max_tokens": 8, "logit_bias": {"5": 100}}  # 5: [TOOL_CALLS]
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[CITY], tool_choice="none", **options)
    assert response.choices[0].finish_reason != "tool_calls" and response.choices[0].message.tool_calls is None


def test_each_of_n_choices_makes_its_own_calls(client):
    first = required_call(client).choices[0]
    choices = required_call(client, n=2).choices
    assert [c.index for c in choices] == [0, 1] and all(c.finish_reason == "tool_calls" for c in choices)
    assert choices[0].message.tool_calls == first.message.tool_calls
    for choice in choices:
        for call in choice.message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), CITY["function"]["parameters"])


def test_streamed_n_choices_reassemble_to_their_own_calls(client):
    whole = required_call(client, n=2).choices
    calls: dict[int, dict[int, dict]] = {0: {}, 1: {}}
    for chunk in required_call(client, n=2, stream=True):
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                entry = calls[choice.index].setdefault(delta.index, {"id": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    for choice in whole:
        expected = [{"id": c.id, "arguments": c.function.arguments} for c in choice.message.tool_calls]
        assert [calls[choice.index][i] for i in sorted(calls[choice.index])] == expected


def test_a_call_answers_the_log_probabilities_of_its_every_token(client):
    response = required_call(client, logprobs=True)
    assert response.choices[0].message.tool_calls
    assert len(response.choices[0].logprobs.content) == response.usage.completion_tokens


def test_without_parallel_calls_one_call_comes(client):
    assert len(required_call(client, seed=2).choices[0].message.tool_calls) == 1


def test_a_named_function_is_called(client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    calls = required_call(client, tool_choice=choice).choices[0].message.tool_calls
    assert [call.function.name for call in calls] == ["get_weather"]


def test_tools_on_the_8x7b_format_are_refused_naming_the_8x22b_instruct(demo_model, tmp_path):
    running = Server(demo_model, tmp_path / "home")
    try:
        v1 = running.openai_client()
        with pytest.raises(openai.BadRequestError, match="Mixtral-8x22B-Instruct"):
            v1.chat.completions.create(model="tiny", messages=ASK, tools=[CITY])
    finally:
        running.stop()


@pytest.mark.parametrize(
    "changes, message, param",
    [
        ({"tools": {"type": "function"}}, "must be a JSON list", "tools"),
        ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "is refused", "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "a", "parameters": {"not": {}}}}]},
            "parameters",
            "tools",
        ),
        (
            {"tools": [CITY], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "no tool offers",
            "tool_choice",
        ),
        ({"tools": [CITY], "tool_choice": 7}, "tool_choice must be", "tool_choice"),
        ({"tools": [CITY], "parallel_tool_calls": "yes"}, "true or false", "parallel_tool_calls"),
        ({"tool_choice": "required"}, "offers no tools", "tool_choice"),
        (
            {"messages": [*ASK, {"role": "tool", "tool_call_id": "x", "content": "?"}], "tools": [CITY]},
            "unanswered call",
            "messages",
        ),
    ],
)
def test_hostile_tool_requests_are_400_in_one_sentence_naming_the_parameter(server, changes, message, param):
    status, body = post(f"{server.url}/v1/chat/completions", {"model": MODEL, "messages": ASK, **changes})
    assert status == 400 and message in body["error"]["message"] and body["error"]["param"] == param


def test_tokenize_parses_control_tokens_and_adds_bos_when_asked(server):
    status, tokens = post(f"{server.url}/tokenize", {"content": "[TOOL_CALLS] Paris", "add_special": True})
    assert status == 200 and tokens["tokens"][:2] == [1, 5]


def test_detokenize_gives_back_the_text_tokenize_read(server):
    text = "Paris, 東京 🦙"
    _, tokens = post(f"{server.url}/tokenize", {"content": text, "parse_special": False})
    status, detokenized = post(f"{server.url}/detokenize", {"tokens": tokens["tokens"]})
    assert status == 200 and detokenized["content"] == " " + text  # SentencePiece's word-start space


def test_tokenize_with_pieces_gives_each_tokens_text(server):
    _, plain = post(f"{server.url}/tokenize", {"content": "Paris 🦙"})
    _, pieces = post(f"{server.url}/tokenize", {"content": "Paris 🦙", "with_pieces": True})
    assert [p["id"] for p in pieces["tokens"]] == plain["tokens"]
    assert pieces["tokens"][0]["piece"] == " Paris"


def test_detokenize_refuses_ids_outside_the_vocabulary(server):
    status, body = post(f"{server.url}/detokenize", {"tokens": [1, 10**9]})
    assert status == 400 and "below 32768" in body["error"]["message"]
