"""`mixtral serve` as clients see it: the official `openai` client and plain HTTP against a real server
process on a loopback port, compared with `mixtral complete` on the same demo model."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from email.message import Message

import jsonschema
import openai
import pytest

from mixtral_cli.answer.card_request import ResponseShape, card_response_shape
from mixtral_cli.serve.scheduler import parse_keep_alive

from .helpers import run_mixtral
from .servers import Server, raw_post, raw_response

pytestmark = pytest.mark.usefixtures("demo_model")

PROMPT = "Tell me about the mixture of experts"
GREEDY = {"temperature": 0, "max_tokens": 12}
# The engine options the test servers run with: their layout (repacked, as chat) and thread count decide the
# arithmetic, and so the greedy answers of a random model.
AS_SERVED = ("--repack", "--threads", "1")
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    """One server for the tests that do not change its state: four requests at once, in four KV sequences."""
    running = Server(demo_model, tmp_path_factory.mktemp("serve-home"), "--parallel", "4")
    yield running
    running.stop()


@pytest.fixture
def client(server) -> openai.OpenAI:
    return server.openai_client()


def complete(*args: str) -> str:
    result = run_mixtral("complete", "-m", "tiny", *AS_SERVED, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def greedy_complete(prompt: str, *args: str) -> str:
    return complete("--temperature", "0", "-n", "12", *args, prompt).removesuffix("\n")


def chat(client: openai.OpenAI, content: str, **options):  # noqa: ANN201
    return client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": content}], **{**GREEDY, **options}
    )


def post(url: str, body: bytes, *, headers: dict[str, str] | None = None) -> tuple[int, Message, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read() or b"{}")


# -- OpenAI's routes -------------------------------------------------------------------------------------


def test_greedy_chat_answer_equals_completes(client):
    answer = chat(client, PROMPT)

    assert answer.choices[0].message.content == greedy_complete(PROMPT, "--chat")
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_streamed_chat_answer_equals_the_whole_one(client):
    whole = chat(client, PROMPT)
    stream = chat(client, PROMPT, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_text_completion_is_a_raw_completion(client):
    answer = client.completions.create(model="tiny", prompt=PROMPT, **GREEDY)

    assert answer.choices[0].text == greedy_complete(PROMPT, "--raw")


def test_usage_counts_the_tokens_used(client):
    answer = chat(client, PROMPT)
    local = json.loads(complete("--json", "--temperature", "0", "-n", "12", PROMPT))

    assert answer.usage.prompt_tokens == local["prompt_tokens"]
    assert answer.usage.completion_tokens == local["completion_tokens"]
    assert answer.usage.total_tokens == local["prompt_tokens"] + local["completion_tokens"]


def test_stop_string_ends_the_answer_before_it(client):
    full = chat(client, PROMPT, max_tokens=24).choices[0].message.content
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), full

    answer = chat(client, PROMPT, max_tokens=24, stop=[stop])

    assert answer.choices[0].message.content == full[: full.index(stop)]
    assert answer.choices[0].finish_reason == "stop"


def test_json_schema_response_format_validates(client):
    schema = PERSON
    answer = chat(
        client,
        "Who wrote Faust?",
        max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )

    jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
    local = greedy_complete("Who wrote Faust?", "-n", "64", "--json-schema", json.dumps(PERSON))
    assert json.loads(answer.choices[0].message.content) == json.loads(local)


def test_a_seed_makes_a_sampled_answer_repeatable(client):
    answers = {
        chat(client, PROMPT, temperature=1.0, seed=7, max_tokens=16).choices[0].message.content for _ in range(2)
    }

    assert len(answers) == 1


def test_models_lists_the_served_model(client, server):
    (model,) = client.models.list().data

    assert model.id == str(server.model)


def test_bad_request_is_400_with_the_reason(client):
    with pytest.raises(openai.BadRequestError, match="must have a role"):
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "hi"}])


def test_oversized_body_is_413_before_it_is_read(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.putrequest("POST", "/v1/completions")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(5 * 2**20))
    connection.endheaders(b'{"prompt": "aaaa')  # the server answers without waiting for the rest
    response = connection.getresponse()

    assert response.status == 413
    assert "larger than" in json.loads(response.read())["error"]["message"]
    connection.close()


def test_prompts_and_answers_stay_out_of_the_log(client, server):
    answer = chat(client, "A secret: zebra-orchid-4711").choices[0].message.content

    log = server.log.read_text()
    assert "zebra-orchid-4711" not in log
    assert answer not in log


def test_token_ids_outside_the_vocabulary_are_refused(server):
    status, _, body = post(f"{server.url}/mixtral/v1/generate", json.dumps({"ids": [1, 10**9]}).encode())

    assert status == 400
    assert "token ids" in body["error"]["message"]


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/v1/completions", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than 64 levels"),
        ("/score", b'{"input_data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than 64 levels"),
        ("/v1/completions", b'\xff{"prompt": "Hi"}', "not UTF-8 text (byte 0)"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": 1e400}', "inf"),
        ("/v1/completions", b'{"prompt": "Hi", "top_k": 2147483648}', "32-bit"),
    ],
)
def test_hostile_bodies_are_400_in_one_line(server, route, body, message):
    status, _, answer = post(f"{server.url}{route}", body)

    assert status == 400
    assert message in answer["error"]["message"]


# -- the model cards' scoring route ------------------------------------------------------------------------

CARD_REQUEST = {
    "input_data": {
        "input_string": ["My favourite condiment is", "The capital of France is"],
        "parameters": {"max_new_tokens": 10, "do_sample": False, "return_full_text": False},
    }
}


def test_score_route_answers_as_complete_request(server):
    status, _, body = post(f"{server.url}/score", json.dumps(CARD_REQUEST).encode())

    assert status == 200
    local = run_mixtral("complete", "-m", "tiny", *AS_SERVED, "--request", "-", input=json.dumps(CARD_REQUEST))
    assert body == json.loads(local.stdout)
    assert [list(answer) for answer in body] == [["0"], ["0"]]


def test_score_route_answers_in_the_8x22b_cards_shape_when_asked(server):
    _, _, per_input = post(f"{server.url}/score", json.dumps(CARD_REQUEST).encode())
    status, _, by_index = post(f"{server.url}/score?shape=by-index", json.dumps(CARD_REQUEST).encode())

    assert status == 200
    assert by_index == [{"0": per_input[0]["0"], "1": per_input[1]["0"]}]


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("8x22b-instruct:Q4_K_M", ResponseShape.BY_INDEX),
        ("8x22b", ResponseShape.BY_INDEX),
        ("8x7b-instruct:Q4_K_M", ResponseShape.PER_INPUT),
        ("tiny", ResponseShape.PER_INPUT),
        (None, ResponseShape.PER_INPUT),
    ],
)
def test_the_score_shape_is_the_served_models_cards(name, shape):
    assert card_response_shape(name) is shape


def test_complete_request_answers_in_the_8x22b_cards_shape_when_asked():
    request = json.dumps(CARD_REQUEST)
    per_input = json.loads(run_mixtral("complete", "-m", "tiny", "--request", "-", input=request).stdout)
    by_index = run_mixtral("complete", "-m", "tiny", "--request", "-", "--response-shape", "by-index", input=request)

    assert json.loads(by_index.stdout) == [{"0": per_input[0]["0"], "1": per_input[1]["0"]}]


# -- concurrency -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("clients", [2, 8])
def test_concurrent_clients_are_all_answered_correctly(client, clients):
    prompts = [f"Question {i}: what is expert number {i} good at?" for i in range(clients)]
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        answers[i] = chat(client, prompts[i]).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == {i: chat(client, prompts[i]).choices[0].message.content for i in range(clients)}


def test_each_conversations_second_turn_evaluates_only_its_new_tokens(client):
    conversations = [[{"role": "user", "content": f"{PROMPT}, part {i}"}] for i in range(3)]
    firsts = [client.chat.completions.create(model="tiny", messages=c, **GREEDY) for c in conversations]
    for conversation, first in zip(conversations, firsts, strict=True):
        conversation += [
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And then?"},
        ]

    seconds = [client.chat.completions.create(model="tiny", messages=c, **GREEDY) for c in conversations]

    for first, second in zip(firsts, seconds, strict=True):
        # All of the first turn's prompt, and as much of the answer as spells the same ids again (a random
        # model's answer may not: its text can tokenize otherwise than the tokens it was sampled as).
        assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_a_short_request_is_answered_while_a_long_one_streams(client):
    stream = chat(client, PROMPT, max_tokens=100_000, stream=True)
    chunks = iter(stream)
    next(chunks)

    assert chat(client, "Hello").choices[0].message.content == greedy_complete("Hello", "--chat")
    assert next(chunks).choices[0].delta.content is not None  # still streaming
    stream.close()


def test_a_client_that_leaves_mid_stream_frees_the_engine(server, client):
    stream = chat(client, PROMPT, max_tokens=100_000, stream=True)
    next(iter(stream))
    assert server.health()["busy"]

    stream.close()

    assert _eventually(lambda: not server.health()["busy"]), "the generation went on without its client"
    assert chat(client, PROMPT).choices[0].message.content == greedy_complete(PROMPT, "--chat")


def test_health_shows_the_slots_in_use(server, client):
    stream = chat(client, PROMPT, max_tokens=100_000, stream=True)
    next(iter(stream))
    health = server.health()
    stream.close()

    assert health["slots"] == 4
    assert health["slots_in_use"] == 1


def _one_token(i: int) -> bytes:
    return json.dumps({"prompt": f"Expert number {i} says", "max_tokens": 1, "temperature": 0}).encode()


def _evaluations(server: Server) -> int:
    assert _eventually(lambda: not server.health()["busy"]), "an earlier request still runs"
    return server.health()["evaluations"]


def test_requests_sent_together_share_the_evaluations_of_one(server):
    before = _evaluations(server)
    with server.connect(30) as conn:
        conn.sendall(raw_post("/v1/completions", _one_token(0)))
        assert raw_response(conn)[0] == 200
    one_alone = _evaluations(server) - before

    # Three whose bodies are still coming when the fourth is whole: the server is reading them as the engine
    # takes the fourth, which waits for them (a prompt read alone first would take an evaluation of its own).
    bodies = [_one_token(i) for i in range(1, 5)]
    conns = [server.connect(30) for _ in bodies]
    try:
        for conn, body in zip(conns[1:], bodies[1:], strict=True):
            conn.sendall(raw_post("/v1/completions", body[:-1], length=len(body)))
        before = _evaluations(server)  # a round trip after those: the server has begun to read them
        conns[0].sendall(raw_post("/v1/completions", bodies[0]))
        for conn, body in zip(conns[1:], bodies[1:], strict=True):
            conn.sendall(body[-1:])
        answers = [raw_response(conn) for conn in conns]
    finally:
        for conn in conns:
            conn.close()

    assert [status for status, _ in answers] == [200] * 4
    assert _evaluations(server) - before == one_alone


def test_a_client_slow_to_send_its_body_does_not_hold_back_the_others(server, client):
    with server.connect(30) as slow:
        body = _one_token(5)
        slow.sendall(raw_post("/v1/completions", body[:-1], length=len(body)))
        server.health()  # the server has begun to read it

        answer = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0)

        # answered while the slow body is still awaited: well inside its 10 s, nothing was sent to it yet
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):
            slow.recv(1)
    assert answer.choices[0].text == greedy_complete(PROMPT, "--raw")


def test_a_request_cancelled_mid_stream_leaves_the_others_untouched(client):
    expected = chat(client, PROMPT, max_tokens=24).choices[0].message.content
    leaving = chat(client, "Hello there", max_tokens=100_000, stream=True)
    staying = chat(client, PROMPT, max_tokens=24, stream=True)
    staying_chunks = iter(staying)
    text = next(staying_chunks).choices[0].delta.content or ""
    next(iter(leaving))

    leaving.close()

    text += "".join(chunk.choices[0].delta.content or "" for chunk in staying_chunks if chunk.choices)
    assert text == expected


# -- servers of their own ----------------------------------------------------------------------------------


def test_wrong_api_key_is_401_and_nothing_runs(demo_model, tmp_path):
    server = Server(demo_model, tmp_path / "home", "--api-key", "right key")
    try:
        wrong = server.openai_client("wrong key")
        with pytest.raises(openai.AuthenticationError):
            chat(wrong, PROMPT)
        assert server.health()["requests_run"] == 0

        right = server.openai_client("right key")
        assert chat(right, PROMPT).choices[0].message.content
    finally:
        server.stop()


def test_complete_over_a_server_with_a_key_sends_mixtral_api_key(demo_model, tmp_path, monkeypatch):
    server = Server(demo_model, tmp_path / "home", "--api-key", "right key")
    try:
        monkeypatch.setenv("MIXTRAL_API_KEY", "wrong key")
        refused = run_mixtral("complete", "--server", server.url, "-n", "4", PROMPT)
        monkeypatch.setenv("MIXTRAL_API_KEY", "right key")
        accepted = run_mixtral("complete", "--server", server.url, "-n", "4", PROMPT)
    finally:
        server.stop()

    assert refused.returncode == 1
    assert "refused the API key" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr


def test_keep_alive_0_unloads_after_each_request_and_loads_again(demo_model, tmp_path):
    server = Server(demo_model, tmp_path / "home", "--keep-alive", "0")
    try:
        client = server.openai_client()
        first = chat(client, PROMPT).choices[0].message.content
        assert _eventually(lambda: not server.health()["loaded"])

        assert chat(client, PROMPT).choices[0].message.content == first
        assert server.health()["loads"] == 2  # at start (the first request used it), then for the second
    finally:
        server.stop()


def test_a_request_that_waits_too_long_is_503_with_retry_after(demo_model, tmp_path):
    server = Server(demo_model, tmp_path / "home", "--queue-timeout", "0.5", "--parallel", "1")
    try:
        client = server.openai_client()
        stream = chat(client, PROMPT, max_tokens=100_000, stream=True)
        next(iter(stream))

        status, headers, body = post(f"{server.url}/v1/completions", json.dumps({"prompt": "Hi"}).encode())

        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert "busy" in body["error"]["message"]
        stream.close()
    finally:
        server.stop()


def test_sigterm_ends_requests_in_flight_with_an_error_and_frees_the_port(demo_model, tmp_path):
    server = Server(demo_model, tmp_path / "home")
    client = server.openai_client()
    stream = chat(client, PROMPT, max_tokens=100_000, stream=True)
    chunks = iter(stream)
    next(chunks)

    server.process.send_signal(signal.SIGTERM)

    with pytest.raises(openai.APIError, match="stopping"):
        for _ in chunks:
            pass
    assert server.process.wait(timeout=60) == 0
    _assert_port_free(server.port)


# -- a long prompt, read in chunks beside the others ---------------------------------------------------------

# Small chunks make the demo model's long prompt many evaluations: the requests beside it, and a cancel, get
# their turn long before it is read.
CHUNKED = ("--ctx-size", "4096", "--batch-size", "32")
LONG_PROMPT = [1, *(100 + i % 2000 for i in range(3999))]  # token ids: 125 chunks


def long_prompt_stream(client: openai.OpenAI):  # noqa: ANN201 - an openai Stream
    """A streamed completion of LONG_PROMPT; it returns with the answer's headers, once the server took the
    request, while its prompt is read."""
    return client.completions.create(model="tiny", prompt=LONG_PROMPT, temperature=0, max_tokens=1, stream=True)


def cancelled_prompts(server: Server) -> list[tuple[int, int]]:
    """What the server's log says of the requests cancelled while their prompt was read: tokens read, of how many."""
    found = re.findall(r"cancelled after ([\d,]+) of its ([\d,]+) prompt tokens", server.log.read_text())
    return [(int(read.replace(",", "")), int(total.replace(",", ""))) for read, total in found]


