"""Output that cannot be written: a full device, a closed stdout, an encoding that cannot hold the text.

Every command that prints ends in one line on stderr and a non-zero exit, never a traceback; these need
a real process, whose stdout is what the test makes it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("demo_model")

PRINTING_COMMANDS = [
    ("complete", "-m", "tiny", "-n", "8", "-t", "1", "Hi"),  # streamed
    ("complete", "-m", "tiny", "-n", "8", "-t", "1", "--json", "Hi"),
    ("complete", "-m", "tiny", "-t", "1", "--choice", "yes,no", "Hi"),
    ("prompt", "-m", "tiny", "Hi"),
    ("prompt", "-m", "tiny", "--ids", "Hi"),
    ("devices",),
    ("completion", "bash"),
    ("--help",),
    ("--version",),
]


def run(args: tuple[str, ...], *, stdout, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixtral_cli", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.mark.parametrize("args", PRINTING_COMMANDS, ids=" ".join)
def test_stdout_on_a_full_device_is_one_line_and_exit_1(args):
    with open("/dev/full", "w") as full:
        result = run(args, stdout=full)

    assert result.returncode == 1
    assert result.stderr.splitlines()[-2:] == [
        "Error: Cannot write to stdout: No space left on device.",
        "Send the output elsewhere.",
    ]
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr


@pytest.mark.parametrize("args", PRINTING_COMMANDS, ids=" ".join)
def test_a_closed_stdout_is_refused_before_any_work(args):
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "mixtral_cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )

    assert result.returncode == 1
    assert "Error: stdout is closed, so there is nowhere to print to." in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [("prompt", "-m", "tiny", "Hé€"), ("complete", "-m", "tiny", "-t", "1", "--choice", "€,∑", "Hi")]
)
def test_text_the_output_encoding_cannot_hold_is_one_line_naming_it(args):
    result = run(args, stdout=subprocess.PIPE, env={"PYTHONIOENCODING": "latin-1"})

    assert result.returncode == 1
    assert "Error: stdout's encoding (iso8859-1) cannot hold the text to print" in result.stderr
    assert "PYTHONIOENCODING=utf-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_streamed_answer_the_output_encoding_cannot_hold_ends_in_one_line():
    # This seed's answer on the demo model holds U+2015 (a horizontal bar) within its 30 tokens.
    args = ("complete", "-m", "tiny", "-t", "1", "-n", "30", "--temperature", "1.5", "--seed", "3", "Hi")
    assert "\u2015" in run(args, stdout=subprocess.PIPE).stdout

    result = run(args, stdout=subprocess.PIPE, env={"PYTHONIOENCODING": "ascii"})

    assert result.returncode == 1
    assert "Error: stdout's encoding (ascii) cannot hold the text to print ('\\u2015')." in result.stderr
    assert "Traceback" not in result.stderr


def test_a_reader_that_goes_away_ends_a_json_answer_quietly():
    command = f"{sys.executable} -m mixtral_cli complete -m tiny -t 1 -n 200 --raw --json Once | head -c 1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, stdin=subprocess.DEVNULL)

    assert result.returncode in (0, 1)  # 0 when the one write landed before head left
    assert result.stderr == b""


def test_chat_answers_to_a_full_device_end_the_chat_in_one_line():
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "mixtral_cli", "chat", "-m", "tiny", "-n", "4", "--ctx-size", "512"],
            input="Hi\nHello again\n",
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )

    assert result.returncode == 1
    assert result.stderr.count("Cannot write to stdout") == 1
    assert "Traceback" not in result.stderr
