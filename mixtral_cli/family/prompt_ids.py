"""Conversations -> the exact token ids Mistral's own mistral-common builds for Mixtral Instruct.

Ids are built directly, never through a string template: BOS/EOS (and v3's [INST]/[/INST]) are inserted
by id and message text is tokenized without special-token parsing, so a user who types "</s>" or
"[INST]" gets those characters, not control tokens. Every string template tried (the Hub's Jinja
templates, llama.cpp's built-in ones) differs from mistral-common somewhere; these ids do not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from ..base.errors import InvalidConversationError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
Encode = Callable[[str], list[int]]
"""SentencePiece encoding of plain text: dummy-prefix space on, no special tokens parsed."""


class PromptFormat(str, Enum):
    V1 = "v1"  # Mixtral-8x7B-Instruct: [INST] is plain text, the system prompt joins the first user turn
    V3 = "v3"  # Mixtral-8x22B-Instruct: [INST]/[/INST] are control tokens, the system prompt joins the last

    @classmethod
    def for_vocab_size(cls, n_vocab: int) -> PromptFormat:
        # The chat template string in a GGUF is unreliable; the vocabulary is not (32000 v1, 32768 v3).
        return cls.V3 if n_vocab >= 32768 else cls.V1


class PromptMode(str, Enum):
    AUTO = "auto"  # chat for Instruct models, raw for base models
    RAW = "raw"
    CHAT = "chat"


@dataclass(frozen=True)
class SpecialIds:
    bos: int
    eos: int
    inst: int | None = None  # v3 only
    inst_end: int | None = None


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


def messages_from_dicts(items: object) -> list[Message]:
    """Messages from parsed JSON (``[{"role": ..., "content": ...}, ...]``), checked."""
    if not isinstance(items, list):
        raise InvalidConversationError("A conversation must be a JSON list of {role, content} objects.")
    messages = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("role") not in ROLES or not isinstance(item.get("content"), str):
            raise InvalidConversationError(
                f"Message {i + 1} must be an object with a role (system, user or assistant) and a string content."
            )
        messages.append(Message(item["role"], item["content"]))
    return messages


def completion_messages(
    prompt: str | list[Message], *, instruct: bool, system: str | None = None, mode: PromptMode = PromptMode.AUTO
) -> list[Message] | None:
    """The conversation a completion sends: ``prompt`` as one user turn (or as given), or None for a raw completion.

    ``instruct`` says whether the model is an Instruct model, which AUTO answers in the chat format.
    """
    chat = isinstance(prompt, list) or mode is PromptMode.CHAT or (mode is PromptMode.AUTO and instruct)
    if not chat:
        if system:
            raise InvalidConversationError(
                "--system needs the chat format, but this prompt is a raw completion.",
                hint="Add --chat, or put the instructions into the prompt.",
            )
        return None
    messages = prompt if isinstance(prompt, list) else [Message("user", prompt)]
    return [Message("system", system), *messages] if system else messages


def chat_prompt_ids(
    messages: Sequence[Message], *, prompt_format: PromptFormat, special: SpecialIds, encode: Encode
) -> list[int]:
    """The prompt ids for ``messages``, ending where the assistant's answer starts, or continues its last
    message, as mistral-common's prefix continuation does; an empty last assistant message is dropped."""
    _validate(messages)
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content) or None
    turns = _answerable(_merge_runs(messages))
    user_indices = [i for i, m in enumerate(turns) if m.role == "user"]
    system_turn = user_indices[0] if prompt_format is PromptFormat.V1 else user_indices[-1]
    ids = [special.bos]
    for i, message in enumerate(turns):
        content = message.content
        if message.role == "user":
            if i == system_turn and system:
                content = f"{system}\n\n{content}"
            if prompt_format is PromptFormat.V1:
                ids += encode(f"[INST] {content} [/INST]")
            else:
                ids += [_required(special.inst), *encode(content), _required(special.inst_end)]
        else:
            # v3 right-strips spaces from answers before encoding them; v1 keeps them.
            ids += encode(content if prompt_format is PromptFormat.V1 else content.rstrip(" "))
            if i < len(turns) - 1:
                ids.append(special.eos)  # the last is a prefix the answer continues: it has not ended
    return ids


def continues_answer(messages: Sequence[Message]) -> bool:
    """Whether the answer to ``messages`` continues their last, the assistant's, message (a prefix)."""
    return bool(messages) and messages[-1].role == "assistant" and bool(messages[-1].content)


def raw_prompt_ids(text: str, *, special: SpecialIds, encode: Encode) -> list[int]:
    """Plain completion, as base models expect: BOS, then the text."""
    return [special.bos, *encode(text)]


def _validate(messages: Sequence[Message]) -> None:
    if not messages:
        raise InvalidConversationError("The conversation is empty.")


def _answerable(turns: list[Message]) -> list[Message]:
    """The rules of mistral-common's normalizer and instruct tokenizer, on merged turns: an assistant turn has
    text, but for the last, which is then no prefix at all (the answer starts afresh)."""
    if turns[-1].role == "assistant" and not turns[-1].content:
        turns = turns[:-1]
    if any(turn.role == "assistant" and not turn.content for turn in turns):
        raise InvalidConversationError("An assistant message cannot be empty, but for the last.")
    return turns


def _merge_runs(messages: Sequence[Message]) -> list[Message]:
    """Drop system messages and merge adjacent same-role messages; a system message splits a run."""
    runs: list[tuple[Role, list[str]]] = []
    previous_role: Role | None = None
    for message in messages:
        if message.role != "system":
            if runs and previous_role == message.role:
                runs[-1][1].append(message.content)
            else:
                runs.append((message.role, [message.content]))
        previous_role = message.role
    # Empty parts are skipped, not joined: ["", "b"] merges to "b".
    turns = [Message(role, "\n\n".join(part for part in parts if part)) for role, parts in runs]
    if not turns or turns[0].role != "user":
        turns.insert(0, Message("user", ""))
    return turns


def _required(token_id: int | None) -> int:
    if token_id is None:
        raise InvalidConversationError("This vocabulary has no [INST] control tokens; it cannot use the v3 format.")
    return token_id
