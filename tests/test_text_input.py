"""Text from files and stdin: UTF-8, or refused in one line with the offset of the first bad byte."""

from __future__ import annotations

import json

import pytest

LATIN_1 = "café au lait".encode("latin-1")  # é is byte 3


pytestmark = pytest.mark.usefixtures("demo_model")


def _refused_at(result, name: str, byte: int) -> None:  # noqa: ANN001
    assert result.exit_code == 1
    assert f"{name} is not UTF-8 text (byte {byte} is invalid)." in result.stderr
    assert "Traceback" not in result.stderr


def test_complete_refuses_stdin_that_is_not_utf8_with_the_offset(mixtral):
    _refused_at(mixtral("complete", "-m", "tiny", "-n", "2", input=LATIN_1), "stdin", 3)


def test_complete_refuses_a_request_file_that_is_not_utf8(mixtral, tmp_path):
    request = tmp_path / "request.json"
    request.write_bytes(b'{"input_data": {"input_string": ["' + LATIN_1 + b'"]}}')
    result = mixtral("complete", "-m", "tiny", "--request", request)
    _refused_at(result, str(request), request.read_bytes().index(b"\xe9"))


def test_prompt_refuses_a_messages_file_that_is_not_utf8(mixtral, tmp_path):
    messages = tmp_path / "chat.json"
    messages.write_bytes(json.dumps([{"role": "user", "content": "x"}]).encode()[:-3] + LATIN_1 + b'"}]')
    result = mixtral("prompt", "-m", "tiny", "--messages", messages)
    _refused_at(result, str(messages), messages.read_bytes().index(b"\xe9"))


def test_chat_counts_the_offset_from_the_start_of_stdin(mixtral):
    first = b"Hello\n"
    result = mixtral("chat", "-m", "tiny", "-n", "2", "--temperature", "0", input=first + LATIN_1 + b"\n")
    _refused_at(result, "stdin", len(first) + 3)


def test_utf8_text_on_stdin_is_read_whole(mixtral):
    text = "café au lait, 東京 🦙"
    messages = json.dumps([{"role": "user", "content": text}], ensure_ascii=False).encode()
    result = mixtral("prompt", "-m", "tiny", "--messages", "-", input=messages)

    assert result.exit_code == 0, result.stderr
    assert text in result.stdout
