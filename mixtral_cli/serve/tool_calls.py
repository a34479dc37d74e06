"""Tool calls in the server's requests and answers (OpenAI's shapes), and the routes agent clients ask for beside
them, as llama-server names them: POST /tokenize, /detokenize and /apply-template (the prompt, not generated)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..answer.tool_calls import ToolCallAnswer, ToolCallDelta, ToolRequest, tool_request
from ..base.errors import InvalidRequestError
from ..family.prompt_ids import messages_from_dicts

if TYPE_CHECKING:
    from ..answer.request import AnswerEnd
    from ..engine.model import Engine

TOKENIZE_ROUTE, DETOKENIZE_ROUTE, APPLY_TEMPLATE_ROUTE = "/tokenize", "/detokenize", "/apply-template"


def request_tools(data: dict[str, Any]) -> ToolRequest | None:
    """A request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``, checked (None without tools)."""
    return tool_request(data.get("tools"), choice=data.get("tool_choice"), parallel=data.get("parallel_tool_calls"))


def tools_body(tools: ToolRequest | None) -> dict[str, Any] | None:
    """``tools`` as a request carries them (what ``request_tools`` reads)."""
    if tools is None:
        return None
    choice: object = tools.choice.value
    if tools.function is not None:
        choice = {"type": "function", "function": {"name": tools.function}}
    return {
        "tools": [tool.as_json() for tool in tools.tools],
        "tool_choice": choice,
        "parallel_tool_calls": tools.parallel,
    }


def is_tool_message(item: object) -> bool:
    """A tool result, or an assistant message with calls: read whole, not as role and text alone."""
    return isinstance(item, dict) and (item.get("role") == "tool" or bool(item.get("tool_calls")))


def delta_json(delta: ToolCallDelta) -> dict[str, Any]:
    """One streamed piece of a call, as OpenAI's ``delta.tool_calls[0]``."""
    if delta.id is None:
        return {"index": delta.index, "function": {"arguments": delta.arguments}}
    return {
        "index": delta.index,
        "id": delta.id,
        "type": "function",
        "function": {"name": delta.name, "arguments": delta.arguments},
    }


def delta_from(data: dict[str, Any]) -> ToolCallDelta:
    function = data.get("function") or {}
    return ToolCallDelta(data["index"], function.get("arguments", ""), data.get("id"), function.get("name"))


def answer_message(text: str, end: AnswerEnd) -> dict[str, Any]:
    """The assistant message of a whole chat answer: its text, and its calls if it made any."""
    if not end.tool_calls:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text or None, "tool_calls": [c.as_openai() for c in end.tool_calls]}


def calls_from(items: object) -> tuple[ToolCallAnswer, ...]:
    """Calls as ``as_openai`` wrote them (an answer's end, sent by the server to `complete --server`)."""
    if not items:
        return ()
    return tuple(ToolCallAnswer(i["id"], i["function"]["name"], i["function"]["arguments"]) for i in items)  # type: ignore[union-attr]


# -- the routes beside the completions -------------------------------------------------------------------


def tokenize_job(data: object):  # noqa: ANN201 - Callable[[Engine], Iterator]
    """llama-server's /tokenize: ``content``, ``add_special`` (BOS), ``parse_special``, ``with_pieces``."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), str):
        raise InvalidRequestError('The request needs the text to tokenize as "content".')
    text, bos, special, pieces = (
        data["content"],
        bool(data.get("add_special", False)),
        bool(data.get("parse_special", True)),
        bool(data.get("with_pieces", False)),
    )

    def run(engine: Engine) -> Iterator[object]:
        ids = [engine.special.bos] * bos + engine.tokenize(text, parse_special=special)
        if not pieces:
            yield {"tokens": ids}
            return
        yield {"tokens": [{"id": token, "piece": _piece(engine.piece(token, special=True))} for token in ids]}

    return run


def detokenize_job(data: object, *, n_vocab: int):  # noqa: ANN201 - Callable[[Engine], Iterator]
    """llama-server's /detokenize: ``tokens`` -> ``content`` (control tokens spelt out)."""
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n_vocab for t in tokens
    ):
        raise InvalidRequestError(f'"tokens" must be a list of token ids, each below {n_vocab}.')

    def run(engine: Engine) -> Iterator[object]:
        text = b"".join(engine.piece(token, special=True) for token in tokens)
        yield {"content": text.decode("utf-8", errors="replace")}

    return run


def apply_template_job(data: object):  # noqa: ANN201 - Callable[[Engine], Iterator]
    """llama-server's /apply-template: a chat request's prompt, without generating. Beside llama-server's
    ``prompt`` (a text, which would not tokenize back to the same ids) come the ids themselves and their count."""
    if not isinstance(data, dict):
        raise InvalidRequestError("The request must be a JSON object.")
    messages = messages_from_dicts(data.get("messages"))
    tools = request_tools(data)

    def run(engine: Engine) -> Iterator[object]:
        ids = engine.chat_ids(messages, tools=tools.tools if tools else ())
        prompt = b"".join(engine.piece(token, special=True) for token in ids).decode("utf-8", errors="replace")
        yield {"prompt": prompt, "tokens": ids, "n_tokens": len(ids)}

    return run


def _piece(data: bytes) -> str | list[int]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return list(data)
