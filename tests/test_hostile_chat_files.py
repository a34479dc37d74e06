"""Chat state and files as a hostile user or an odd environment leaves them: wrong types in a saved chat,
odd entries in the chats folder, an unreadable input history, a chat resumed twice, a save onto a link, a
dumb terminal. Each ends in one line, and nothing the user had is lost."""

from __future__ import annotations

import io
import json
import os
import sys

import pexpect
import pytest

from mixtral_cli.answer.shapes import schema_shape
from mixtral_cli.base.atomic import atomic_path
from mixtral_cli.base.errors import TranscriptError
from mixtral_cli.chat.session import resumed
from mixtral_cli.chat.transcript import Transcript, Turn
from mixtral_cli.engine.options import SamplingOptions

from .helpers import with_default_signals
from .test_chat_cli import autosaves, spawn_chat

pytestmark = pytest.mark.usefixtures("demo_model")

SHAPE_FIELDS = "a grammar, kind and instruction"
SCHEMA = '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}'


def saved_chat(**overrides: object) -> dict:
    chat = json.loads(Transcript(model="tiny", turns=[Turn("user", "Hi"), Turn("assistant", "Hello")]).to_json())
    chat.update(overrides)
    return chat


def message_with(**overrides: object) -> dict:
    return {"role": "user", "content": "Hi", "timestamp": "2026-01-01T00:00:00+00:00", **overrides}


# -- a saved chat whose fields have the wrong type ------------------------------------------------------


@pytest.mark.parametrize(
    ("chat", "reason"),
    [
        (saved_chat(model=5), "its model (model) is a number, not text"),
        (saved_chat(model=["tiny"]), "its model (model) is a list, not text"),
        (saved_chat(system={"text": "x"}), "its system prompt (system) is an object, not text"),
        (saved_chat(created=20260101), "its start time (created) is a number, not text"),
        (saved_chat(messages=[message_with(timestamp=7)]), "message 1's time (timestamp) is a number, not text"),
        (saved_chat(messages=[message_with(interrupted="yes")]), "message 1's interrupted is text, not true/false"),
        (saved_chat(messages=[message_with(content="\ud800")]), "message 1 has no text content"),
        (saved_chat(messages=[message_with(content=None)]), "message 1 has no text content"),
        (saved_chat(messages={"0": message_with()}), "it holds no list of messages"),
        (saved_chat(sampling={"top_k": "5"}), "its setting top_k is '5', not a number"),
        (saved_chat(sampling={"top_k": 2.5}), "its setting top_k is 2.5, not a number"),
        (saved_chat(sampling={"seed": True}), "its setting seed is True, not a number"),
        (saved_chat(sampling={"max_tokens": None}), "its setting max_tokens is None, not a number"),
        (saved_chat(sampling={"grammar": 5}), "its setting grammar is 5, not text"),
        (saved_chat(sampling={"stop": "###"}), "its stop strings are not a list of text"),
        (saved_chat(sampling=[1]), "its sampling settings are not an object"),
        (saved_chat(shape={"grammar": 'root ::= "a"'}), f"its answer shape (shape) is not {SHAPE_FIELDS}"),
        (saved_chat(shape="json"), f"its answer shape (shape) is not {SHAPE_FIELDS}"),
    ],
)
def test_a_saved_chat_with_a_field_of_the_wrong_type_is_refused_naming_the_file_and_field(chat, reason, tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(chat), encoding="utf-8")

    with pytest.raises(TranscriptError) as caught:
        Transcript.load(path)
    assert caught.value.message == f"{path} is not a saved chat: {reason}."


def test_a_folder_named_like_a_chat_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "chat.json"
    folder.mkdir()

    with pytest.raises(TranscriptError) as caught:
        Transcript.load(folder)
    assert caught.value.message == f"Cannot read {folder}: Is a directory."


def test_a_chat_with_an_answer_shape_saves_and_loads_back_whole(tmp_path):
    chat = Transcript(model="tiny", shape=schema_shape(SCHEMA), turns=[Turn("user", "Hi")])

    assert Transcript.load(chat.save(tmp_path / "shaped.json")) == chat


# -- a chat saved under /set schema ----------------------------------------------------------------------


