"""`mixtral chat` as a user meets it: piped turns (in this process), and a real pseudo-terminal for the
interactive REPL."""

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

from mixtral_cli.chat.transcript import Transcript, Turn
from mixtral_cli.sources.demo import demo_model_path

from .helpers import on_a_small_disk, with_default_signals

pytestmark = pytest.mark.usefixtures("demo_model")


@pytest.fixture
def chat(mixtral):
    """`mixtral chat -m tiny`, greedy and short, with ``stdin`` piped in; a context of 2048 unless ``args``
    say otherwise (the model's 32768 take seconds to set up on a busy machine)."""

    def run(*args, stdin: str):
        return mixtral("chat", "-m", "tiny", "--temperature", "0", "-n", "12", "-c", "2048", *args, input=stdin)

    return run


def autosaves(home: Path) -> list[Path]:
    return sorted((home / "mixtral" / "chats").glob("*.json"))


def test_each_piped_line_is_a_turn_and_answers_go_to_stdout(chat, isolated_home):
    result = chat(stdin="Hello\nTell me more\n")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
    assert "\x1b" not in result.stdout
    (saved,) = autosaves(isolated_home)
    transcript = Transcript.load(saved)
    assert [t.role for t in transcript.turns] == ["user", "assistant", "user", "assistant"]
    assert [t.content for t in transcript.turns if t.role == "user"] == ["Hello", "Tell me more"]
    assert result.stdout.count("tokens ·") == 0 and result.stderr.count("tokens ·") == 2


def test_slash_commands_edit_the_conversation(chat, isolated_home):
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

    assert result.exit_code == 0, result.stderr
    transcript = Transcript.load(autosaves(isolated_home)[0])
    assert transcript.system == "Answer briefly."
    assert [t.content for t in transcript.turns if t.role == "user"] == ["One", "Three"]
    assert (transcript.sampling.temperature, transcript.sampling.top_k) == (0.3, 5)


def test_clear_forgets_and_show_and_context_report(chat, isolated_home):
    result = chat(stdin="One\n/clear\n/context\n/show\n")

    assert result.exit_code == 0, result.stderr
    assert "0 messages kept" in result.stderr
    assert "format: v1 ids, Instruct: chat format (it has a chat template" in result.stderr
    assert "temperature=0.0" in result.stderr
    assert Transcript.load(autosaves(isolated_home)[0]).turns == []


@pytest.mark.parametrize("line", ["/nope", "/set temperature hot", "/set colour 3", "/load", "/retry"])
def test_bad_commands_get_one_line_and_the_chat_goes_on(line, chat):
    result = chat(stdin=f"{line}\nHello\n")

    assert result.exit_code == 0, result.stderr
    assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.strip()


def test_save_load_and_resume_continue_the_same_conversation(chat, mixtral, isolated_home, tmp_path):
    saved = tmp_path / "saved.json"
    first = chat(stdin=f"One\nTwo\n/save {saved}\n/save {tmp_path / 'saved.md'}\n")
    assert first.exit_code == 0, first.stderr
    assert "## You" in (tmp_path / "saved.md").read_text()

    loaded = chat(stdin=f"/load {saved}\n/context\n")
    assert loaded.exit_code == 0, loaded.stderr
    assert "4 messages kept" in loaded.stderr

    resumed = mixtral("chat", "--resume", saved, input="Three\n")
    assert resumed.exit_code == 0, resumed.stderr
    assert [t.content for t in Transcript.load(saved).turns if t.role == "user"] == ["One", "Two", "Three"]


def test_load_says_where_the_chat_goes_on_and_leaves_both_files(chat, isolated_home, tmp_path):
    saved = tmp_path / "saved.json"
    assert chat(stdin=f"Saved question\n/save {saved}\n").exit_code == 0
    (first_autosave,) = autosaves(isolated_home)
    before = saved.read_text(), first_autosave.read_text()

    result = chat(stdin=f"Current question\n/load {saved}\nNext question\n")

    assert result.exit_code == 0, result.stderr
    assert (saved.read_text(), first_autosave.read_text()) == before
    new = {
        path: [t.content for t in Transcript.load(path).turns if t.role == "user"]
        for path in autosaves(isolated_home)
        if path != first_autosave
    }
    assert sorted(new.values()) == [["Current question"], ["Saved question", "Next question"]]
    (continued,) = (path for path, questions in new.items() if questions[0] == "Saved question")
    assert f"this chat now saves to {continued}" in result.stderr


