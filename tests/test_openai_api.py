"""`mixtral serve` as OpenAI's clients see it: every parameter they send honoured or refused with OpenAI's own
error, errors decoded as the clients' own exception classes, a browser's preflight, and the Responses API.

The clients are the official `openai` package and simonw's `llm` (its OpenAI-compatible models, configured in
its extra-openai-models.yaml), against real servers on loopback running the demo model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import openai
import pytest

from .servers import Server
from .test_engine import LOGPROB_TOLERANCE

pytestmark = pytest.mark.usefixtures("demo_model")

N_CTX = 256
GREEDY = {"temperature": 0, "max_tokens": 12}
PROMPT = "Tell me about the mixture of experts"
TOO_LONG = "word " * (2 * N_CTX)


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    running = Server(
        demo_model,
        tmp_path_factory.mktemp("openai-home"),
        "--ctx-size",
        str(N_CTX),
        "--cors-origin",
        "http://localhost:3000",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def engine(server):
    """The served model in this process, as the server runs it (layout, threads, context): token ids and sampling
    to compare the server's answers with."""
    from mixtral_cli.engine.model import Engine
    from mixtral_cli.engine.options import EngineOptions

    with Engine(server.model, EngineOptions(ctx_size=N_CTX, threads=1, repack=True)) as loaded:
        yield loaded


@pytest.fixture
def client(server) -> openai.OpenAI:
    return server.openai_client()


def chat(client: openai.OpenAI, content: str = PROMPT, **options):  # noqa: ANN201
    return client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": content}], **{**GREEDY, **options}
    )


def http(method: str, url: str, *, body: dict | None = None, headers: dict | None = None):  # noqa: ANN201
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# -- errors, as the client's own classes ------------------------------------------------------------------


def test_a_prompt_over_the_context_is_bad_request_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(client, TOO_LONG)

    assert raised.value.code == "context_length_exceeded"


def test_a_streamed_prompt_over_the_context_fails_at_create_not_mid_stream(client):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(client, TOO_LONG, stream=True)

    assert raised.value.code == "context_length_exceeded"


def test_a_model_the_server_does_not_serve_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"


@pytest.mark.parametrize(
    "name", ["tiny", "tiny-mixtral-instruct-chat-Q4_K_M", "tiny-mixtral-instruct-chat-Q4_K_M.gguf"]
)
def test_the_served_model_answers_to_its_names(client, name):
    assert client.models.retrieve(name).id == client.models.list().data[0].id
    assert client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}], **GREEDY).choices


def test_models_retrieve_of_another_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_wrong_api_key_is_authentication_error_invalid_api_key(demo_model, tmp_path):
    keyed = Server(demo_model, tmp_path, "--api-key", "right")
    try:
        wrong = keyed.openai_client("wrong")
        with pytest.raises(openai.AuthenticationError) as raised:
            wrong.models.list()
    finally:
        keyed.stop()

    assert raised.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ],
)
def test_a_parameter_this_server_cannot_honour_is_refused_by_name(client, options, param):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(client, **options)

    assert raised.value.code == "unsupported_parameter"
    assert raised.value.param == param


def test_suffix_and_best_of_are_refused_by_name(client):
    for options, param in (({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of")):
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(model="tiny", prompt=PROMPT, **GREEDY, **options)
        assert raised.value.param == param


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)]
)
def test_unknown_routes_and_methods_answer_openais_error_object(server, method, path, status):
    got, _, body = http(method, f"{server.url}{path}")

    assert got == status
    assert set(json.loads(body)["error"]) >= {"message", "type", "param", "code"}


def test_an_error_carries_what_server_needs_to_report_it_as_a_local_run(client):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(client, TOO_LONG)

    error = raised.value.body
    assert error["hint"].startswith("Shorten the prompt") and error["exit_code"] == 1


def test_a_huge_max_tokens_is_answered_until_the_context_is_full(client):
    answer = chat(client, max_tokens=10**9).choices[0]

    assert answer.finish_reason in ("length", "stop")
    assert answer.message.content


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("chat/completions", {"top_logprobs": 2}, "top_logprobs"),
        ("chat/completions", {"logprobs": "yes"}, "logprobs"),
        ("chat/completions", {"frequency_penalty": 2.5}, "frequency_penalty"),
        ("chat/completions", {"logit_bias": {"12": "much"}}, "logit_bias"),
        ("chat/completions", {"logit_bias": {"-3": 1}}, "logit_bias"),
        ("chat/completions", {"n": 0}, "n"),
        ("chat/completions", {"n": 10**6}, "n"),
        ("completions", {"prompt": [[1, 2], "mixed"]}, "prompt"),
        ("completions", {"prompt": []}, "prompt"),
        ("completions", {"prompt": "Hi", "echo": "yes"}, "echo"),
        ("completions", {"prompt": "Hi", "logprobs": 100}, "logprobs"),
        ("responses", {"input": [{"type": "function_call", "name": "f"}]}, "input"),
        ("responses", {"input": "Hi", "tools": [{"type": "web_search"}]}, "tools"),
        ("responses", {"input": [{"role": "robot", "content": "Hi"}]}, "input"),
        ("chat/completions", {"messages": [{"role": "robot", "content": "Hi"}]}, "messages"),
    ],
)
def test_hostile_parameters_are_400_naming_them(server, route, body, param):
    messages = {"messages": [{"role": "user", "content": "Hi"}]} if route == "chat/completions" else {}
    status, _, answer = http("POST", f"{server.url}/v1/{route}", body={**messages, **body})

    assert status == 400
    assert json.loads(answer)["error"]["param"] == param


