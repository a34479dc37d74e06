"""The shortest text a GBNF grammar accepts, and the grammars llama.cpp's grammar engine cannot run.

llama.cpp's parser accepts grammars that can match no text, or only the empty one; its sampler then
aborts the process mid-answer, when no token can continue. Reading the grammar here finds those before
a model loads, and the shortest answer tells whether --max-tokens can hold one.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

from ..base.errors import OutputShapeError

MAX_NESTING = 1000  # groups in groups; a schema's repetitions nest as deep as MAX_SCHEMA_REPETITIONS

_LLAMA_MAX_REPETITIONS = 2000  # MAX_REPETITION_THRESHOLD of llama.cpp's grammar parser

_GBNF_TOKEN = re.compile(
    r"""\s*(?:(?P<define>::=)|(?P<name>[a-zA-Z0-9_-]+)|(?P<literal>"(?:\\.|[^"\\])*")|(?P<cls>\[(?:\\.|[^\]\\])*\])"""
    r"""|(?P<repeat>\{\s*\d+\s*(?:,\s*\d*\s*)?\})|(?P<op>[()|?*+.])|(?P<comment>\#[^\n]*))"""
)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_CLASS_ITEM = re.compile(r"\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|\\.|[^\\]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_SHORTEST = 2**20  # characters: a shortest answer longer than this fits no context anyway


_LITERAL_OR_CLASS = re.compile(
    r"""(?P<literal>"(?:\\.|[^"\\])*")|(?P<comment>\#[^\n]*)|\[(?P<negated>\^?)(?P<items>(?:\\.|[^\]\\])*)\]"""
)


def exclude_from_negated_classes(grammar: str, excluded: str) -> str:
    """``grammar`` with the class items ``excluded`` (e.g. ``\\x00-\\x1F``) added to every ``[^...]`` class."""

    def widen(match: re.Match[str]) -> str:
        if not match["negated"]:
            return match[0]
        return f"[^{match['items']}{excluded}]"

    return _LITERAL_OR_CLASS.sub(widen, grammar)


def shortest_answer(grammar: str) -> str | None:
    """The shortest text ``grammar`` accepts (None if it uses syntax this reading does not cover).

    A grammar that accepts no text, or only the empty one, is refused: llama.cpp's grammar engine aborts the
    process when no token can continue an answer, so that is found here, before a model loads.
    """
    try:
        with _stack_for(MAX_NESTING):
            return _shortest_answer(grammar)
    except OutputShapeError:
        raise
    except (ValueError, RecursionError):  # syntax this reading does not cover; llama.cpp's parser judges it
        return None


def renamed_rules(grammar: str, prefix: str) -> str:
    """``grammar`` with ``prefix`` before every rule name, defined or referenced: grammars join without clashes."""
    parts, position, end = [], 0, len(grammar.rstrip())
    while position < end:
        match = _GBNF_TOKEN.match(grammar, position)
        if not match or match.end() == position:
            raise ValueError(grammar[position:])
        name = match.start("name")
        parts.append(match[0] if name < 0 else grammar[position:name] + prefix + match["name"])
        position = match.end()
    return "".join(parts) + grammar[end:]


def _shortest_answer(grammar: str) -> str | None:
    rules = _parse_gbnf(grammar)
    shortest = _fixed_point(rules, _shortest, better=lambda new, old: old is None or len(new) < len(old))
    undefined = {name for body in rules.values() for name in _references(body)} - rules.keys()
    if "root" not in rules or undefined:
        return None  # llama.cpp's parser names what is missing
    if "root" not in shortest:
        raise OutputShapeError(
            "The grammar matches no text at all: root needs a character or rule that nothing can produce.",
            hint="Give every rule an alternative that ends, and every character class a character it allows.",
        )
    facts = _Facts(shortest)
    nonempty = _fixed_point(
        rules, lambda body, known: facts.can_be_nonempty(body, known) or None, better=lambda new, old: old is None
    )
    if "root" not in nonempty:
        raise OutputShapeError("The grammar matches only the empty text, so there is nothing to answer.")
    reachable = _reachable(rules)
    if any(facts.has_dead_end(rules[name], nonempty) for name in reachable):
        raise OutputShapeError(
            "The grammar has a dead end: an answer can start down an alternative that nothing can finish.",
            hint="Give every rule an alternative that ends, and every character class a character it allows.",
        )
    return shortest["root"]


def _reachable(rules: dict[str, tuple]) -> set[str]:
    seen, pending = set(), ["root"]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(_references(rules[name]))
    return seen


class _Facts:
    """What the rules' shortest texts say about each node, remembered per node: a grammar nested a thousand
    deep is then read in time proportional to its size, not to a power of its depth."""

    def __init__(self, shortest: dict[str, str]) -> None:
        self._shortest = shortest
        self._productive: dict[int, bool] = {}
        self._nonempty: set[int] = set()  # only ever grows as the rules known to be nonempty do

    def productive(self, node: tuple) -> bool:
        """Whether ``node`` can match some finite text."""
        if id(node) not in self._productive:
            self._productive[id(node)] = _shortest(node, self._shortest) is not None
        return self._productive[id(node)]

    def can_be_nonempty(self, node: tuple, known: dict[str, bool]) -> bool:
        """Whether ``node`` can match a text that is not empty, given the rules ``known`` to."""
        if id(node) in self._nonempty:
            return True
        kind = node[0]
        if kind == "text":
            result = bool(node[1])
        elif kind == "rule":
            result = node[1] in known
        elif kind == "repeat":
            result = node[3] != 0 and self.can_be_nonempty(node[1], known)
        elif kind == "alt":
            result = any(self.can_be_nonempty(child, known) for child in node[1])
        elif kind == "seq":
            productive = all(self.productive(child) for child in node[1])
            result = productive and any(self.can_be_nonempty(child, known) for child in node[1])
        else:
            result = False
        if result:
            self._nonempty.add(id(node))
        return result

    def has_dead_end(self, node: tuple, nonempty: dict[str, bool]) -> bool:
        """Whether a sequence in ``node`` can consume text and then reach an item nothing can finish."""
        kind = node[0]
        if kind == "repeat":
            return self.has_dead_end(node[1], nonempty)
        if kind == "alt":
            return any(self.has_dead_end(child, nonempty) for child in node[1])
        if kind != "seq":
            return False
        entered = False
        for child in node[1]:
            if not self.productive(child):
                return entered
            if self.has_dead_end(child, nonempty):
                return True
            entered = entered or self.can_be_nonempty(child, nonempty)
        return False


@contextlib.contextmanager
def _stack_for(nesting: int) -> Iterator[None]:
    """Room for the few frames per level of nesting that reading and measuring a grammar take."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, 8 * nesting + 1000))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def _fixed_point(rules: dict[str, tuple], value, *, better) -> dict:  # noqa: ANN001 - (body, known) -> value | None
    """Each rule's value, improved pass by pass until no rule's changes."""
    known: dict = {}
    changed = True
    while changed:
        changed = False
        for name, body in rules.items():
            new = value(body, known)
            if new is not None and better(new, known.get(name)):
                known[name] = new
                changed = True
    return known


def _references(node: tuple) -> set[str]:
    if node[0] == "rule":
        return {node[1]}
    if node[0] == "repeat":
        return _references(node[1])
    if node[0] in ("seq", "alt"):
        return set().union(*(_references(child) for child in node[1]))
    return set()


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match[1]
        if len(code) == 1:
            return _ESCAPES.get(code, code)
        point = int(code[1:], 16)
        # Past U+10FFFF is no character; it is marked as a surrogate, which no UTF-8 text holds either.
        return chr(point) if point <= 0x10FFFF else "\udfff"

    return _ESCAPE.sub(one, text)


def _parse_gbnf(grammar: str) -> dict[str, tuple]:
    tokens = []
    position = 0
    while position < len(grammar.rstrip()):
        match = _GBNF_TOKEN.match(grammar, position)
        if not match or match.end() == position:
            raise ValueError(grammar[position:])
        position = match.end()
        if match.lastgroup != "comment":
            tokens.append((match.lastgroup, match[match.lastgroup]))
    _check_nesting(tokens)
    rules: dict[str, tuple] = {}
    index = 0
    while index < len(tokens):
        if tokens[index][0] != "name" or index + 1 >= len(tokens) or tokens[index + 1][0] != "define":
            raise ValueError(tokens[index])
        end = next(
            (i for i in range(index + 2, len(tokens) - 1) if tokens[i][0] == "name" and tokens[i + 1][0] == "define"),
            len(tokens),
        )
        body, rest = _alternatives(tokens[index + 2 : end], 0)
        if rest != end - index - 2:
            raise ValueError(tokens[index])
        rules[tokens[index][1]] = body
        index = end
    return rules


def _check_nesting(tokens: list[tuple[str, str]]) -> None:
    """Refuse groups nested deeper than MAX_NESTING: llama.cpp's parser recurses once per level, in C++."""
    depth = deepest = 0
    for token in tokens:
        depth += {("op", "("): 1, ("op", ")"): -1}.get(token, 0)
        deepest = max(deepest, depth)
    if deepest > MAX_NESTING:
        raise OutputShapeError(
            f"The grammar nests groups {deepest} deep; up to {MAX_NESTING} can be read.",
            hint="Flatten it into named rules.",
        )


def _alternatives(tokens: list, index: int) -> tuple[tuple, int]:
    options = []
    while True:
        sequence, index = _sequence(tokens, index)
        options.append(sequence)
        if index < len(tokens) and tokens[index] == ("op", "|"):
            index += 1
            continue
        return ("alt", options), index


def _sequence(tokens: list, index: int) -> tuple[tuple, int]:
    items = []
    while index < len(tokens) and tokens[index] not in (("op", "|"), ("op", ")")):
        kind, value = tokens[index]
        index += 1
        if kind == "op" and value == "(":
            item, index = _alternatives(tokens, index)
            if index >= len(tokens) or tokens[index] != ("op", ")"):
                raise ValueError("unclosed group")
            index += 1
        elif kind == "literal":
            text = _unescape(value[1:-1])
            item = ("text", text) if not _SURROGATE.search(text) else ("never",)
        elif kind == "cls":
            member = _class_member(value)
            item = ("text", member) if member is not None else ("never",)
        elif kind == "op" and value == ".":
            item = ("text", "a")
        elif kind == "name":
            item = ("rule", value)
        else:
            raise ValueError(value)
        while index < len(tokens) and (tokens[index][0] == "repeat" or tokens[index][1] in ("?", "*", "+")):
            item = ("repeat", item, *_repetitions(tokens[index][1]))
            index += 1
        items.append(item)
    return ("seq", items), index


def _repetitions(marker: str) -> tuple[int, int | None]:
    """The least and most times (None: no bound) of ?, *, + or {m}, {m,}, {m,n}."""
    if marker in ("?", "*", "+"):
        return (1 if marker == "+" else 0), (1 if marker == "?" else None)
    least, comma, most = marker.strip("{} ").partition(",")
    least_count = int(least)
    if least_count > _LLAMA_MAX_REPETITIONS:
        raise ValueError(marker)  # llama.cpp's parser refuses it, naming its own limit
    return least_count, (int(most) if most.strip() else None) if comma else least_count


def _class_member(text: str) -> str | None:
    """One character the class [...] matches (a plain one where it can), or None if it matches none."""
    body = text[1:-1]
    negated = body.startswith("^")
    items = _CLASS_ITEM.findall(body[1:] if negated else body)
    ranges, index = [], 0
    while index < len(items):
        low = ord(_unescape(items[index]))
        if index + 2 < len(items) and items[index + 1] == "-":
            ranges.append((low, ord(_unescape(items[index + 2]))))
            index += 3
        else:
            ranges.append((low, low))
            index += 1
    if negated:
        candidates = [*map(ord, "a0 A_"), *(high + 1 for _, high in ranges), 0xE000, 0]
    else:
        candidates = [c for low, high in ranges for c in (low, 0xE000) if low <= c <= high]
    # A surrogate is no character UTF-8 text can hold, so no token produces one.
    allowed = [c for c in candidates if c <= 0x10FFFF and not 0xD800 <= c <= 0xDFFF]
    matched = [c for c in allowed if any(low <= c <= high for low, high in ranges) != negated]
    return chr(matched[0]) if matched else None


def _shortest(node: tuple, known: dict[str, str]) -> str | None:
    kind = node[0]
    if kind == "text":
        return node[1]
    if kind == "rule":
        return known.get(node[1])
    if kind == "never":
        return None
    if kind == "repeat":
        part = _shortest(node[1], known) if node[2] else ""
        if part is not None and len(part) * node[2] > _MAX_SHORTEST:
            raise ValueError("too long a shortest answer to spell out")
        return None if part is None else part * node[2]
    parts = [_shortest(child, known) for child in node[1]]
    if kind == "seq":
        return None if None in parts else "".join(parts)  # type: ignore[arg-type]
    candidates = [p for p in parts if p is not None]
    return min(candidates, key=len) if candidates else None
