"""Tool calls as a kind of answer: what a request asks (tools, tool_choice, parallel_tool_calls), the grammar
that keeps a call valid, and reading the calls the model writes after its ``[TOOL_CALLS]`` token.

Mixtral-8x22B-Instruct calls tools by generating the control token ``[TOOL_CALLS]`` and then a JSON list of
``{"name", "arguments", "id"}`` objects. The decode loop reports that token by id (never found by searching
the text); what follows it is read here as it arrives, so calls stream as OpenAI's ``tool_calls`` deltas.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING

from ..base.errors import AnswerCutError, InvalidToolsError, OutputShapeError
from ..engine.generation import Chunk, ControlToken
from ..engine.options import SamplingOptions
from ..family.prompt_ids import Message, conversation_call_ids
from ..family.tool_prompt import Tool, fresh_call_ids, read_json_file, refuse_tools, tools_from_dicts
from .gbnf import renamed_rules, shortest_answer
from .shapes import gbnf_literal, schema_shape

if TYPE_CHECKING:
    from ..engine.model import Engine

MAX_PARALLEL_CALLS = 16  # the grammar spells each call's id out, so it holds a fixed number of calls


class ToolChoice(str, Enum):
    AUTO = "auto"  # the model decides: text, or [TOOL_CALLS] and calls
    NONE = "none"  # text only: [TOOL_CALLS] is never sampled
    REQUIRED = "required"  # calls only: the answer starts with [TOOL_CALLS]


@dataclass(frozen=True)
class ToolRequest:
    """The tools a request offers and how they may be called."""

    tools: tuple[Tool, ...]
    choice: ToolChoice = ToolChoice.AUTO
    function: str | None = None  # the one function that must be called (OpenAI's named tool_choice)
    parallel: bool = True  # several calls in one answer

    @property
    def callable_tools(self) -> tuple[Tool, ...]:
        return tuple(t for t in self.tools if self.function is None or t.name == self.function)


def tool_request(tools: object, *, choice: object = None, parallel: object = None) -> ToolRequest | None:
    """A request's ``tools``, ``tool_choice`` and ``parallel_tool_calls`` (parsed JSON), checked; None without tools."""
    if tools is None or tools == []:
        if choice not in (None, "none", "auto"):
            raise InvalidToolsError(
                "tool_choice asks for a call, but the request offers no tools.", param="tool_choice"
            )
        return None
    offered = tools_from_dicts(tools)
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidToolsError("parallel_tool_calls must be true or false.", param="parallel_tool_calls")
    function = None
    if isinstance(choice, dict):
        named = choice.get("function") if choice.get("type", "function") == "function" else None
        function = named.get("name") if isinstance(named, dict) else None
        if not any(tool.name == function for tool in offered):
            raise InvalidToolsError(
                f"tool_choice names the function {json.dumps(function, ensure_ascii=False)}, which no tool offers.",
                param="tool_choice",
            )
        mode = ToolChoice.REQUIRED
    elif choice is None or choice in ("auto", "none", "required"):
        mode = ToolChoice(choice or "auto")
    else:
        raise InvalidToolsError(
            'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
        )
    request = ToolRequest(offered, mode, function, True if parallel is None else parallel)
    tool_grammar(request, ids=["000000000"], trigger=0)  # every schema is checked before any model loads
    return request


def tool_request_from_file(source: str | None, *, choice: str = "auto", parallel: bool = True) -> ToolRequest | None:
    """The CLI's ``--tools FILE``, ``--tool-choice`` (auto, none, required, or a function's name) and
    ``--no-parallel-calls``."""
    if source is None:
        if choice != "auto" or not parallel:
            raise InvalidToolsError("--tool-choice and --no-parallel-calls need --tools FILE.")
        return None
    named = None if choice in {c.value for c in ToolChoice} else {"type": "function", "function": {"name": choice}}
    tools = read_json_file(source, "tools", error=InvalidToolsError)
    return tool_request(tools, choice=named or choice, parallel=parallel)


def calls_json_lines(calls: Sequence[ToolCallAnswer]) -> str:
    """The calls as `mixtral complete` prints them: one OpenAI call object per line, ready for a next round."""
    return "\n".join(json.dumps(call.as_openai(), ensure_ascii=False) for call in calls)