def test_prompts_times_choices_past_the_bound_are_one_400_before_any_answer(server):
    from mixtral_cli.serve.request_rules import MAX_ANSWERS_PER_REQUEST

    prompts = ["Hi"] * (MAX_ANSWERS_PER_REQUEST // 2 + 1)
    status, _, answer = http("POST", f"{server.url}/v1/completions", body={"prompt": prompts, "n": 2})

    assert status == 400
    assert f"{MAX_ANSWERS_PER_REQUEST} at most" in json.loads(answer)["error"]["message"]


# -- parameters honoured ------------------------------------------------------------------------------------


def test_chat_logprobs_are_the_log_softmax_of_llama_cpps_logits(client, engine):
    from mixtral_cli.engine.logprobs import log_softmax
    from mixtral_cli.engine.options import SamplingOptions
    from mixtral_cli.family.prompt_ids import Message

    from .reference import llama_cpp_logits

    answer = chat(client, logprobs=True, top_logprobs=3, max_tokens=6).choices[0]
    ids = engine.chat_ids([Message("user", PROMPT)])
    local = engine.generate(ids, SamplingOptions(temperature=0, max_tokens=6, logprobs=0), answer=True)
    list(local)
    generated = [entry.token for entry in local.logprobs]
    rows = [log_softmax(row) for row in llama_cpp_logits(engine.info.path, ids + generated)][len(ids) - 1 : -1]
    entries = answer.logprobs.content

    assert [bytes(entry.bytes) for entry in entries] == [engine.piece(token) for token in generated]
    for entry, token, row in zip(entries, generated, rows, strict=True):
        assert entry.logprob == pytest.approx(row[token], abs=LOGPROB_TOLERANCE)
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(row.max(), abs=LOGPROB_TOLERANCE)


def test_streamed_logprobs_equal_the_whole_answers(client):
    whole = chat(client, logprobs=True, top_logprobs=2).choices[0].logprobs.content
    chunks = [choice for chunk in chat(client, logprobs=True, top_logprobs=2, stream=True) for choice in chunk.choices]
    streamed = [entry for choice in chunks if choice.logprobs for entry in choice.logprobs.content]

    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in whole]
    # each piece of text with the tokens that make it, not the next ones (the answer's text drops its first space)
    pieces = [(c.delta.content, "".join(e.token for e in c.logprobs.content)) for c in chunks if c.logprobs]
    first, *rest = pieces
    assert (first[0], first[1].removeprefix(" ")) == (first[0], first[0])
    assert rest == [(text, text) for text, _ in rest]


def test_echo_gives_the_prompt_tokens_logprobs_of_llama_cpps_logits(client, server):
    from mixtral_cli.engine.logprobs import log_softmax

    from .reference import llama_cpp_logits

    ids = _text_ids(server, PROMPT)[1:]  # as given: a prompt of ids gets no BOS
    answer = client.completions.create(model="tiny", prompt=ids, echo=True, logprobs=2, max_tokens=1, temperature=0)
    logprobs = answer.choices[0].logprobs
    rows = [log_softmax(row) for row in llama_cpp_logits(server.model, ids)]

    assert logprobs.token_logprobs[0] is None
    for position, token in enumerate(ids[1:]):
        assert logprobs.token_logprobs[position + 1] == pytest.approx(rows[position][token], abs=LOGPROB_TOLERANCE)
    assert answer.choices[0].text.startswith(" Tell me about")