def test_list_shows_saved_chats(chat, mixtral, isolated_home):
    assert chat(stdin="A question to remember\n").exit_code == 0
    result = mixtral("chat", "--list")

    assert result.exit_code == 0
    assert "A question to remember" in result.stdout


def test_history_beyond_the_context_is_left_out_with_a_notice_or_refused(chat, isolated_home):
    lines = "".join(f"Question {i}: " + "tell me more " * 6 + "\n" for i in range(10))
    dropped = chat("--ctx-size", "256", stdin=lines)
    refused = chat("--ctx-size", "256", "--context-policy", "error", stdin=lines)

    assert dropped.exit_code == 0 and refused.exit_code == 0
    assert "oldest messages out of what the model sees, to fit the context" in dropped.stderr
    (whole, _) = sorted(autosaves(isolated_home), key=lambda p: len(p.read_text()), reverse=True)
    assert len(Transcript.load(whole).turns) == 20
    assert "context holds" in refused.stderr and "--context-policy drop" in refused.stderr


def test_a_message_larger_than_the_context_is_refused_with_both_counts(chat):
    result = chat("--ctx-size", "256", stdin="word " * 400 + "\n")
    assert result.exit_code == 0
    assert "The prompt is" in result.stderr and "context holds" in result.stderr


def test_a_save_that_cannot_be_written_is_one_error_and_the_chat_goes_on(chat, isolated_home, tmp_path):
    result = chat(stdin=f"One\n/save {tmp_path}\nTwo\n")

    assert result.exit_code == 0, result.stderr
    assert f"Error: Cannot save the chat to {tmp_path}: Is a directory." in result.stderr
    assert "Traceback" not in result.stderr
    assert len(Transcript.load(autosaves(isolated_home)[0]).turns) == 4