def tool_grammar(request: ToolRequest, *, ids: Sequence[str], trigger: int) -> str:
    """GBNF for ``trigger`` (the [TOOL_CALLS] token) and a JSON list of calls, as the model was trained to
    write them (Python's json.dumps); the i-th call carries ``ids[i]``, its arguments follow its tool's schema.
    """
    rules, alternatives = [], []
    for i, tool in enumerate(request.callable_tools):
        try:
            shape = schema_shape(json.dumps(tool.parameters))
            shortest_answer(shape.grammar)  # a schema no value satisfies is refused here, not mid-answer
        except OutputShapeError as exc:
            raise InvalidToolsError(f'Tool "{tool.name}"\'s parameters: {exc.message}', hint=exc.hint) from exc
        rules.append(renamed_rules(shape.grammar, f"tool{i}-"))
        alternatives.append(f'{gbnf_literal(json.dumps(tool.name))} ", \\"arguments\\": " tool{i}-root')
    rules.append("call-body ::= " + " | ".join(f"( {a} )" for a in alternatives))
    for i, call_id in enumerate(ids):
        rules.append(f'call{i} ::= "{{\\"name\\": " call-body ", \\"id\\": \\"{call_id}\\"}}"')
    nested = ""
    for i in range(len(ids) - 1, 0, -1):
        nested = f'( ", " call{i} {nested} )?'
    rules.append(f'root ::= <[{trigger}]> " [" call0 {nested} "]"')
    return "\n".join(rules) + "\n"


def tool_sampling(
    request: ToolRequest, sampling: SamplingOptions, *, trigger: int, taken_ids: Iterable[str]
) -> tuple[SamplingOptions, tuple[str, ...]]:
    """``sampling`` that offers, forbids or requires calls as asked, and the ids the calls will carry."""
    if request.choice is ToolChoice.NONE:
        return replace(sampling, banned_tokens=(*sampling.banned_tokens, trigger)), ()
    count = MAX_PARALLEL_CALLS if request.parallel else 1
    ids = tuple(fresh_call_ids(count, taken=set(taken_ids), seed=sampling.seed))
    grammar = tool_grammar(request, ids=ids, trigger=trigger)
    lazy = trigger if request.choice is ToolChoice.AUTO else None
    return replace(sampling, grammar=grammar, grammar_trigger=lazy, reported_tokens=(trigger,)), ids


def tool_sampling_for(
    engine: Engine, request: ToolRequest, sampling: SamplingOptions, prompt: str | list[Message]
) -> tuple[SamplingOptions, ToolAnswerReader | None]:
    """The answer job's part: ``sampling`` for ``request`` on ``engine``, and the reader of the calls (none when
    calls are forbidden). The calls' new ids differ from every id the conversation's prompt shows."""
    trigger = engine.special.tool_calls
    if trigger is None:
        raise refuse_tools(reason="this vocabulary has no [TOOL_CALLS] token")
    shown = conversation_call_ids(prompt).values() if isinstance(prompt, list) else ()
    sampling, ids = tool_sampling(request, sampling, trigger=trigger, taken_ids=shown)
    return sampling, None if request.choice is ToolChoice.NONE else ToolAnswerReader(trigger=trigger, ids=ids)


# -- reading the calls ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a call as it streams: first its index, id and name, then fragments of its arguments."""

    index: int
    arguments: str = ""
    id: str | None = None  # set on a call's first delta only, with its name
    name: str | None = None


@dataclass(frozen=True)
class ToolCallAnswer:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it: what the deltas' fragments add up to

    def as_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class ToolCallError(OutputShapeError):
    """What the model wrote after [TOOL_CALLS] is not a list of calls."""


@dataclass
class _Call:
    index: int
    name: str | None = None
    id: str | None = None  # given when the name is known: the call is announced
    arguments: list[str] = field(default_factory=list)