def test_a_client_that_leaves_during_its_prompt_frees_the_engine_before_the_prompt_is_read(demo_model, tmp_path):
    server = Server(demo_model, tmp_path / "home", "--parallel", "2", *CHUNKED)
    try:
        client = server.openai_client()
        long_prompt_stream(client).close()

        assert _eventually(lambda: not server.health()["busy"]), "the prompt went on without its client"
        ((read, total),) = cancelled_prompts(server)
        assert total == len(LONG_PROMPT)
        assert read < total
        assert chat(client, PROMPT).choices[0].message.content == greedy_complete(PROMPT, "--chat", *CHUNKED)
    finally:
        server.stop()


def test_a_stream_goes_on_while_another_clients_long_prompt_is_read(demo_model, tmp_path):
    server = Server(demo_model, tmp_path / "home", "--parallel", "2", *CHUNKED)
    try:
        client = server.openai_client()
        received: list[str] = []  # which stream each chunk came from, in the order they came
        long = long_prompt_stream(client)

        def read_long() -> None:
            for _ in long:
                received.append("long")

        reader = threading.Thread(target=read_long)
        reader.start()
        short = chat(
            client,
            PROMPT,
            max_tokens=16,
            logit_bias={"2": -100},  # </s>: the answer is all 16 tokens
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in short:
            received.append("short")
            usage = chunk.usage
        reader.join()

        # The whole short answer came while the long prompt was read, before its first token: its prompt and 16
        # tokens took 17 evaluations of the long prompt's 125.
        assert usage.completion_tokens == 16
        assert "long" in received
        assert received.index("long") == received.count("short")
        assert cancelled_prompts(server) == []
    finally:
        server.stop()


def test_sigterm_during_a_long_prompt_ends_it_with_an_error_and_frees_the_port(demo_model, tmp_path):
    server = Server(demo_model, tmp_path / "home", *CHUNKED)
    client = server.openai_client()
    stream = long_prompt_stream(client)

    server.process.send_signal(signal.SIGTERM)

    with pytest.raises(openai.APIError, match="stopping"):
        for _ in stream:
            pass
    assert server.process.wait(timeout=60) == 0
    ((read, total),) = cancelled_prompts(server)
    assert read < total == len(LONG_PROMPT)
    _assert_port_free(server.port)


# -- `--server` on the CLI ---------------------------------------------------------------------------------


def test_complete_over_the_server_equals_complete(server):
    assert complete("--server", server.url, "--temperature", "0", "-n", "12", PROMPT) == complete(
        "--temperature", "0", "-n", "12", PROMPT
    )


def test_complete_with_a_schema_over_the_server_equals_complete(server):
    args = ("--temperature", "0", "-n", "64", "--json-schema", json.dumps(PERSON), "Who wrote Faust?")

    assert complete("--server", server.url, *args) == complete(*args)


def test_complete_json_over_the_server_reports_the_same_tokens(server):
    args = ("--json", "--temperature", "0", "-n", "12", PROMPT)
    remote, local = json.loads(complete("--server", server.url, *args)), json.loads(complete(*args))

    assert {k: remote[k] for k in ("text", "prompt_tokens", "completion_tokens", "stop_reason", "prompt_format")} == {
        k: local[k] for k in ("text", "prompt_tokens", "completion_tokens", "stop_reason", "prompt_format")
    }


def test_complete_request_over_the_server_equals_complete_request(server):
    remote = run_mixtral("complete", "--server", server.url, "--request", "-", input=json.dumps(CARD_REQUEST))
    local = run_mixtral("complete", "-m", "tiny", *AS_SERVED, "--request", "-", input=json.dumps(CARD_REQUEST))

    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout)