def test_an_echoed_text_prompts_tokens_spell_the_text_at_their_offsets(client):
    answer = client.completions.create(model="tiny", prompt=PROMPT, echo=True, logprobs=1, max_tokens=6, temperature=0)
    (choice,) = answer.choices
    tokens, offsets = choice.logprobs.tokens, choice.logprobs.text_offset
    streamed = [
        chunk.choices[0]
        for chunk in client.completions.create(
            model="tiny", prompt=PROMPT, echo=True, logprobs=1, max_tokens=6, temperature=0, stream=True
        )
        if chunk.choices[0].logprobs
    ]

    assert choice.text.startswith(PROMPT)
    assert "".join(tokens) == choice.text  # the tokenizer's space before the first word is not in the text
    assert [choice.text[offset : offset + len(token)] for token, offset in zip(tokens, offsets, strict=True)] == tokens
    # each streamed piece of text with its own tokens (on a server that runs requests side by side too)
    assert [(c.text, "".join(c.logprobs.tokens)) for c in streamed] == [(c.text, c.text) for c in streamed]
    assert [offset for c in streamed for offset in c.logprobs.text_offset] == offsets


def test_penalties_change_greedy_text_as_the_engines_sampler_does(client, engine):
    from mixtral_cli.engine.options import SamplingOptions

    # Negative: a random model seldom repeats a token, which positive penalties would need to show.
    penalties = {"frequency_penalty": -1.5, "presence_penalty": -0.5}
    served = client.completions.create(model="tiny", prompt=PROMPT, temperature=0, max_tokens=32, **penalties)
    plain = client.completions.create(model="tiny", prompt=PROMPT, temperature=0, max_tokens=32)
    sampling = SamplingOptions(temperature=0, max_tokens=32, **penalties)

    assert served.choices[0].text != plain.choices[0].text
    assert served.choices[0].text == "".join(engine.generate(engine.raw_ids(PROMPT), sampling))


def test_a_logit_bias_against_the_greedy_token_picks_the_runner_up(client, engine):
    from mixtral_cli.engine.options import SamplingOptions

    local = engine.generate(engine.raw_ids(PROMPT), SamplingOptions(temperature=0, max_tokens=1, logprobs=2))
    list(local)
    (best, _), (runner_up, _) = local.logprobs[0].top

    biased = client.completions.create(
        model="tiny", prompt=PROMPT, temperature=0, max_tokens=1, logprobs=0, logit_bias={str(best): -100}
    )

    assert biased.choices[0].logprobs.tokens == [engine.piece(runner_up).decode()]


def test_a_logit_bias_outside_the_vocabulary_is_refused_by_name(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny", prompt=PROMPT, logit_bias={"99999999": 5}, **GREEDY)

    assert raised.value.param == "logit_bias"


def test_n_gives_n_seeded_choices_and_counts_their_tokens(client):
    answer = chat(client, n=3, temperature=1.0, seed=11)
    again = chat(client, n=3, temperature=1.0, seed=11)

    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert len({c.message.content for c in answer.choices}) > 1
    assert [c.message.content for c in answer.choices] == [c.message.content for c in again.choices]
    assert answer.usage.completion_tokens == 3 * GREEDY["max_tokens"]


def test_streamed_choices_equal_the_whole_ones(client):
    whole = chat(client, n=2, temperature=1.0, seed=5)
    streamed: dict[int, list[str]] = {}
    roles = []
    for chunk in chat(client, n=2, temperature=1.0, seed=5, stream=True):
        for choice in chunk.choices:
            streamed.setdefault(choice.index, []).append(choice.delta.content or "")
            roles += [choice.index] if choice.delta.role else []

    assert roles == [0, 1]
    assert ["".join(streamed[i]) for i in (0, 1)] == [c.message.content for c in whole.choices]


def test_a_list_of_prompts_is_answered_as_each_alone(client):
    both = client.completions.create(model="tiny", prompt=[PROMPT, "Once upon a time"], **GREEDY)
    alone = [
        client.completions.create(model="tiny", prompt=p, **GREEDY).choices[0].text
        for p in (PROMPT, "Once upon a time")
    ]

    assert [c.text for c in both.choices] == alone


def test_a_prompt_of_token_ids_is_answered_as_its_text(client, server):
    ids = _text_ids(server, PROMPT)

    by_ids = client.completions.create(model="tiny", prompt=ids, **GREEDY).choices[0].text
    by_text = client.completions.create(model="tiny", prompt=PROMPT, **GREEDY).choices[0].text

    assert by_ids == by_text


def test_token_ids_outside_the_vocabulary_are_refused_by_name(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny", prompt=[1, 10**7], **GREEDY)

    assert raised.value.param == "prompt"


def test_a_conversation_ending_with_the_assistant_is_continued(client, server):
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "The experts"}]
    answer = client.chat.completions.create(model="tiny", messages=messages, **GREEDY).choices[0].message.content
    ids = _prompt_ids(server, messages)
    raw = client.completions.create(model="tiny", prompt=ids, **GREEDY).choices[0].text

    assert ids[-1] != 2  # no end of sequence after the prefix
    assert answer == raw


def test_a_system_message_after_an_assistant_turn_is_answered(client):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROMPT},
    ]
    assert client.chat.completions.create(model="tiny", messages=messages, **GREEDY).choices[0].message.content


