"""Arguments that are not UTF-8: refused in one line naming the argument and its first bad byte.

Python hands a byte that is not UTF-8 over as a lone surrogate (surrogate escapes); in this process the
tests pass those strings, as the interpreter would; one test passes real bytes to a child.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("demo_model")


def escaped(raw: bytes) -> str:
    """``raw`` as Python decodes an argument: surrogate escapes for the bytes that are not UTF-8."""
    return os.fsdecode(raw)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("complete", "-m", escaped(b"mod\xffel.gguf"), "Hi"), "argument 3 (after -m) is not UTF-8 text (byte 3"),
        (("complete", "-m", "tiny", escaped(b"H\xe9llo")), "argument 4 is not UTF-8 text (byte 1 is invalid)."),
        (("complete", "-m", "tiny", "-s", escaped(b"\xc3"), "Hi"), "argument 5 (after -s) is not UTF-8 text (byte 0"),
        (("complete", "-m", "tiny", escaped(b"--system=ab\xfe"), "Hi"), "--system's value is not UTF-8 text (byte 2"),
        (("complete", "-m", "tiny", "--stop", escaped(b"\x80"), "Hi"), "(after --stop) is not UTF-8 text (byte 0"),
        (("prompt", "-m", "tiny", escaped("é".encode() + b"\xed\xa0\x80")), "argument 4 is not UTF-8 text (byte 2"),
        (("chat", "-m", "tiny", "--resume", escaped(b"chat\xff.json")), "(after --resume) is not UTF-8 text (byte 4"),
        (("summarize", "-m", "tiny", escaped(b"notes\xa0.md")), "argument 4 is not UTF-8 text (byte 5"),
        (("quantize", escaped(b"\xffsource")), "argument 2 is not UTF-8 text (byte 0"),
        (("complete", "-m", "tiny", "--json-schema", escaped(b'{"a": "\xff"}'), "Hi"), "(after --json-schema)"),
    ],
)
def test_an_argument_that_is_not_utf8_is_a_usage_error_with_its_byte_offset(mixtral, args, named):
    result = mixtral(*args)

    assert result.exit_code == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the sentence and the next step


def test_a_model_variable_that_is_not_utf8_is_named(mixtral, monkeypatch):
    monkeypatch.setenv("MIXTRAL_MODEL", escaped(b"/models/\xff.gguf"))

    result = mixtral("complete", "Hi")

    assert result.exit_code == 2
    assert "MIXTRAL_MODEL is not UTF-8 text (byte 8 is invalid)." in result.stderr


def test_real_non_utf8_bytes_in_argv_end_in_one_line():
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"mixtral_cli", b"complete", b"-m", b"tiny", b"--system", b"caf\xe9", b"Hi"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )

    assert result.returncode == 2
    assert b"argument 5 (after --system) is not UTF-8 text (byte 3 is invalid)." in result.stderr
    assert b"Traceback" not in result.stderr


def test_utf8_arguments_beyond_ascii_still_run(mixtral):
    result = mixtral("prompt", "-m", "tiny", "-s", "Réponds en français 🇫🇷", "Grüße, 世界")

    assert result.exit_code == 0
    assert "Grüße, 世界" in result.stdout
