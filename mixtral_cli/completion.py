"""One-shot completions: what `mixtral complete` does between parsing options and printing."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .engine.model import Engine
from .errors import MixtralError
from .prompt import Message


class PromptMode(str, Enum):
    AUTO = "auto"  # chat for Instruct models, raw for base models
    RAW = "raw"
    CHAT = "chat"


@dataclass(frozen=True)
class PreparedPrompt:
    ids: list[int]
    chat: bool


def prepare_prompt(
    engine: Engine, prompt: str | list[Message], *, system: str | None = None, mode: PromptMode = PromptMode.AUTO
) -> PreparedPrompt:
    """Prompt ids for ``prompt``: a text (wrapped as one user turn in chat mode) or a conversation."""
    chat = mode is PromptMode.CHAT or (mode is PromptMode.AUTO and engine.info.is_instruct)
    if isinstance(prompt, list):
        chat = True
    if not chat:
        if system:
            raise MixtralError(
                "--system needs the chat format, but this prompt is a raw completion.",
                hint="Add --chat, or put the instructions into the prompt.",
            )
        return PreparedPrompt(engine.raw_ids(prompt), chat=False)
    messages = prompt if isinstance(prompt, list) else [Message("user", prompt)]
    if system:
        messages = [Message("system", system), *messages]
    return PreparedPrompt(engine.chat_ids(messages), chat=True)
