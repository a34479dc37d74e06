"""Slash commands: parsed here, acted on through the session; the REPL shows what they return."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.options import OPTION_BOUNDS, LoraSpec
from ..family.instruct import describe
from ..sources.model_path import resolve_lora
from .session import ChatError, ChatSession, TurnResult

if TYPE_CHECKING:
    from ..engine.model import Engine

HELP = """\
/help                 this list
/exit                 leave (also Ctrl-D)
/clear                forget the conversation (the system prompt stays)
/undo                 remove the last exchange
/retry                answer the last message again
/system [TEXT]        set the system prompt; without TEXT, show it
/set NAME VALUE       temperature, top_p, top_k, min_p, max_tokens or seed
/set schema FILE|off  answer in JSON that follows this JSON schema, or freely again
/show                 the model and the settings
/context              tokens used and left, turns kept
/stats                tokens and speed of this session
/save [FILE]          save the chat (JSON, or Markdown for a .md name)
/load FILE            continue a saved chat (FILE stays as it is; this chat saves to a new file)
/model NAME           switch model, keep the conversation
/lora FILE [SCALE]    apply a GGUF LoRA adapter too (scale 1 by default); /lora off: none; /lora: list
Multi-line input: Alt-Enter (or Esc then Enter) for a new line, or a block between triple quotes.\
"""
COMMANDS = (
    "/help",
    "/exit",
    "/clear",
    "/undo",
    "/retry",
    "/system",
    "/set",
    "/show",
    "/context",
    "/stats",
    "/save",
    "/load",
    "/model",
    "/lora",
)

# name -> the type its value is read as; its range is the option's (OPTION_BOUNDS)
_SETTINGS: dict[str, type] = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "max_tokens": int,
    "seed": int,
}


@dataclass
class CommandResult:
    output: str | None = None
    answer: tuple[Iterator[str], Callable[[], TurnResult]] | None = None
    exit: bool = False


def is_command(line: str) -> bool:
    return line.startswith("/") and not line.startswith("//")


def run_command(session: ChatSession, line: str, *, load_engine: Callable[[str], Engine]) -> CommandResult:
    """Carry out one slash command; a bad one raises ChatError with a line of help."""
    try:
        name, *args = shlex.split(line)
    except ValueError:
        name, *args = line.split()
    rest = line[len(name) :].strip()
    if name in ("/exit", "/quit"):
        return CommandResult(exit=True)
    if name == "/help":
        return CommandResult(HELP)
    if name == "/clear":
        session.clear()
        return CommandResult("Conversation cleared.")
    if name == "/undo":
        session.undo()
        return CommandResult("Removed the last exchange.")
    if name == "/retry":
        return CommandResult(answer=session.retry())
    if name == "/system":
        if not rest:
            return CommandResult(
                f"System prompt: {session.transcript.system}" if session.transcript.system else "No system prompt."
            )
        session.set_system(rest)
        return CommandResult("System prompt set.")
    if name == "/set" and args[:1] == ["schema"]:
        return CommandResult(_set_schema(session, rest[len("schema") :].strip()))
    if name == "/set":
        return CommandResult(_set(session, args))
    if name == "/show":
        return CommandResult(_show(session))
    if name == "/context":
        used, total, kept = session.context_used(), session.engine.n_ctx, len(session.transcript.turns)
        sent = f"the last {len(session.sent_turns)} sent to the model" if session.left_out else "all sent to the model"
        return CommandResult(f"{used} of {total} tokens used, {total - used} left; {kept} messages kept, {sent}.")
    if name == "/stats":
        return CommandResult(_stats(session))
    if name == "/save":
        if rest:
            return CommandResult(f"Saved to {session.transcript.save(Path(rest))}.")
        session.autosave()
        return CommandResult(f"Saved to {session.autosave_path}.")
    if name == "/load":
        if not rest:
            raise ChatError("/load needs a file: /load FILE")
        session.load(Path(rest))
        return CommandResult(
            f"Loaded {len(session.transcript.turns)} messages from {rest}; this chat now saves to "
            f"{session.autosave_path}."
        )
    if name == "/model":
        if not rest:
            raise ChatError("/model needs a model: /model NAME")
        session.switch_engine(load_engine(rest), rest)
        return CommandResult(f"Now talking to {session.engine.info.name}.")
    if name == "/lora":
        return CommandResult(_lora(session, args))
    raise ChatError(f"Unknown command {name}; /help lists them.")


def _set(session: ChatSession, args: list[str]) -> str:
    if len(args) != 2 or args[0] not in _SETTINGS:
        raise ChatError(f"Usage: /set NAME VALUE, where NAME is one of {', '.join(_SETTINGS)}.")
    name, raw = args
    kind = _SETTINGS[name]
    try:
        value = kind(raw)
    except ValueError:
        raise ChatError(f"{name} must be {'a number' if kind is float else 'a whole number'}, not {raw!r}.") from None
    OPTION_BOUNDS[name].check(name, value, error=ChatError)
    session.set_sampling(**{name: value})
    return f"{name} = {value}"


def _set_schema(session: ChatSession, source: str) -> str:
    from ..answer.shapes import output_shape

    if not source:
        raise ChatError("Usage: /set schema FILE (a JSON schema), or /set schema off.")
    if source == "off":
        session.set_shape(None)
        return "Answers are free again."
    session.set_shape(output_shape(json_schema=source))
    return "Answers are JSON that follows the schema."


def _lora(session: ChatSession, args: list[str]) -> str:
    if not args:
        return f"LoRA adapters: {_adapters(session)}"
    if args == ["off"]:
        session.set_loras(())
        return "LoRA adapters off: the base model answers from now on."
    if len(args) > 2:
        raise ChatError("Usage: /lora FILE [SCALE], or /lora off.")
    try:
        scale = float(args[1]) if len(args) == 2 else 1.0
    except ValueError:
        raise ChatError(f"The scale must be a number, not {args[1]!r}.") from None
    OPTION_BOUNDS["lora_scale"].check("The scale", scale, error=ChatError)
    added = replace(resolve_lora(args[0]), scale=scale)
    # Naming an applied adapter again changes its scale.
    applied = (LoraSpec(a.path, a.scale) for a in session.engine.adapters if a.path != added.path)
    session.set_loras([*applied, added])
    return f"LoRA adapters: {_adapters(session)}"


def _adapters(session: ChatSession) -> str:
    applied = session.engine.adapters
    return ", ".join(f"{a.name} ({a.path}) at scale {a.scale:g}" for a in applied) if applied else "(none)"


def _show(session: ChatSession) -> str:
    info = session.engine.info
    sampling = session.sampling
    settings = ", ".join(
        f"{f.name}={getattr(sampling, f.name)}" for f in fields(sampling) if f.name not in ("stop", "grammar")
    )
    return "\n".join(
        [
            f"model: {info.name} ({info.path})",
            f"format: {info.prompt_format.value} ids, {describe(info.instruct, info.instruct_source)}",
            f"lora: {_adapters(session)}",
            f"context: {session.engine.n_ctx} tokens",
            f"sampling: {settings}",
            f"system: {session.transcript.system or '(none)'}",
            f"autosave: {session.autosave_path}",
        ]
    )


def _stats(session: ChatSession) -> str:
    totals = session.totals
    return (
        f"prompt: {totals.prompt_tokens_evaluated} tokens evaluated of {totals.prompt_tokens} sent, "
        f"{totals.prompt_tokens_per_second:.1f} tok/s; answers: {totals.completion_tokens} tokens, "
        f"{totals.decode_tokens_per_second:.1f} tok/s"
    )
