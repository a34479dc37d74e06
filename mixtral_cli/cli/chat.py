"""`mixtral chat`."""

from __future__ import annotations

import contextlib
from dataclasses import fields, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..engine.options import EngineOptions, SamplingOptions
from .options import ModelOption, ServerOption, SystemOption, runs_a_model

if TYPE_CHECKING:
    from ..chat.transcript import Transcript


class ContextPolicyChoice(str, Enum):
    drop = "drop"
    error = "error"


@runs_a_model
def chat(
    context: typer.Context,
    model: ModelOption = None,
    system: SystemOption = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", "-r", show_default=False, help="Continue a saved chat (a JSON file).")
    ] = None,
    list_chats: Annotated[bool, typer.Option("--list", help="List the saved chats and exit.")] = False,
    context_policy: Annotated[
        ContextPolicyChoice,
        typer.Option(help="When the history outgrows the context: drop the oldest exchanges, or refuse."),
    ] = ContextPolicyChoice.drop,
    server: ServerOption = None,
    *,
    sampling: SamplingOptions,
    engine_options: EngineOptions,
) -> None:
    """Chat with a model: multi-turn, streamed as Markdown, saved as you go.

    Type /help in the chat for its commands. With stdin not a terminal, each line is one user turn and
    the answers go to stdout, so chats can be scripted. Every chat is autosaved after each turn;
    --list shows them and --resume continues one.

    \b
    Examples:
        mixtral chat -m tiny
        mixtral chat -m model.gguf --system "Answer in French." --temperature 0.7
        printf 'Hello\\nTell me more\\n' | mixtral chat -m tiny
        mixtral chat --server http://127.0.0.1:8080   # the model `mixtral serve` keeps loaded
    """
    from ..base.errors import ChatError, ModelNotFoundError
    from ..base.paths import mixtral_home
    from ..chat.session import ChatSession, ContextPolicy, resumed
    from ..chat.transcript import Transcript
    from ..engine.model import Engine
    from ..ui.repl import run_repl

    if list_chats:
        _print_saved_chats()
        return
    with contextlib.ExitStack() as hold:
        if resume is not None:
            transcript = hold.enter_context(resumed(resume))
            _apply_command_line(transcript, _given_on_command_line(context, sampling, system=system))
        else:
            transcript = Transcript(model="", system=system, sampling=sampling)
        if server is not None:
            from ..serve.remote import RemoteEngine

            engine = RemoteEngine(server)
            transcript.model = model or transcript.model or engine.info.name
        else:
            spec = model or transcript.model or None
            if spec is None:
                raise ModelNotFoundError("No model given.", hint="Pass -m MODEL (-m tiny for the built-in demo).")
            transcript.model = spec
            engine = _load_engine(spec, engine_options)

        session: ChatSession | None = None

        def load_engine(name: str) -> Engine:
            if server is not None:
                raise ChatError("With --server, the server's model answers: start it with another model to switch.")
            # A model switch keeps the adapters applied now (/lora), not those the command line gave.
            loras = session.engine.options.loras if session else engine_options.loras
            return _load_engine(name, replace(engine_options, loras=loras))

        session = ChatSession(engine, transcript, policy=ContextPolicy(context_policy.value), autosave_path=resume)
        try:
            run_repl(session, history_file=mixtral_home() / "chat_history", load_engine=load_engine)
        finally:
            session.engine.close()


def _apply_command_line(transcript: Transcript, given: dict[str, object]) -> None:
    """The settings typed with --resume in place of the saved ones, said once."""
    from ..ui.console import print_notice

    if given:
        said = ", ".join("the system prompt" if k == "system" else f"{k} {v}" for k, v in given.items())
        print_notice(f"Continuing with {said} from the command line, in place of the saved settings.")
        transcript.sampling = replace(transcript.sampling, **{k: v for k, v in given.items() if k != "system"})
        transcript.system = given.get("system", transcript.system)


def _given_on_command_line(
    context: typer.Context, sampling: SamplingOptions, *, system: str | None
) -> dict[str, object]:
    """The settings typed with --resume, which win over the saved ones: ``{name: value}``."""
    given: dict[str, object] = {
        f.name: getattr(sampling, f.name)
        for f in fields(sampling)
        if getattr(context.get_parameter_source(f.name), "name", None) == "COMMANDLINE"
    }
    if system:
        given["system"] = system
    return given


def _load_engine(name: str, options: EngineOptions):  # noqa: ANN202 - Engine
    from ..engine.layout import for_chat
    from ..engine.model import Engine
    from ..sources.model_path import resolve_model
    from ..ui.console import print_notice

    model_file = resolve_model(name)
    return Engine(model_file.path, for_chat(options), on_notice=print_notice, pulled_as=model_file.pulled_as)


def _print_saved_chats() -> None:
    from ..chat.session import list_saved_chats
    from ..ui.console import print_notice
    from ..ui.table import print_rows

    chats, unreadable = list_saved_chats()
    rows = [
        (_shown(c.path), c.created, c.model, str(c.messages), c.first_question.replace("\n", " ")[:60]) for c in chats
    ]
    print_rows(("file", "started", "model", "messages", "first question"), rows, empty="No saved chats yet.")
    for file in unreadable:
        print_notice(f"Not listed: {_shown(file.reason)}")


def _shown(text: object) -> str:
    """``text`` printable on any terminal: a byte of a file name that is not UTF-8 shows as U+FFFD."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
