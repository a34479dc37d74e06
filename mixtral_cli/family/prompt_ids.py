"""Conversations -> the exact token ids Mistral's own mistral-common builds for Mixtral Instruct.

Ids are built directly, never through a string template: BOS/EOS (and v3's [INST]/[/INST]) are inserted
by id and message text is tokenized without special-token parsing, so a user who types "</s>" or
"[INST]" gets those characters, not control tokens. Every string template tried (the Hub's Jinja
templates, llama.cpp's built-in ones) differs from mistral-common somewhere; these ids do not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal

from ..base.errors import InvalidConversationError
from .tool_prompt import (
    Tool,
    ToolCall,
    calls_json,
    check_call_name,
    prompt_call_ids,
    read_json_file,
    refuse_tools,
    result_json,
    tools_json,
)

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
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
    # v3 only: control tokens, inserted by id
    inst: int | None = None
    inst_end: int | None = None
    tool_calls: int | None = None  # [TOOL_CALLS]: what follows is the assistant's calls
    tools: int | None = None  # [AVAILABLE_TOOLS]
    tools_end: int | None = None
    results: int | None = None  # [TOOL_RESULTS]
    results_end: int | None = None


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls (its content is then empty)
    tool_call_id: str | None = None  # a tool's result: the id of the call it answers, as the client sent it


def messages_from_dicts(items: object) -> list[Message]:
    """Messages from parsed JSON in OpenAI's chat format (``[{"role": ..., "content": ...}, ...]``), checked.

    Assistant messages may carry ``tool_calls`` and tool messages answer one by its ``tool_call_id``; a content
    may be a list of text parts, joined by a blank line as mistral-common joins them.
    """
    if not isinstance(items, list):
        raise InvalidConversationError("A conversation must be a JSON list of {role, content} objects.")
    return [_message_from_dict(item, i) for i, item in enumerate(items, 1)]


def read_messages(source: str) -> list[Message]:
    """The conversation of a JSON file (or stdin for '-') in OpenAI's chat format."""
    return messages_from_dicts(read_json_file(source, "messages", error=InvalidConversationError))


def message_dict(message: Message) -> dict:
    """``message`` in OpenAI's chat format, as messages_from_dicts reads it."""
    item: dict = {"role": message.role, "content": message.content}
    if message.tool_calls:
        item["content"] = None
        item["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        item["tool_call_id"] = message.tool_call_id
    return item


def _message_from_dict(item: object, i: int) -> Message:
    if not isinstance(item, dict) or item.get("role") not in ROLES:
        raise InvalidConversationError(
            f"Message {i} must be an object with a role (system, user, assistant or tool) and a string content."
        )
    role = item["role"]
    calls = _calls_from_dicts(item.get("tool_calls"), i) if role == "assistant" else ()
    content = item.get("content")
    content = "" if content is None and calls else _text(content, i)
    if role != "tool":
        return Message(role, content, calls)
    call_id = item.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidConversationError(f"Message {i} is a tool result without a tool_call_id naming its call.")
    return Message(role, content, tool_call_id=call_id)


def _text(content: object, i: int) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else None
    if parts is None or not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
        raise InvalidConversationError(
            f"Message {i} must be an object with a role (system, user, assistant or tool) and a string content."
        )
    return "\n\n".join(part["text"] for part in parts if part["text"])


def _calls_from_dicts(value: object, i: int) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidConversationError(f"Message {i}'s tool_calls must be a list of calls.")
    calls = []
    for j, call in enumerate(value, 1):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str) or not call["id"]:
            raise InvalidConversationError(
                f'Message {i}\'s tool call {j} must be an object {{"id", "type": "function", '
                '"function": {"name", "arguments"}}.'
            )
        arguments = function.get("arguments", "")
        if isinstance(arguments, dict):  # some clients send the object itself, not its JSON
            arguments = json.dumps(arguments, ensure_ascii=False)
        if not isinstance(arguments, str):
            raise InvalidConversationError(f"Message {i}'s tool call {j} has arguments that are not JSON text.")
        name = check_call_name(function.get("name"), f"Message {i}'s tool call {j}")
        calls.append(ToolCall(name, arguments, call["id"]))
    return tuple(calls)


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
    messages: Sequence[Message],
    *,
    prompt_format: PromptFormat,
    special: SpecialIds,
    encode: Encode,
    tools: Sequence[Tool] = (),
) -> list[int]:
    """The prompt ids for ``messages`` (and the ``tools`` the model may call), ending where the assistant's answer
    starts, or continues its last message, as mistral-common's prefix continuation does; an empty last assistant
    message is dropped."""
    _validate(messages)
    if prompt_format is PromptFormat.V1 and (tools or any(m.role == "tool" or m.tool_calls for m in messages)):
        raise refuse_tools(reason="this model has the v1 (Mixtral-8x7B) prompt format, which has no tool tokens")
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content) or None
    turns = _answerable(_merge_runs(messages))
    call_ids = conversation_call_ids(messages)
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
                continue
            if i == user_indices[-1] and tools:
                ids += [_required(special.tools), *encode(tools_json(tools)), _required(special.tools_end)]
            ids += [_required(special.inst), *encode(content), _required(special.inst_end)]
        elif message.role == "tool":
            payload = result_json(content, call_ids[message.tool_call_id])  # type: ignore[index]
            ids += [_required(special.results), *encode(payload), _required(special.results_end)]
        elif message.tool_calls:
            ids += [_required(special.tool_calls), *encode(calls_json(message.tool_calls, call_ids)), special.eos]
        else:
            # v3 right-strips spaces from answers before encoding them; v1 keeps them.
            ids += encode(content if prompt_format is PromptFormat.V1 else content.rstrip(" "))
            if i < len(turns) - 1:
                ids.append(special.eos)  # the last is a prefix the answer continues: it has not ended
    return ids


