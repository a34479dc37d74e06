"""The rules of an answer (docs/answers.md), each the same for `mixtral complete` in this process and for a real
`mixtral serve`: through `complete --server`, OpenAI's routes (the official client) and the scoring route."""

from __future__ import annotations

import json

import openai
import pytest

from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions
from mixtral_cli.family.prompt_ids import Message

from .helpers import run_mixtral
from .servers import Server

N_CTX = 128
# The local side runs as the server does: its layout and thread count decide a random model's greedy answers.
AS_SERVED = ("--repack", "--threads", "1", "-c", str(N_CTX))
PROMPT = "Tell me about the mixture of experts"
LONG_STRING = {"type": "string", "minLength": 30}  # an answer 14 tokens cannot finish


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    running = Server(demo_model, tmp_path_factory.mktemp("answer-home"), "-c", str(N_CTX))
    yield running
    running.stop()


@pytest.fixture
def client(server) -> openai.OpenAI:
    return server.openai_client()


def local(*args: str, input: str = ""):  # noqa: ANN201 - CompletedProcess
    return run_mixtral("complete", "-m", "tiny", *AS_SERVED, *args, input=input)


def over(server: Server, *args: str, input: str = ""):  # noqa: ANN201 - CompletedProcess
    return run_mixtral("complete", "--server", server.url, *args, input=input)


def chat(client: openai.OpenAI, content: str, **options):  # noqa: ANN201
    messages = [{"role": "user", "content": content}]
    return client.chat.completions.create(model="tiny", messages=messages, temperature=0, **options)


@pytest.mark.parametrize(
    ("cut_by", "args", "options"),
    [
        ("length", ("-n", "14"), {"max_tokens": 14}),
        ("stop", ("-n", "60", "--stop", '"'), {"max_tokens": 60, "stop": ['"']}),  # the string's opening quote
    ],
)
def test_a_cut_shaped_answer_is_cut_on_every_path(server, client, cut_by, args, options):
    asked = ("--chat", "--temperature", "0", *args, "--json-schema", json.dumps(LONG_STRING), PROMPT)
    here, there = local(*asked), over(server, *asked)
    reported = json.loads(local("--json", *asked).stdout)
    answer = chat(
        client,
        PROMPT,
        response_format={"type": "json_schema", "json_schema": {"name": "long", "schema": LONG_STRING}},
        **options,
    )

    assert (here.returncode, here.stdout) == (there.returncode, there.stdout) == (3, "")
    assert here.stderr == there.stderr and "cut by" in here.stderr
    assert reported["stop_reason"] == cut_by
    assert answer.choices[0].finish_reason == "length"  # OpenAI's word for an answer that is not whole
    assert answer.choices[0].message.content == reported["text"]


def test_a_cut_shaped_answer_to_a_model_card_request_is_cut_on_every_path(server):
    request = {"input_data": {"input_string": [PROMPT], "parameters": {"max_new_tokens": 14, "do_sample": False}}}
    request["input_data"]["parameters"]["json_schema"] = LONG_STRING
    here = local("--request", "-", input=json.dumps(request))
    there = over(server, "--request", "-", input=json.dumps(request))

    assert (here.returncode, here.stdout) == (there.returncode, there.stdout) == (3, "")
    assert here.stderr == there.stderr and "cut by --max-tokens (14)" in here.stderr


def test_max_tokens_past_the_context_ends_at_the_context_on_every_path(server, client):
    asked = ("--json", "--chat", "--temperature", "0", "-n", "100000", PROMPT)
    here, there = json.loads(local(*asked).stdout), json.loads(over(server, *asked).stdout)
    answer = chat(client, PROMPT, max_tokens=100_000)
    raw = client.completions.create(model="tiny", prompt=PROMPT, temperature=0, max_tokens=100_000)
    raw_here = json.loads(local("--json", "--raw", "--temperature", "0", "-n", "100000", PROMPT).stdout)

    assert here["stop_reason"] == there["stop_reason"] == raw_here["stop_reason"] == "context"
    assert here["prompt_tokens"] + here["completion_tokens"] > N_CTX  # the last token is sampled, never evaluated
    assert (there["text"], there["completion_tokens"]) == (here["text"], here["completion_tokens"])
    assert (answer.choices[0].message.content, answer.usage.completion_tokens) == (
        here["text"],
        here["completion_tokens"],
    )
    assert answer.choices[0].finish_reason == raw.choices[0].finish_reason == "length"
    assert (raw.choices[0].text, raw.usage.completion_tokens) == (raw_here["text"], raw_here["completion_tokens"])


SCHEMA = '{"type": "boolean"}'


def prompt_tokens(model, said: str) -> int:  # noqa: ANN001
    with Engine(model, EngineOptions(ctx_size=N_CTX)) as engine:
        return len(engine.chat_ids([Message("user", said)]))


def test_a_shapes_instruction_follows_the_prompt_on_every_path(server, client, demo_model):
    asked = ("--json", "--chat", "-n", "8", "--json-schema", SCHEMA, "Is it?")
    here, there = json.loads(local(*asked).stdout), json.loads(over(server, *asked).stdout)
    response_format = {"type": "json_schema", "json_schema": {"name": "yes_no", "schema": json.loads(SCHEMA)}}
    answer = chat(client, "Is it?", max_tokens=8, response_format=response_format)

    expected = prompt_tokens(demo_model, "Is it?\n\nAnswer with JSON that follows this JSON schema:\n" + SCHEMA)
    assert here["prompt_tokens"] == there["prompt_tokens"] == answer.usage.prompt_tokens == expected


def test_no_schema_prompt_leaves_the_instruction_out_here_and_over_the_server(server, demo_model):
    asked = ("--json", "--chat", "-n", "8", "--json-schema", SCHEMA, "--no-schema-prompt", "Is it?")
    here, there = json.loads(local(*asked).stdout), json.loads(over(server, *asked).stdout)

    assert here["prompt_tokens"] == there["prompt_tokens"] == prompt_tokens(demo_model, "Is it?")