def test_complete_request_over_the_server_refuses_options_the_route_cannot_carry(server):
    result = run_mixtral("complete", "--server", server.url, "--temperature", "0.9", "--request", "-", input="{}")

    assert result.returncode == 2
    assert "a sampling option cannot go with it" in result.stderr


def test_an_error_over_the_server_is_the_same_error(server):
    remote = run_mixtral("complete", "--server", server.url, "-n", "1", "--json-object", PROMPT)
    local = run_mixtral("complete", "-m", "tiny", "-n", "1", "--json-object", PROMPT)

    assert (remote.returncode, remote.stderr) == (local.returncode, local.stderr)
    assert local.returncode == 2


def test_chat_over_the_server_equals_chat(server):
    args = ("--temperature", "0", "-n", "12")
    turns = "Hello there\nTell me more about experts\n"
    remote = run_mixtral("chat", "--server", server.url, *args, input=turns)
    local = run_mixtral("chat", "-m", "tiny", *AS_SERVED, *args, input=turns)

    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout


def test_summarize_in_parts_over_the_server_equals_summarize(demo_model, tmp_path):
    text = "\n\n".join(f"Paragraph {i}: the experts of layer {i} route tokens to each other." for i in range(60))
    args = ("--temperature", "0", "--length", "short", "--json", "-")
    server = Server(demo_model, tmp_path / "home", "-c", "512")
    try:
        remote = json.loads(run_mixtral("summarize", "--server", server.url, *args, input=text).stdout)
    finally:
        server.stop()
    local = json.loads(run_mixtral("summarize", "-m", "tiny", *AS_SERVED, "-c", "512", *args, input=text).stdout)

    # A fresh server: its KV cache holds no earlier prompt, whose reuse would change the arithmetic of this one.
    assert remote["chunks"] > 1
    assert (remote["summary"], remote["levels"], remote["tokens_in"], remote["tokens_out"]) == (
        local["summary"],
        local["levels"],
        local["tokens_in"],
        local["tokens_out"],
    )


