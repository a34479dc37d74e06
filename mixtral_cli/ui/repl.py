"""The interactive chat loop: prompt-toolkit input, rich Markdown answers; plain lines when piped."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import MixtralError, OutputStreamError
from ..chat.commands import COMMANDS, CommandResult, is_command, run_command
from ..chat.session import ChatSession, TurnResult
from .console import print_error, print_notice, stderr_console, stdout_console

if TYPE_CHECKING:
    from ..engine.model import Engine

TRIPLE_QUOTES = '"""'


def run_repl(session: ChatSession, *, history_file: Path, load_engine: Callable[[str], Engine]) -> None:
    """Talk until /exit or end of input. With stdin not a terminal, each line is one user turn."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not interactive:
        read = _line_reader()
    elif _dumb_terminal():
        read = _dumb_terminal_reader()
    else:
        read = _prompt_reader(history_file)
    if interactive:
        stdout_console().print(
            f"[bold]{session.engine.info.name}[/] · {session.engine.n_ctx} tokens of context · "
            "[dim]/help for commands, Ctrl-D to leave[/]"
        )
    while True:
        try:
            line = read()
        except EOFError:
            return
        except KeyboardInterrupt:
            print_notice("Ctrl-D or /exit leaves the chat.")
            continue
        if not line.strip():
            continue
        try:
            if not _handle(session, line, interactive, load_engine=load_engine):
                return
        except OutputStreamError:
            raise  # nothing more can be shown: the command ends
        except MixtralError as exc:
            # One message; the conversation is as the failed command or turn left it, nothing lost.
            print_error(exc.message, exc.hint)
        except KeyboardInterrupt:
            if not interactive:
                raise
            print_notice("Stopped; the conversation is as it was.")


def _handle(session: ChatSession, line: str, interactive: bool, *, load_engine: Callable[[str], Engine]) -> bool:
    """Carry out one input line; False when the chat should end."""
    result = run_command(session, line, load_engine=load_engine) if is_command(line) else None
    if result is not None and result.exit:
        return False
    if result is not None and result.output:
        _show_output(result, interactive)
    answer = result.answer if result is not None else session.send(line)
    if answer is not None:
        _render_answer(session, answer, interactive)
    return True


def _show_output(result: CommandResult, interactive: bool) -> None:
    console = stdout_console() if interactive else stderr_console()
    console.print(result.output, markup=False)


def _render_answer(
    session: ChatSession, answer: tuple[Iterator[str], Callable[[], TurnResult]], interactive: bool
) -> None:
    chunks, finish = answer
    stopped = False
    try:
        if interactive:
            from .markdown_stream import MarkdownStream

            with MarkdownStream(stdout_console()) as stream:
                for chunk in chunks:
                    stream.feed(chunk)
        else:
            for chunk in chunks:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            sys.stdout.write("\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        chunks.close()
        if not interactive:
            raise
        stopped = True
    finally:
        result = finish()
    if stopped:
        print_notice(
            "Stopped; the partial answer is kept."
            if result.answered
            else "Stopped before the answer began; the conversation is as it was."
        )
    _print_turn_stats(session, result, interactive)


def _print_turn_stats(session: ChatSession, result: TurnResult, interactive: bool) -> None:
    stats = result.stats
    if result.newly_left_out:
        print_notice(
            f"Left the {result.newly_left_out} oldest messages out of what the model sees, to fit the context "
            "(the saved chat keeps them)."
        )
    console = stdout_console() if interactive else stderr_console()
    console.print(
        f"[dim]{stats.completion_tokens} tokens · {stats.decode_tokens_per_second:.1f} tok/s · "
        f"context {session.context_used()} of {session.engine.n_ctx}[/]"
    )


def _line_reader() -> Callable[[], str]:
    from ..base.textinput import MAX_TEXT_BYTES, STDIN, decode_text, read_bounded

    offset = 0

    def read() -> str:
        nonlocal offset
        line = sys.stdin.buffer.readline(MAX_TEXT_BYTES + 1)
        if not line:
            raise EOFError
        if not line.endswith(b"\n"):
            read_bounded(f"A line of {STDIN}", io.BytesIO(line), limit=MAX_TEXT_BYTES)
        text = decode_text(STDIN, line, offset=offset)
        offset += len(line)
        return text.rstrip("\n")

    return read


def _dumb_terminal() -> bool:
    from prompt_toolkit.utils import is_dumb_terminal

    return is_dumb_terminal()


def _dumb_terminal_reader() -> Callable[[], str]:
    """Lines as a dumb terminal (Emacs's shell, TERM=dumb) sends them: it edits the line and keeps the
    history itself. prompt-toolkit would write its prompt before it takes the terminal out of line mode, so
    a Ctrl-D typed at once is lost: here the terminal's own end of input is the end of the chat."""
    read_line = _line_reader()

    def read() -> str:
        print(">>> ", end="", flush=True)
        text = read_line()
        if not text.lstrip().startswith(TRIPLE_QUOTES):
            return text
        while not _closed_block(text):
            print("... ", end="", flush=True)
            text += "\n" + read_line()
        return text.strip()[3:-3].strip("\n")

    return read


def _prompt_reader(history_file: Path) -> Callable[[], str]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

    class InputHistory(FileHistory):
        """The input history file; one that cannot be read or written (a folder by that name, a full disk)
        costs the history, not the chat: the session keeps its input in memory then, and says so once."""

        error: str | None = None  # to report once, after the prompt
        failed = False

        def fail(self, doing: str, exc: OSError) -> None:
            if not self.failed:
                self.error = f"Input history is not {doing} {history_file}: {exc.strerror or exc}."
            self.failed = True

        def load_history_strings(self) -> Iterable[str]:
            try:
                return super().load_history_strings()
            except OSError as exc:
                self.fail("read from", exc)
                return []

        def store_string(self, string: str) -> None:
            if self.failed:
                return
            try:
                super().store_string(string)
            except OSError as exc:
                self.fail("saved to", exc)

    with contextlib.suppress(OSError):  # a home that cannot be made is reported with the first line stored
        history_file.parent.mkdir(parents=True, exist_ok=True)
    history = InputHistory(str(history_file))
    try:
        # prompt-toolkit loads the history in the background and shows a failure there as a traceback
        # under the prompt, on every prompt: a file that cannot be read is found here, before.
        if history_file.exists():
            history_file.open("rb").close()
    except OSError as exc:
        history.fail("read from", exc)
        print_notice(f"{history.error} This session keeps its input in memory.")
        history.error = None
    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event) -> None:  # noqa: ANN001 - prompt-toolkit's event
        buffer = event.current_buffer
        text = buffer.text
        # Inside a """ block Enter adds a line; the closing """ sends it.
        if text.lstrip().startswith(TRIPLE_QUOTES) and not _closed_block(text):
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    def _newline(event) -> None:  # noqa: ANN001
        event.current_buffer.insert_text("\n")

    session = PromptSession(
        history=history,
        completer=WordCompleter(list(COMMANDS), sentence=True, match_middle=False),
        complete_while_typing=True,
        key_bindings=bindings,
        multiline=True,
        enable_history_search=True,
    )

    def read() -> str:
        text = session.prompt(">>> ", prompt_continuation="... ")
        if history.error:
            print_notice(history.error)
            history.error = None
        stripped = text.strip()
        if stripped.startswith(TRIPLE_QUOTES) and _closed_block(stripped):
            return stripped[3:-3].strip("\n")
        return text

    return read


def _closed_block(text: str) -> bool:
    stripped = text.strip()
    return len(stripped) >= 6 and stripped.endswith(TRIPLE_QUOTES)