# -- CORS ---------------------------------------------------------------------------------------------------


def test_a_browsers_preflight_is_answered_for_the_allowed_origin(server):
    headers = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }
    status, answer, _ = http("OPTIONS", f"{server.url}/v1/chat/completions", headers=headers)

    assert status == 200
    assert answer["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in answer["access-control-allow-methods"]
    assert "x-stainless-os" in answer["access-control-allow-headers"].lower()


def test_an_answer_to_the_allowed_origin_carries_the_cors_header(server):
    headers = {"Origin": "http://localhost:3000"}
    status, answer, _ = http("GET", f"{server.url}/v1/models", headers=headers)

    assert status == 200 and answer["access-control-allow-origin"] == "http://localhost:3000"


def test_another_origins_preflight_is_refused(server):
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    status, answer, _ = http("OPTIONS", f"{server.url}/v1/chat/completions", headers=headers)

    assert status == 400 and "access-control-allow-origin" not in answer


# -- the Responses API --------------------------------------------------------------------------------------


def test_a_response_is_the_chat_answer_to_its_instructions_and_input(client):
    response = client.responses.create(
        model="tiny", instructions="Be brief.", input=PROMPT, temperature=0, max_output_tokens=12
    )
    expected = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        **GREEDY,
    )

    assert response.output_text == expected.choices[0].message.content
    assert response.usage.output_tokens == expected.usage.completion_tokens


def test_a_streamed_response_is_openais_event_sequence(client):
    events = list(client.responses.create(model="tiny", input=PROMPT, temperature=0, max_output_tokens=12, stream=True))
    whole = client.responses.create(model="tiny", input=PROMPT, temperature=0, max_output_tokens=12)

    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text


def test_a_responses_json_schema_format_is_a_valid_answer(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    text_format = {"format": {"type": "json_schema", "name": "person", "schema": schema}}
    response = client.responses.create(model="tiny", input=PROMPT, text=text_format, max_output_tokens=64)

    value = json.loads(response.output_text)
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)


def test_previous_response_id_is_refused_in_one_line(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="tiny", input="Hi", previous_response_id="resp_1")

    assert raised.value.param == "previous_response_id"
    assert "\n" not in raised.value.message


# -- simonw's llm -------------------------------------------------------------------------------------------


@pytest.fixture
def llm_home(server, tmp_path):
    """An llm configuration with the server's model as a chat, a completion and a Responses model."""
    models = [
        {"model_id": "mixtral-chat", "model_name": "tiny", "api_base": f"{server.url}/v1"},
        {"model_id": "mixtral-text", "model_name": "tiny", "api_base": f"{server.url}/v1", "completion": True},
        {"model_id": "mixtral-responses", "model_name": "tiny", "api_base": f"{server.url}/v1", "responses": True},
        {"model_id": "not-served", "model_name": "gpt-4o", "api_base": f"{server.url}/v1"},
    ]
    (tmp_path / "extra-openai-models.yaml").write_text(json.dumps(models))  # JSON is YAML
    return tmp_path


def run_llm(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLM_USER_PATH": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "llm", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize("model", ["mixtral-chat", "mixtral-responses"])
def test_llm_answers_as_the_openai_client(llm_home, client, model):
    result = run_llm(llm_home, "-m", model, "--no-log", "-o", "temperature", "0", "-o", "max_tokens", "12", PROMPT)

    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == chat(client).choices[0].message.content


def test_llm_completion_model_with_penalties_answers_as_the_openai_client(llm_home, client):
    options = ["-o", "temperature", "0", "-o", "max_tokens", "16", "-o", "frequency_penalty", "-1.5"]
    result = run_llm(llm_home, "-m", "mixtral-text", "--no-log", *options, PROMPT)
    expected = client.completions.create(
        model="tiny", prompt=PROMPT, temperature=0, max_tokens=16, frequency_penalty=-1.5
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == expected.choices[0].text


def test_llm_reports_a_model_the_server_does_not_serve(llm_home):
    result = run_llm(llm_home, "-m", "not-served", "--no-log", "Hi")

    assert result.returncode != 0
    assert "gpt-4o` does not exist" in result.stderr


# -- helpers ------------------------------------------------------------------------------------------------


def _prompt_ids(server, messages: list[dict]) -> list[int]:
    _, _, body = http("POST", f"{server.url}/mixtral/v1/ids", body={"messages": messages})
    return json.loads(body)["ids"]


def _text_ids(server, text: str) -> list[int]:
    """BOS and the text's ids, as a raw completion's prompt."""
    _, _, body = http("POST", f"{server.url}/mixtral/v1/ids", body={"text": text})
    return [1, *json.loads(body)["ids"]]
