"""`mixtral chat` as a user meets it: piped turns, and a real pseudo-terminal for the interactive REPL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from mixtral_cli.chat.transcript import Transcript

from .helpers import run_mixtral_process


def chat(*args, stdin: str) -> subprocess.CompletedProcess[str]:
    return run_mixtral_process("chat", "-m", "tiny", "--temperature", "0", "-n", "12", *args, input=stdin)


def autosaves(home: Path) -> list[Path]:
    return sorted((home / "mixtral" / "chats").glob("*.json"))


def test_each_piped_line_is_a_turn_and_answers_go_to_stdout(isolated_home):
    result = chat(stdin="Hello\nTell me more\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "\x1b" not in result.stdout
    (saved,) = autosaves(isolated_home)
    transcript = Transcript.load(saved)
    assert [t.role for t in transcript.turns] == ["user", "assistant", "user", "assistant"]
    assert [t.content for t in transcript.turns if t.role == "user"] == ["Hello", "Tell me more"]
    assert result.stdout.count("tokens ·") == 0 and result.stderr.count("tokens ·") == 2


def test_slash_commands_edit_the_conversation(isolated_home):
    script = "\n".join(
        [
            "/system Answer briefly.",
            "One",
            "Two",
            "/undo",
            "/set temperature 0.3",
            "/set top_k 5",
            "Three",
            "/retry",
            "",
        ]
    )
    result = chat(stdin=script)

    assert result.returncode == 0, result.stderr
    transcript = Transcript.load(autosaves(isolated_home)[0])
    assert transcript.system == "Answer briefly."
    assert [t.content for t in transcript.turns if t.role == "user"] == ["One", "Three"]
    assert (transcript.sampling.temperature, transcript.sampling.top_k) == (0.3, 5)


def test_clear_forgets_and_show_and_context_report(isolated_home):
    result = chat(stdin="One\n/clear\n/context\n/show\n")

    assert "0 messages kept" in result.stderr
    assert "format: v1" in result.stderr and "temperature=0.0" in result.stderr
    assert Transcript.load(autosaves(isolated_home)[0]).turns == []


@pytest.mark.parametrize("line", ["/nope", "/set temperature hot", "/set colour 3", "/load", "/retry"])
def test_bad_commands_get_one_line_and_the_chat_goes_on(line):
    result = chat(stdin=f"{line}\nHello\n")

    assert result.returncode == 0, result.stderr
    assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.strip()


def test_save_load_and_resume_continue_the_same_conversation(isolated_home, tmp_path):
    saved = tmp_path / "saved.json"
    first = chat(stdin=f"One\nTwo\n/save {saved}\n/save {tmp_path / 'saved.md'}\n")
    assert first.returncode == 0, first.stderr
    assert "## You" in (tmp_path / "saved.md").read_text()

    loaded = chat(stdin=f"/load {saved}\n/context\n")
    assert "4 messages kept" in loaded.stderr

    resumed = run_mixtral_process("chat", "--resume", saved, input="Three\n")
    assert resumed.returncode == 0, resumed.stderr
    assert [t.content for t in Transcript.load(saved).turns if t.role == "user"] == ["One", "Two", "Three"]


def test_list_shows_saved_chats(isolated_home):
    chat(stdin="A question to remember\n")
    result = run_mixtral_process("chat", "--list")

    assert result.returncode == 0
    assert "A question to remember" in result.stdout


def test_history_beyond_the_context_drops_with_a_notice_or_refuses():
    lines = "".join(f"Question {i}: " + "tell me more " * 6 + "\n" for i in range(10))
    dropped = chat("--ctx-size", "256", stdin=lines)
    refused = chat("--ctx-size", "256", "--context-policy", "error", stdin=lines)

    assert "oldest messages to fit the context" in dropped.stderr
    assert "context holds" in refused.stderr and "--context-policy drop" in refused.stderr


def test_a_message_larger_than_the_context_is_refused_with_both_counts():
    result = chat("--ctx-size", "256", stdin="word " * 400 + "\n")
    assert "The prompt is" in result.stderr and "context holds" in result.stderr


# -- the interactive REPL in a real pseudo-terminal -----------------------------------------------------


def spawn_chat(*args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        # Greedy: a sampled answer could end at EOS before the test is done with it.
        ["-m", "mixtral_cli", "chat", "-m", "tiny", "--temperature", "0", *args],
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100", "LINES": "40"},
        encoding="utf-8",
        # Ctrl-C can cut the terminal output inside a character; the screen, not the bytes, is under test.
        codec_errors="replace",
        timeout=60,
        dimensions=(40, 100),
    )
    child.expect(">>>")
    return child


def test_interactive_turns_render_and_report_tokens(isolated_home):
    child = spawn_chat("-n", "8")
    child.sendline("Hello")
    child.expect(r"8 tokens · [\d.]+ tok/s · context \d+ of 32768")
    child.expect(">>>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)

    assert (isolated_home / "mixtral" / "chat_history").read_text().count("Hello") == 1
    assert len(Transcript.load(autosaves(isolated_home)[0]).turns) == 2


def test_ctrl_c_stops_the_answer_keeps_it_and_the_chat_goes_on(isolated_home):
    child = spawn_chat("-n", "20000", "--ctx-size", "32768")
    child.sendline("Write a very long story.")
    time.sleep(2)  # well into the answer: 20000 tokens take half a minute or more
    child.sendintr()
    child.expect("partial answer is kept")
    child.expect(">>>")
    child.sendline("/set max_tokens 4")
    child.expect(">>>")
    child.sendline("Go on.")
    child.expect(r"4 tokens · ")
    child.expect(">>>")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)

    turns = Transcript.load(autosaves(isolated_home)[0]).turns
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1].interrupted and turns[1].content and not turns[3].interrupted


def test_ctrl_c_at_an_empty_prompt_says_how_to_leave():
    child = spawn_chat()
    child.sendintr()
    child.expect("Ctrl-D or /exit leaves the chat")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_multi_line_input_with_escape_enter_and_triple_quotes(isolated_home):
    child = spawn_chat("-n", "2")
    child.send("first line")
    child.send("\x1b\r")  # Esc then Enter: a new line, not a send
    child.send("second line\r")
    child.expect(r"2 tokens · ")
    child.expect(">>>")
    child.send('"""\r')
    child.send("quoted one\r")
    child.send('quoted two"""\r')
    child.expect(r"2 tokens · ")
    child.expect(">>>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)

    questions = [t.content for t in Transcript.load(autosaves(isolated_home)[0]).turns if t.role == "user"]
    assert questions == ["first line\nsecond line", "quoted one\nquoted two"]


def test_a_killed_session_leaves_an_autosave_that_resumes(isolated_home):
    child = spawn_chat("-n", "4")
    child.sendline("Remember this")
    child.expect(r"4 tokens · ")
    child.kill(signal.SIGKILL)
    child.wait()

    (saved,) = autosaves(isolated_home)
    assert json.loads(saved.read_text())["messages"][0]["content"] == "Remember this"
    resumed = run_mixtral_process("chat", "--resume", saved, input="/context\n")
    assert "2 messages kept" in resumed.stderr


def test_model_switch_keeps_the_conversation(isolated_home, convert):
    from mixtral_cli.tinymodel import TinyMixtralSpec

    other = convert(TinyMixtralSpec(), "Q8_0")
    result = chat(stdin=f"One\n/model {other}\n/context\nTwo\n/model {other.parent / 'missing.gguf'}\n/show\n")

    assert result.returncode == 0, result.stderr
    assert "Now talking to " in result.stderr
    assert "2 messages kept" in result.stderr
    assert "missing.gguf" in result.stderr  # a model that cannot load is one error; the chat goes on
    assert f"({other})" in result.stderr
    transcript = Transcript.load(autosaves(isolated_home)[0])
    assert transcript.model == str(other) and len(transcript.turns) == 4


def test_help_lists_every_command():
    from mixtral_cli.chat.commands import COMMANDS

    result = chat(stdin="/help\n")
    assert all(command in result.stderr for command in COMMANDS)


def test_tab_completes_slash_commands():
    child = spawn_chat()
    child.send("/hel\t")
    child.send("\r")
    child.expect("remove the last exchange")  # a line of /help's output
    child.expect(">>>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
