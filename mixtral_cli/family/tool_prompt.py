"""Function calling in Mixtral-8x22B-Instruct's v3 format: tools, calls and results as mistral-common writes them.

The model was trained on JSON made by Python's ``json.dumps`` (default separators, ``ensure_ascii=False``):
the tools list once before the last user message, each assistant call list after ``[TOOL_CALLS]``, each
tool result between ``[TOOL_RESULTS]`` and ``[/TOOL_RESULTS]``. The payloads here are exactly those texts;
prompt_ids.py puts the control tokens around them by id.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import string
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from ..base.errors import InvalidConversationError, InvalidToolsError, ToolsNotSupportedError

TOOLS_MODEL = "Mixtral-8x22B-Instruct-v0.1"
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
CALL_ID = re.compile(r"[a-zA-Z0-9]{9}")  # mistral-common's validator refuses every other id
_ID_ALPHABET = string.ascii_letters + string.digits
_NO_PARAMETERS = {"type": "object", "properties": {}}  # what OpenAI means by a tool without "parameters"
_NAME_RULE = "names are 1 to 64 letters, digits, '_' or '-'"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict = field(hash=False)

    def as_json(self) -> dict:
        """The tool as mistral-common shows it to the model: OpenAI's shape without ``strict``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI clients send it ("" means no arguments)
    id: str | None = None


def refuse_tools(*, reason: str) -> ToolsNotSupportedError:
    return ToolsNotSupportedError(
        f"Tools need {TOOLS_MODEL}, the one Mixtral trained to call functions; {reason}.",
        hint="Use `-m 8x22b-instruct`, or leave the tools out.",
    )


def tools_from_dicts(value: object) -> tuple[Tool, ...]:
    """Tools from parsed JSON in OpenAI's shape (``[{"type": "function", "function": {...}}]``), checked."""
    if not isinstance(value, list):
        raise InvalidToolsError(
            'The tools must be a JSON list of {"type": "function", "function": {"name", "description", '
            '"parameters"}} objects.'
        )
    tools: list[Tool] = []
    for i, item in enumerate(value, 1):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or item.get("type", "function") != "function":
            raise InvalidToolsError(f'Tool {i} must be an object {{"type": "function", "function": {{...}}}}.')
        name, description = function.get("name"), function.get("description", "")
        parameters = function.get("parameters", _NO_PARAMETERS)
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise InvalidToolsError(f"Tool {i}'s name {json.dumps(name, ensure_ascii=False)} is refused: {_NAME_RULE}.")
        if any(tool.name == name for tool in tools):
            raise InvalidToolsError(f'Two tools are named "{name}"; the model could not tell which one it calls.')
        if not isinstance(description, str):
            raise InvalidToolsError(f'Tool "{name}"\'s description must be a string.')
        if not isinstance(parameters, dict):
            raise InvalidToolsError(f'Tool "{name}"\'s parameters must be a JSON schema object.')
        tools.append(Tool(name, description, parameters))
    return tuple(tools)


def read_tools(source: str) -> tuple[Tool, ...]:
    """The tools of a JSON file (or stdin for '-') in OpenAI's shape."""
    return tools_from_dicts(read_json_file(source, "tools", error=InvalidToolsError))


def read_json_file(source: str, what: str, *, error: type[Exception]) -> object:
    """The parsed JSON of a file, or of stdin for '-' (``what`` names it in errors)."""
    from pathlib import Path

    from ..base.textinput import STDIN, parse_json, read_stdin, read_text_file

    text = read_stdin() if source == "-" else read_text_file(Path(source))
    return parse_json(text, STDIN if source == "-" else f"The {what} file {source}", error=error)


def check_call_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise InvalidConversationError(
            f"{where} calls the function {json.dumps(name, ensure_ascii=False)}, a name refused: {_NAME_RULE}."
        )
    return name


def tools_json(tools: Sequence[Tool]) -> str:
    return _dumps([tool.as_json() for tool in tools], error=InvalidToolsError)


def calls_json(calls: Sequence[ToolCall], ids: dict[str, str]) -> str:
    """An assistant's calls as the model writes them after ``[TOOL_CALLS]``; ``ids`` maps the client's ids."""
    payload = []
    for call in calls:
        entry = {"name": call.name, "arguments": json_or_text(call.arguments)}
        if call.id is not None:
            entry["id"] = ids[call.id]
        payload.append(entry)
    return _dumps(payload)


def result_json(content: str, call_id: str) -> str:
    """A tool's result as mistral-common puts it between ``[TOOL_RESULTS]`` and ``[/TOOL_RESULTS]``."""
    return _dumps({"content": json_or_text(content), "call_id": call_id})


def json_or_text(text: str) -> object:
    """The parsed JSON of ``text`` (none: an empty object), or the text itself where it is not JSON."""
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
    except RecursionError:
        raise InvalidConversationError("A tool call's arguments or a tool's result nest too deeply.") from None


def prompt_call_ids(client_ids: Iterable[str]) -> dict[str, str]:
    """Each call id a client sent -> the 9 letters and digits the prompt shows in its place.

    An id already of that form is kept; any other (OpenAI clients invent ``call_abc123...``) becomes 9
    characters of its SHA-256, so a call and its result, and the same history sent again, map alike.
    """
    distinct = list(dict.fromkeys(client_ids))
    mapping = {client_id: client_id for client_id in distinct if CALL_ID.fullmatch(client_id)}
    taken = set(mapping.values())
    for client_id in distinct:
        if client_id in mapping:
            continue
        attempt = 0
        while True:
            digest = hashlib.sha256(f"{attempt}:{client_id}".encode("utf-8", "surrogatepass")).digest()
            candidate = _base62(int.from_bytes(digest, "big"))
            if candidate not in taken:
                break
            attempt += 1
        mapping[client_id] = candidate
        taken.add(candidate)
    return mapping


def fresh_call_ids(count: int, *, taken: Collection[str] = (), seed: int | None = None) -> list[str]:
    """``count`` new random ids of 9 letters and digits, none of them in ``taken`` or repeated; the same ones
    for the same ``seed``, so that a seeded answer, whose calls the ids are part of, can be repeated."""
    choice = secrets.choice if seed is None else random.Random(seed).choice
    ids: list[str] = []
    while len(ids) < count:
        candidate = "".join(choice(_ID_ALPHABET) for _ in range(9))
        if candidate not in taken and candidate not in ids:
            ids.append(candidate)
    return ids


def _base62(number: int) -> str:
    digits = []
    for _ in range(9):
        number, digit = divmod(number, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[digit])
    return "".join(digits)


def _dumps(value: object, *, error: type[Exception] = InvalidConversationError) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if re.search("[\ud800-\udfff]", text):
        # A JSON escape such as "\ud800" parses to half a character, which no tokenizer can take.
        raise error("A tool, call or result holds a lone UTF-16 surrogate, which is not text.")
    return text
