"""Files the user names that cannot be used as they are: one the user may not read, a name too long for the
filesystem, a named pipe nothing writes into. Each is one sentence that says so, never a traceback, a wrong
reason ("not a GGUF file") or a command that waits forever."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from mixtral_cli.base.textinput import FIFO_WRITER_WAIT_S
from mixtral_cli.chat.transcript import Transcript, Turn

from .helpers import without_reading_everything

pytestmark = pytest.mark.usefixtures("demo_model")

TOO_LONG = "n" * 300  # past NAME_MAX (255) of every Linux filesystem


def _mixtral_as_a_user(*args: object) -> subprocess.CompletedProcess[str]:
    argv = without_reading_everything([sys.executable, "-m", "mixtral_cli", *map(str, args)])
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


# -- a file the user may not read ------------------------------------------------------------------------


def _unreadable(path, text: str = "x"):  # noqa: ANN001, ANN202
    path.write_text(text)
    path.chmod(0)
    return path


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("complete", "-m", "{}", "Hi"), "model.gguf"),
        (("chat", "--resume", "{}"), "chat.json"),
        (("summarize", "-m", "tiny", "{}"), "text.txt"),
        (("complete", "-m", "tiny", "--json-schema", "{}", "Hi"), "schema.json"),
        (("complete", "-m", "tiny", "--grammar", "{}", "Hi"), "grammar.gbnf"),
        (("prompt", "-m", "tiny", "--messages", "{}"), "messages.json"),
        (("complete", "-m", "tiny", "--request", "{}"), "request.json"),
    ],
)
def test_a_file_the_user_may_not_read_is_named_as_such(args, name, demo_model, tmp_path):
    path = tmp_path / name
    if name.endswith(".gguf"):
        shutil.copyfile(demo_model, path)
        path.chmod(0)
    else:
        _unreadable(path, Transcript(model="tiny", turns=[Turn("user", "Hi")]).to_json())

    result = _mixtral_as_a_user(*(str(path) if a == "{}" else a for a in args))

    assert result.returncode in (1, 2)
    said = " ".join(result.stderr.split())  # typer wraps its usage errors
    assert str(path) in said and ("Permission denied" in said or "is not readable" in said), result.stderr
    assert "Traceback" not in result.stderr and "not a GGUF" not in result.stderr


def test_a_model_in_a_folder_the_user_may_not_enter_is_named_as_such(demo_model, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    shutil.copyfile(demo_model, folder / "model.gguf")
    folder.chmod(0)
    try:
        result = _mixtral_as_a_user("complete", "-m", folder / "model.gguf", "Hi")
    finally:
        folder.chmod(0o700)

    assert result.returncode == 1
    assert f"Error: Cannot use {folder / 'model.gguf'}: Permission denied." in result.stderr
    assert "Traceback" not in result.stderr


# -- a name too long for the filesystem -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("pull", TOO_LONG),
        ("pull", f"{TOO_LONG}:Q4_K_M"),
        ("complete", "-m", TOO_LONG, "Hi"),
        ("complete", "-m", f"/tmp/{TOO_LONG}.gguf", "Hi"),
        ("complete", "-m", "tiny", "--lora", f"/tmp/{TOO_LONG}.gguf", "Hi"),
        ("models", "show", TOO_LONG),
        ("models", "rm", TOO_LONG),
        ("models", "default", TOO_LONG),
        ("chat", "--resume", f"/tmp/{TOO_LONG}.json"),
        ("quantize", f"/tmp/{TOO_LONG}"),
        ("summarize", "-m", "tiny", f"/tmp/{TOO_LONG}.txt"),
    ],
    ids=lambda args: " ".join(a[:12] for a in args),
)
def test_a_name_too_long_for_the_filesystem_is_one_sentence(args, mixtral):
    result = mixtral(*args)

    assert result.exit_code in (1, 2)
    assert "Traceback" not in result.stderr
    assert result.stderr.lstrip().startswith(("Error:", "Usage:")), result.stderr


def test_a_chat_saved_under_a_name_too_long_is_one_sentence_and_the_chat_goes_on(mixtral, tmp_path):
    result = mixtral("chat", "-m", "tiny", "-n", "2", input=f"/save {tmp_path / TOO_LONG}.json\nHi\n")

    assert result.exit_code == 0, result.stderr
    assert "File name too long" in result.stderr and "Traceback" not in result.stderr
    assert "tokens ·" in result.stderr  # the turn after the failed save was answered


# -- a named pipe -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("prompt", "-m", "tiny", "--messages", "{}"),
        ("chat", "--resume", "{}"),
        ("complete", "-m", "tiny", "--json-schema", "{}", "Hi"),
        ("summarize", "-m", "tiny", "{}"),
    ],
    ids=lambda args: args[0] + " " + args[-2 if args[-1] == "Hi" else -1].replace("{}", "FIFO"),
)
def test_a_named_pipe_no_program_writes_into_is_refused_within_the_bound(args, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    started = time.monotonic()

    result = subprocess.run(
        [sys.executable, "-m", "mixtral_cli", *(str(fifo) if a == "{}" else a for a in args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=FIFO_WRITER_WAIT_S + 60,
    )

    assert result.returncode in (1, 2)
    assert f"{fifo} is a named pipe that no program opened for writing" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < FIFO_WRITER_WAIT_S + 30


def test_a_named_pipe_whose_writer_comes_late_is_read(mixtral, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def write_later() -> None:
        time.sleep(1)
        fifo.write_text('[{"role": "user", "content": "Through a pipe"}]')

    writer = threading.Thread(target=write_later)
    writer.start()
    result = mixtral("prompt", "-m", "tiny", "--messages", fifo)
    writer.join()

    assert result.exit_code == 0, result.stderr
    assert "Through a pipe" in result.stdout