def test_an_absent_server_is_one_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_mixtral("complete", "--server", f"http://127.0.0.1:{port}", PROMPT)

    assert result.returncode == 1
    assert result.stderr.startswith("Error: No mixtral server answers at")
    assert "Traceback" not in result.stderr


def test_a_server_of_another_version_is_one_line(monkeypatch, server):
    monkeypatch.setattr("mixtral_cli.serve.client.__version__", "0.0.1")
    result = run_mixtral("complete", "--server", server.url, PROMPT)

    assert result.returncode == 1
    assert "runs mixtral" in result.stderr and "this is mixtral 0.0.1" in result.stderr


# -- options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("5m", 300), ("30s", 30), ("1h", 3600), ("90", 90), ("0", 0), ("-1", None)]
)
def test_keep_alive_durations(text, seconds):
    assert parse_keep_alive(text) == seconds


def test_without_the_serve_extra_serve_says_how_to_install_it(monkeypatch):
    for package in ("starlette", "uvicorn"):
        monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    for module in ("mixtral_cli.serve.server", "mixtral_cli.serve.app"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    result = run_mixtral("serve", "-m", "tiny")

    assert result.returncode == 1
    assert 'pip install "mixtral-cli[serve]"' in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option", [("--keep-alive", "99999999999999999h"), ("--queue-timeout", "inf")])
def test_a_wait_longer_than_this_machine_can_time_is_a_usage_error(option):
    result = run_mixtral("serve", "-m", "tiny", *option)

    assert result.returncode == 2
    assert option[0] in result.stderr and "Traceback" not in result.stderr


def test_a_keep_alive_that_is_not_a_duration_is_a_usage_error():
    result = run_mixtral("serve", "-m", "tiny", "--keep-alive", "soon")

    assert result.returncode == 2
    assert "not a duration" in result.stderr


def _assert_port_free(port: int) -> None:
    with socket.socket() as probe:
        # As a restarted server binds: connections the server closed may linger in TIME_WAIT, a listener may not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()


def _eventually(condition, timeout: float = 30) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
