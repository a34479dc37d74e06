"""`mixtral serve` under abusive clients, on raw loopback sockets: a request for more answers than one may ask,
a client that leaves while its answers are made, text that is not Unicode, a body broken off, headers and
bodies that never finish. Each is answered (or its connection closed) within a bound, with no traceback in
the log, and the engine is free for the next client."""

from __future__ import annotations

import json
import socket
import time

import pytest

from mixtral_cli.serve.limits import BODY_TIMEOUT_S, HEADERS_TIMEOUT_S
from mixtral_cli.serve.request_rules import MAX_ANSWERS_PER_REQUEST

from .servers import Server, raw_post, raw_response

pytestmark = pytest.mark.usefixtures("demo_model")


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    running = Server(demo_model, tmp_path_factory.mktemp("hostile-serve-home"))
    yield running
    running.stop()


def _closed_within(conn: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``conn`` (reads end) within ``seconds``; whatever it sends first is read."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not conn.recv(65536):
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def _no_traceback_in(server: Server) -> None:
    time.sleep(0.5)  # the server logs a failure after the connection ends
    assert "Traceback" not in server.log.read_text(), server.log.read_text()


def _cardraw_post(prompts: int, max_new_tokens: int) -> bytes:
    strings = [f"Prompt number {i}" for i in range(prompts)]
    parameters = {"max_new_tokens": max_new_tokens, "do_sample": False}
    return json.dumps({"input_data": {"input_string": strings, "parameters": parameters}}).encode()


def test_a_request_for_more_answers_than_one_may_ask_is_400_naming_the_bound(server):
    runs_before = server.health()["requests_run"]
    with server.connect(30) as conn:
        conn.sendall(raw_post("/score", _cardraw_post(1000, 10)))
        status, body = raw_response(conn)

    assert status == 400
    assert (
        f"asks for 1000 answers; one request may ask for {MAX_ANSWERS_PER_REQUEST} at most" in body["error"]["message"]
    )
    assert server.health()["requests_run"] == runs_before  # refused before the engine saw it


def test_a_request_whose_client_leaves_stops_and_frees_the_engine(server):
    # The most answers one request may ask for, each long: tens of seconds of work on the engine.
    with server.connect(30) as conn:
        conn.sendall(raw_post("/score", _cardraw_post(MAX_ANSWERS_PER_REQUEST, 400)))
        for _ in range(200):
            if server.health()["busy"]:
                break
            time.sleep(0.05)
        assert server.health()["busy"]
    left = time.monotonic()

    for _ in range(200):
        if not server.health()["busy"]:
            break
        time.sleep(0.05)
    assert not server.health()["busy"]
    assert time.monotonic() - left < 5
    _no_traceback_in(server)


def test_text_with_a_lone_surrogate_escape_is_400_without_a_traceback(server):
    body = b'{"messages": [{"role": "user", "content": "Hi \\ud800 there"}], "max_tokens": 4}'
    with server.connect(30) as conn:
        conn.sendall(raw_post("/v1/chat/completions", body))
        status, answer = raw_response(conn)

    assert status == 400
    assert "lone surrogate" in answer["error"]["message"]
    _no_traceback_in(server)


def test_a_client_that_leaves_in_the_middle_of_its_body_leaves_no_traceback(server):
    with server.connect(30) as conn:
        conn.sendall(raw_post("/v1/completions", b'{"prompt": "Half a bo', length=1000))
        time.sleep(0.3)

    _no_traceback_in(server)
    assert server.health()["status"] == "ok"


def test_a_connection_that_never_finishes_its_headers_is_closed(server):
    with server.connect(1) as conn:
        conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line

        assert _closed_within(conn, HEADERS_TIMEOUT_S + 10)


def test_a_connection_that_never_sends_anything_is_closed(server):
    with server.connect(1) as conn:
        assert _closed_within(conn, HEADERS_TIMEOUT_S + 10)


def test_a_body_that_stops_arriving_is_408_and_its_connection_closed(server):
    with server.connect(BODY_TIMEOUT_S + 10) as conn:
        conn.sendall(raw_post("/v1/completions", b'{"prompt": "Sent slow', length=1000))
        status, body = raw_response(conn)

        assert status == 408
        assert "stopped arriving" in body["error"]["message"]
        assert _closed_within(conn, 10)