def test_a_chat_saved_under_a_schema_resumes_and_keeps_answering_in_that_shape(mixtral, isolated_home, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(SCHEMA)
    first = mixtral("chat", "-m", "tiny", "--temperature", "0", "-n", "40", input=f"/set schema {schema}\nOne\n")
    assert first.exit_code == 0, first.stderr
    (saved,) = autosaves(isolated_home)

    listed = mixtral("chat", "--list")
    resumed = mixtral("chat", "--resume", saved, input="Two\n")

    assert listed.exit_code == 0 and str(saved) in listed.stdout
    assert resumed.exit_code == 0, resumed.stderr
    turns = Transcript.load(saved).turns
    assert [t.role for t in turns] == ["user", "assistant"] * 2
    assert all(isinstance(json.loads(t.content)["a"], int) for t in turns if t.role == "assistant")
    assert turns[2].content.startswith("Two") and turns[2].content != "Two"  # the schema told with the question


# -- chat --list and odd entries in the chats folder ----------------------------------------------------


def test_list_names_each_file_of_the_chats_folder_that_is_not_a_chat_and_lists_the_rest(mixtral, isolated_home):
    chats = isolated_home / "mixtral" / "chats"
    chats.mkdir(parents=True)
    Transcript(model="tiny", turns=[Turn("user", "The one good chat")]).save(chats / "good.json")
    (chats / "dangling.json").symlink_to(chats / "gone.json")
    (chats / "folder.json").mkdir()
    (chats / "garbled.json").write_text("{not json")
    (chats / "wrong-type.json").write_text(json.dumps(saved_chat(model=5)))
    (chats / os.fsdecode(b"name-\xff.json")).write_text(json.dumps(saved_chat()))
    (chats / "loop.json").symlink_to(chats / "loop.json")

    result = mixtral("chat", "--list")

    assert result.exit_code == 0, result.stderr
    assert "The one good chat" in result.stdout and "name-\ufffd.json" in result.stdout
    assert "Traceback" not in result.stderr
    for name in ("dangling", "folder", "garbled", "wrong-type", "loop"):
        assert result.stderr.count(f"{name}.json") == 1, (name, result.stderr)


# -- --resume with settings on the command line ---------------------------------------------------------


def test_settings_given_with_resume_win_over_the_saved_ones_are_said_and_saved(mixtral, tmp_path):
    saved = tmp_path / "saved.json"
    Transcript(model="tiny", turns=[Turn("user", "Hi"), Turn("assistant", "Hello")]).save(saved)

    result = mixtral("chat", "--resume", saved, "-n", "3", "--temperature", "0", "--system", "Be brief.", input="Go\n")

    assert result.exit_code == 0, result.stderr
    assert "max_tokens 3" in result.stderr and "temperature 0.0" in result.stderr
    assert "the system prompt" in result.stderr
    resumed = Transcript.load(saved)
    assert (resumed.sampling.max_tokens, resumed.sampling.temperature, resumed.system) == (3, 0.0, "Be brief.")
    assert len(resumed.turns[-1].content) > 0 and resumed.turns[-1].role == "assistant"


def test_resume_without_settings_keeps_the_saved_ones_and_says_nothing_of_them(mixtral, tmp_path):
    saved = tmp_path / "saved.json"
    Transcript(model="tiny", sampling=SamplingOptions(temperature=0.0, max_tokens=5)).save(saved)

    result = mixtral("chat", "--resume", saved, input="Go\n")

    assert result.exit_code == 0, result.stderr
    assert "from the command line" not in result.stderr
    assert (Transcript.load(saved).sampling.max_tokens, Transcript.load(saved).sampling.temperature) == (5, 0.0)


# -- two sessions on one chat ---------------------------------------------------------------------------


def test_a_second_session_resuming_a_chat_in_use_is_refused_and_the_first_keeps_its_turns(mixtral, tmp_path):
    saved = tmp_path / "saved.json"
    Transcript(model="tiny", turns=[Turn("user", "Hi"), Turn("assistant", "Hello")]).save(saved)
    first = spawn_chat("--resume", str(saved), "-n", "2")

    second = mixtral("chat", "--resume", saved, input="Second session's question\n")
    first.sendline("First session's question")
    first.expect(r"2 tokens · ")
    first.expect(">>>")
    first.sendline("/exit")
    first.expect(pexpect.EOF)

    assert second.exit_code == 1
    assert f"Error: {saved} is open in another chat session." in second.stderr
    questions = [t.content for t in Transcript.load(saved).turns if t.role == "user"]
    assert questions == ["Hi", "First session's question"]


def test_a_second_session_is_refused_before_it_reads_the_chat(mixtral, tmp_path):
    # Read before the lock, a second session would save over turns the first adds after it read the file.
    saved = tmp_path / "saved.json"
    Transcript(model="tiny", turns=[Turn("user", "Hi")]).save(saved)
    with resumed(saved) as first:
        assert first.turns == [Turn("user", "Hi", first.turns[0].timestamp)]
        saved.write_text("{not a chat: only a session that read the file would say so")

        second = mixtral("chat", "--resume", saved, input="Second session's question\n")

    assert second.exit_code == 1
    assert f"Error: {saved} is open in another chat session." in second.stderr
    assert "not a saved chat" not in second.stderr


def test_a_resumed_chat_leaves_no_lock_file_beside_it(mixtral, tmp_path):
    saved = tmp_path / "saved.json"
    Transcript(model="tiny", turns=[Turn("user", "Hi"), Turn("assistant", "Hello")]).save(saved)

    result = mixtral("chat", "--resume", saved, "-n", "2", input="Two\n")

    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved.json"]


def test_a_chat_can_be_resumed_again_once_its_session_has_ended(mixtral, tmp_path):
    saved = tmp_path / "saved.json"
    Transcript(model="tiny", turns=[Turn("user", "Hi"), Turn("assistant", "Hello")]).save(saved)

    assert mixtral("chat", "--resume", saved, "-n", "2", input="Two\n").exit_code == 0
    again = mixtral("chat", "--resume", saved, "-n", "2", input="Three\n")

    assert again.exit_code == 0, again.stderr
    assert [t.content for t in Transcript.load(saved).turns if t.role == "user"] == ["Hi", "Two", "Three"]


# -- writing onto a symbolic link -----------------------------------------------------------------------


def test_an_atomic_write_onto_a_link_writes_the_file_it_points_to_and_keeps_the_link(tmp_path):
    target = tmp_path / "real" / "notes.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    chained = tmp_path / "chained.json"
    chained.symlink_to(link)

    with atomic_path(chained) as partial:
        partial.write_text("new")

    assert chained.is_symlink() and link.is_symlink()
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["notes.json"]


def test_an_atomic_write_onto_a_dangling_link_creates_the_file_it_points_to(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "made.json")

    with atomic_path(link) as partial:
        partial.write_text("new")

    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "new"


def test_save_onto_a_link_writes_its_target_and_keeps_the_link(mixtral, tmp_path):
    kept = tmp_path / "kept" / "chat.md"
    kept.parent.mkdir()
    kept.write_text("old notes")
    link = tmp_path / "chat.md"
    link.symlink_to(kept)

    result = mixtral("chat", "-m", "tiny", "-n", "2", input=f"Hello\n/save {link}\n")

    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and "## You" in kept.read_text()


def test_quantize_output_onto_a_link_writes_its_target_and_keeps_the_link(mixtral, tiny_checkpoint, tmp_path):
    real = tmp_path / "store" / "model.gguf"
    real.parent.mkdir()
    real.write_bytes(b"an older model")
    link = tmp_path / "model.gguf"
    link.symlink_to(real)

    result = mixtral("quantize", tiny_checkpoint, "--type", "Q8_0", "-o", link, "--force")

    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and real.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in real.parent.iterdir()) == ["model.gguf"]