class ToolCallReader:
    """Reads the JSON list of calls after [TOOL_CALLS] a fragment at a time, yielding deltas as soon as they are
    known: a call's index, id and name once its name is complete, then its arguments' text as it comes.

    ``next_id`` gives each call its id in order: the ids the grammar made the model write, or fresh ones. The
    arguments are the text the model wrote for them, without the white space around it.
    """

    def __init__(self, next_id: Callable[[], str]) -> None:
        self._next_id = next_id
        self._text: list[str] = []
        self._depth = 0
        self._in_string = self._escaped = False
        self._token: list[str] = []  # a string at a call's own level: a key, or a value such as the name
        self._read_key: str | None = None  # the key just read, before its ':'
        self._key: str | None = None  # the key whose value is being read
        self._before_arguments = self._in_arguments = False
        self._space = ""  # white space in the arguments, held until more of them follows
        self._call: _Call | None = None
        self.calls: list[ToolCallAnswer] = []

    def feed(self, text: str) -> Iterator[ToolCallDelta]:
        self._text.append(text)
        out: list[str] = []
        for char in text:
            yield from self._step(char, out)
        yield from self._arguments(out)

    def finish(self) -> list[ToolCallAnswer]:
        """The calls, once the text is complete; a text that is not a list of named calls raises."""
        try:
            value = json.loads("".join(self._text), strict=False)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ToolCallError(f"The model's tool calls are not valid JSON ({exc}).") from None
        named = isinstance(value, list) and all(
            isinstance(call, dict) and isinstance(call.get("name"), str) and "arguments" in call for call in value
        )
        if not named or len(value) != len(self.calls):
            raise ToolCallError("The model's tool calls are not a JSON list of {name, arguments} objects.")
        return self.calls

    def _step(self, char: str, out: list[str]) -> Iterator[ToolCallDelta]:
        if self._before_arguments and not char.isspace():
            self._before_arguments, self._in_arguments = False, True
        opening = not self._in_string and char == '"'
        in_string = self._in_string or opening  # the closing quote included
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
        elif opening:
            self._in_string = True
        if self._in_arguments:
            if in_string or self._depth > 2 or char not in ",}":
                self._depth += (char in "[{") - (char in "]}") if not in_string else 0
                if char.isspace() and not in_string:
                    self._space += char
                else:
                    out.append(self._space + char)
                    self._space = ""
                return
            self._in_arguments, self._space = False, ""
            yield from self._arguments(out)
        if in_string:
            if self._depth == 2 and self._call is not None:
                yield from self._string_char(char, opening)
        elif char in "[{":
            self._depth += 1
            if self._depth == 2 and char == "{":
                self._call = _Call(len(self.calls))
        elif char in "]}":
            self._depth -= 1
            if self._depth == 1 and self._call is not None:
                self._end_call(self._call)
        elif self._depth == 2 and char == ":":
            self._key, self._read_key = self._read_key, None
            self._before_arguments = self._key == "arguments"
        elif self._depth == 2 and char == ",":
            self._key = None

    def _string_char(self, char: str, opening: bool) -> Iterator[ToolCallDelta]:
        if opening:
            self._token = []
        elif self._in_string:
            self._token.append(char)
        else:
            text = json.loads('"' + "".join(self._token) + '"', strict=False)
            if self._key is None:
                self._read_key = text
            elif self._key == "name" and self._call is not None and self._call.name is None:
                self._call.name = text
                yield from self._announce(self._call)

    def _announce(self, call: _Call) -> Iterator[ToolCallDelta]:
        call.id = self._next_id()
        yield ToolCallDelta(call.index, id=call.id, name=call.name)
        if call.arguments:  # written before the name
            yield ToolCallDelta(call.index, "".join(call.arguments))

    def _arguments(self, out: list[str]) -> Iterator[ToolCallDelta]:
        if not out or self._call is None:
            return
        text = "".join(out)
        out.clear()
        self._call.arguments.append(text)
        if self._call.id is not None:
            yield ToolCallDelta(self._call.index, text)

    def _end_call(self, call: _Call) -> None:
        if call.name is None or call.id is None:
            raise ToolCallError("The model wrote a tool call without a function name.")
        self.calls.append(ToolCallAnswer(call.id, call.name, "".join(call.arguments)))
        self._call, self._key = None, None


class ToolAnswerReader:
    """A generation's chunks read as an answer that may call tools: text before [TOOL_CALLS] is content, what
    follows it is calls. ``ids`` are the ids the grammar pinned, in order; calls past them get fresh ones."""

    def __init__(self, *, trigger: int, ids: Sequence[str] = ()) -> None:
        self._trigger = trigger
        self._ids = list(ids)
        self._given: list[str] = []
        self.reader: ToolCallReader | None = None

    def read(self, chunks: Iterable[Chunk | None]) -> Iterator[str | ToolCallDelta | None]:
        """``chunks`` as text and call deltas; a wait for the shared batch (None) passes through."""
        for chunk in chunks:
            if chunk is None:
                yield None
            elif isinstance(chunk, ControlToken):
                if chunk.id == self._trigger and self.reader is None:
                    self.reader = ToolCallReader(self._next_id)
            elif self.reader is None:
                yield chunk
            else:
                yield from self.reader.feed(chunk)

    def calls(self, stop_reason: str) -> tuple[ToolCallAnswer, ...]:
        """The calls the answer made (none: it answered in text); calls cut before their end raise."""
        if self.reader is None:
            return ()
        if stop_reason != "eos":
            raise AnswerCutError(
                f"The tool calls were cut ({stop_reason}) before they were complete.",
                hint="Raise max_tokens (or the context size).",
            )
        return tuple(self.reader.finish())

    def _next_id(self) -> str:
        call_id = self._ids.pop(0) if self._ids else fresh_call_ids(1, taken=self._given)[0]
        self._given.append(call_id)
        return call_id