def conversation_call_ids(messages: Sequence[Message]) -> dict[str, str]:
    """The client's call ids in ``messages`` -> the ids the prompt shows (see tool_prompt.prompt_call_ids)."""
    client_ids = [call.id for m in messages for call in m.tool_calls if call.id is not None]
    return prompt_call_ids([*client_ids, *(m.tool_call_id for m in messages if m.tool_call_id is not None)])


def continues_answer(messages: Sequence[Message]) -> bool:
    """Whether the answer to ``messages`` continues their last, the assistant's, message (a prefix)."""
    return bool(messages) and messages[-1].role == "assistant" and bool(messages[-1].content)


def raw_prompt_ids(text: str, *, special: SpecialIds, encode: Encode) -> list[int]:
    """Plain completion, as base models expect: BOS, then the text."""
    return [special.bos, *encode(text)]


def _validate(messages: Sequence[Message]) -> None:
    # The rules mistral-common's validator applies when serving, and that results answer the calls they name.
    if not messages:
        raise InvalidConversationError("The conversation is empty.")
    unanswered: list[str] = []  # the ids of the latest calls that no result has answered yet
    for i, message in enumerate(messages, 1):
        if message.content and message.tool_calls:
            raise InvalidConversationError(
                f"Message {i} holds both text and tool calls; Mixtral's format has one or the other in a turn."
            )
        if message.role == "tool":
            if message.tool_call_id not in unanswered:
                raise InvalidConversationError(
                    f"Message {i} is the result of call {json.dumps(message.tool_call_id, ensure_ascii=False)}, "
                    "which is not an unanswered call of the assistant message just before."
                )
            unanswered.remove(message.tool_call_id)
            continue
        if unanswered:
            raise InvalidConversationError(
                f"Message {i} comes before every tool call is answered: each call needs its tool result first."
            )
        unanswered = [call.id for call in message.tool_calls if call.id is not None]
        if len(set(unanswered)) < len(unanswered):
            raise InvalidConversationError(f"Message {i} has two tool calls with the same id.")
    if unanswered:
        raise InvalidConversationError("The conversation ends on tool calls; send their results to continue.")


def _answerable(turns: list[Message]) -> list[Message]:
    """The rules of mistral-common's normalizer and instruct tokenizer, on merged turns: an assistant turn has
    text or calls, but for the last, which is then no prefix at all (the answer starts afresh)."""
    if turns[-1].role == "assistant" and not turns[-1].content and not turns[-1].tool_calls:
        turns = turns[:-1]
    if any(turn.role == "assistant" and not turn.content and not turn.tool_calls for turn in turns):
        raise InvalidConversationError("An assistant message cannot be empty, but for the last.")
    return turns


def _merge_runs(messages: Sequence[Message]) -> list[Message]:
    """Drop system messages and merge adjacent user or assistant messages; a system message splits a run.

    Tool results are never merged: each is its own block.
    """
    runs: list[list[Message]] = []
    previous_role: Role | None = None
    for message in messages:
        if message.role != "system":
            if runs and previous_role == message.role and message.role != "tool":
                runs[-1].append(message)
            else:
                runs.append([message])
        previous_role = message.role
    turns = [_merged(run) for run in runs]
    if not turns or turns[0].role != "user":
        turns.insert(0, Message("user", ""))
    return turns


def _merged(run: list[Message]) -> Message:
    # Empty parts are skipped, not joined: ["", "b"] merges to "b".
    content = "\n\n".join(m.content for m in run if m.content)
    calls = tuple(call for m in run for call in m.tool_calls)
    if content and calls:
        raise InvalidConversationError(
            "Adjacent assistant messages hold text and tool calls; Mixtral's format has one or the other in a turn."
        )
    return replace(run[0], content=content, tool_calls=calls)


def _required(token_id: int | None) -> int:
    if token_id is None:
        raise InvalidConversationError("This vocabulary lacks the v3 control tokens; it cannot use the v3 format.")
    return token_id