# -- the terminal: an unreadable input history, a dumb terminal ----------------------------------------


def test_an_unreadable_input_history_is_one_notice_and_the_chat_keeps_input_in_memory(isolated_home):
    history = isolated_home / "mixtral" / "chat_history"
    history.mkdir(parents=True)  # a folder by that name: no uid can read it as a file
    child = spawn_chat("-n", "2")
    screen = child.before
    child.logfile_read = io.StringIO()
    child.sendline("Hello")
    child.expect(r"2 tokens · ")
    child.expect(">>>")
    child.send("\x1b[A")  # the previous input, from the history kept in memory
    child.send("\r")
    child.expect(r"2 tokens · ")
    child.expect(">>>")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    screen += child.logfile_read.getvalue()

    assert screen.count("Input history is not read from") == 1
    assert "Press ENTER" not in screen and "Traceback" not in screen
    assert [t.content for t in Transcript.load(autosaves(isolated_home)[0]).turns if t.role == "user"] == ["Hello"] * 2


def spawn_on_a_dumb_terminal() -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "mixtral_cli", "chat", "-m", "tiny", "--temperature", "0", "-n", "2"],
        preexec_fn=with_default_signals,
        env={**os.environ, "TERM": "dumb"},
        encoding="utf-8",
        codec_errors="replace",
        timeout=60,
    )


def test_a_dumb_terminal_chats_line_by_line(isolated_home):
    child = spawn_on_a_dumb_terminal()
    child.expect(">>> ")
    child.sendline("Hello")
    child.expect(r"2 tokens · ")
    child.expect(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
    assert [t.content for t in Transcript.load(autosaves(isolated_home)[0]).turns][0] == "Hello"


def test_ctrl_d_leaves_the_chat_on_a_dumb_terminal():
    child = spawn_on_a_dumb_terminal()
    child.expect(">>> ")
    # At once, as Emacs's shell sends it: the terminal is read from the moment the prompt shows.
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