def test_an_autosave_on_a_full_disk_is_one_error_and_nothing_is_lost(isolated_home, tmp_path):
    chats = isolated_home / "mixtral" / "chats"
    chats.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere.json"
    question = "A long question. " * 600  # about 10 kB of JSON: more than the 8 kB disk holds
    argv = [sys.executable, "-m", "mixtral_cli", "chat", "-m", "tiny", "--temperature", "0", "-n", "4"]
    result = subprocess.run(
        on_a_small_disk(chats, "8k", argv), input=f"{question}\n/save {elsewhere}\n", capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("No space left on device") == 1 and "Traceback" not in result.stderr
    assert [t.content for t in Transcript.load(elsewhere).turns][0] == question
    assert len(Transcript.load(elsewhere).turns) == 2


def test_resuming_a_file_that_is_not_a_chat_names_it_and_says_why(mixtral, tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text('{"title": "not a chat"}')
    result = mixtral("chat", "-m", "tiny", "--resume", notes)

    assert result.exit_code == 1
    assert f"Error: {notes} is not a saved chat: it holds no list of messages." in result.stderr


# -- the interactive REPL in a real pseudo-terminal -----------------------------------------------------


def spawn_chat(*args: str, model: str = "tiny") -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        # Greedy: a sampled answer could end at EOS before the test is done with it.
        ["-m", "mixtral_cli", "chat", "-m", model, "--temperature", "0", *args],
        preexec_fn=with_default_signals,
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


def test_a_killed_session_leaves_an_autosave_that_resumes(mixtral, isolated_home):
    child = spawn_chat("-n", "4")
    child.sendline("Remember this")
    child.expect(r"4 tokens · ")
    child.kill(signal.SIGKILL)
    child.wait()

    (saved,) = autosaves(isolated_home)
    assert json.loads(saved.read_text())["messages"][0]["content"] == "Remember this"
    resumed = mixtral("chat", "--resume", saved, input="/context\n")
    assert resumed.exit_code == 0, resumed.stderr
    assert "2 messages kept" in resumed.stderr


def test_model_switch_keeps_the_conversation(chat, isolated_home, convert):
    from mixtral_cli.sources.tiny_model import TinyMixtralSpec

    other = convert(TinyMixtralSpec(), "Q8_0")
    result = chat(stdin=f"One\n/model {other}\n/context\nTwo\n/show\n")

    assert result.exit_code == 0, result.stderr
    assert "Now talking to " in result.stderr
    assert "2 messages kept" in result.stderr
    assert f"({other})" in result.stderr
    transcript = Transcript.load(autosaves(isolated_home)[0])
    assert transcript.model == str(other) and len(transcript.turns) == 4


@pytest.mark.parametrize("broken", ["missing", "truncated"])
def test_a_model_that_fails_to_load_is_one_error_and_the_chat_goes_on(broken, chat, isolated_home, tmp_path):
    model = tmp_path / f"{broken}.gguf"
    if broken == "truncated":
        data = demo_model_path().read_bytes()
        model.write_bytes(data[: len(data) // 2])
    result = chat(stdin=f"One\n/model {model}\nTwo\n/show\n")

    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("Error:") == 1 and f"{model}" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"({demo_model_path()})" in result.stderr
    assert len(Transcript.load(autosaves(isolated_home)[0]).turns) == 4


def test_help_lists_every_command(chat):
    from mixtral_cli.chat.commands import COMMANDS

    result = chat(stdin="/help\n")
    assert result.exit_code == 0, result.stderr
    assert all(command in result.stderr for command in COMMANDS)


def test_tab_completes_slash_commands():
    child = spawn_chat()
    child.send("/hel\t")
    child.send("\r")
    child.expect("remove the last exchange")  # a line of /help's output
    child.expect(">>>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_ctrl_c_while_a_prompt_is_evaluated_returns_to_the_prompt(isolated_home, tmp_path):
    # A long history the model has not seen yet: evaluating it takes seconds.
    history = tmp_path / "long.json"
    Transcript(
        model="tiny",
        turns=[Turn("user", "Tell me about experts. " * 2400), Turn("assistant", "They route tokens. " * 400)],
    ).save(history)
    before = Transcript.load(history).turns
    child = spawn_chat("--resume", str(history), "-n", "4", "--ctx-size", "16384")
    child.sendline("Go on.")
    time.sleep(1.5)
    child.sendintr()
    child.expect("Stopped before the answer began")
    child.expect(">>>")
    child.sendline("/context")
    child.expect("2 messages kept")
    child.sendline("/exit")
    child.expect(pexpect.EOF)

    assert Transcript.load(history).turns == before


def test_ctrl_c_while_a_model_loads_returns_to_the_prompt_with_the_old_model(isolated_home, convert):
    from mixtral_cli.sources.tiny_model import TinyMixtralSpec

    current = convert(TinyMixtralSpec(), "Q8_0")
    demo = demo_model_path()
    demo.unlink()  # so that `/model tiny` builds the demo model: seconds of loading
    child = spawn_chat("-n", "2", model=str(current))
    child.sendline("/model tiny")
    deadline = time.monotonic() + 60
    while not any(demo.parent.glob("tmp*")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.sendintr()
    child.expect("Stopped; the conversation is as it was")
    child.expect(">>>")
    child.sendline("/show")
    child.expect(f"model: .* \\({current}\\)")
    child.expect(">>>")
    child.sendline("Hello")
    child.expect(r"2 tokens · ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)

    assert not demo.exists()


def test_a_full_disk_in_the_terminal_is_one_notice_each_and_the_chat_goes_on(isolated_home, demo_model, tmp_path):
    home = isolated_home / "small-home"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    question = "A long question. " * 300  # more than the 4 kB disk holds, as history and as a chat
    argv = [sys.executable, "-m", "mixtral_cli", "chat", "-m", str(demo_model), "--temperature", "0", "-n", "2"]
    command = on_a_small_disk(home, "4k", argv)
    child = pexpect.spawn(
        command[0],
        command[1:],
        env={**os.environ, "MIXTRAL_HOME": str(home), "TERM": "xterm", "COLUMNS": "100", "LINES": "40"},
        encoding="utf-8",
        codec_errors="replace",
        timeout=60,
        dimensions=(40, 100),
        preexec_fn=with_default_signals,
    )
    child.expect(">>>")
    child.sendline(question)
    child.expect("Input history is not saved to .*: No space left on")
    child.expect("Cannot save the chat to .*: No space left on")
    child.expect(">>>")
    child.sendline(f"/save {elsewhere}")
    child.expect("Saved to")
    child.expect(">>>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
    assert "Input history is not saved" not in child.before  # once is enough
    assert [t.content for t in Transcript.load(elsewhere).turns][0] == question
