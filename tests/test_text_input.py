"""Text from files and stdin: UTF-8, or refused in one line with the offset of the first bad byte."""

from __future__ import annotations

import io
import json

import pytest

LATIN_1 = "café au lait".encode("latin-1")  # é is byte 3


@pytest.fixture
def stdin_bytes(monkeypatch: pytest.MonkeyPatch):
    """Pipe these bytes into the command's stdin (a real stream, not a terminal)."""

    def pipe(data: bytes) -> None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))

    return pipe


def _refused_at(result, name: str, byte: int) -> None:  # noqa: ANN001
    assert result.exit_code == 1
    assert f"{name} is not UTF-8 text (byte {byte} is invalid)." in result.stderr
    assert "Traceback" not in result.stderr


def test_complete_refuses_stdin_that_is_not_utf8_with_the_offset(mixtral, stdin_bytes):
    stdin_bytes(LATIN_1)
    _refused_at(mixtral("complete", "-m", "tiny", "-n", "2"), "stdin", 3)


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


def test_chat_counts_the_offset_from_the_start_of_stdin(mixtral, stdin_bytes):
    first = b"Hello\n"
    stdin_bytes(first + LATIN_1 + b"\n")
    _refused_at(mixtral("chat", "-m", "tiny", "-n", "2", "--temperature", "0"), "stdin", len(first) + 3)


def test_utf8_text_on_stdin_is_read_whole(mixtral, stdin_bytes):
    text = "café au lait, 東京 🦙"
    stdin_bytes(json.dumps([{"role": "user", "content": text}], ensure_ascii=False).encode())
    result = mixtral("prompt", "-m", "tiny", "--messages", "-")

    assert result.exit_code == 0, result.stderr
    assert text in result.stdout
