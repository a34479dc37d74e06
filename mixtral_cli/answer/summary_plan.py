"""A summary's plan, which is pure: its options and prompts, the chunks a text is cut into, the token
budgets of each prompt and answer, and the bound on model calls fixed before the first one (summarize.py
runs it)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from ..base.bounds import INT32_MAX, Bound


class Style(str, Enum):
    PARAGRAPH = "paragraph"
    BULLETS = "bullets"
    TLDR = "tldr"


class Length(str, Enum):
    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"


WORDS = {Length.SHORT: 60, Length.MEDIUM: 150, Length.LONG: 300}
_TOKENS_PER_WORD = 2  # generous for the five languages Mixtral speaks; the answer budget must not clip
_ANSWER_MARGIN = 16
# --max-words: a summary's token budget must fit in a context, whose positions llama.cpp counts in 32 bits.
MAX_WORDS_BOUND = Bound(
    5, (INT32_MAX - _ANSWER_MARGIN) // _TOKENS_PER_WORD, "the most words a context of 2^31 tokens could answer with"
)
_SPEAKER_LINE = re.compile(r"^\s*[^\s:][^:\n]{0,39}:\s+\S")
_SENTENCE_END = re.compile(r"(?<=[.!?…。])[\"')\]]*\s+")
_BLANK_LINES = re.compile(r"\n\s*\n")
_SLACK = 8  # tokens of a prompt left unplanned
_PART_SHARE = 5  # a partial summary takes at most 1/_PART_SHARE of the room for text and answer
_MIN_PART_ANSWER = 16  # a partial summary shorter than this would say nothing (its separator included)


@dataclass(frozen=True)
class SummaryOptions:
    style: Style = Style.PARAGRAPH
    length: Length = Length.MEDIUM
    max_words: int | None = None
    focus: str | None = None
    language: str | None = None  # None: the language of the input

    @property
    def words(self) -> int:
        return self.max_words or WORDS[self.length]


@dataclass
class SummaryPlan:
    """What the map-reduce did: model calls per level (the first level is the input's own parts, the last
    the final summary), and ``bound``, the most calls per level, fixed before the first call."""

    levels: list[int] = field(default_factory=list)
    bound: list[int] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    prompt_eval_s: float = 0.0
    decode_s: float = 0.0
    wall_s: float = 0.0

    @property
    def model_calls(self) -> int:
        return sum(self.levels)

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def max_model_calls(self) -> int:
        return sum(self.bound)


# -- input ----------------------------------------------------------------------------------------------


def is_dialogue(text: str) -> bool:
    """A transcript of speakers ("Anna: ...") rather than prose: most lines start with a short name."""
    lines = [line for line in text.splitlines() if line.strip()]
    speakers = {line.split(":", 1)[0].strip() for line in lines if _SPEAKER_LINE.match(line)}
    matching = sum(1 for line in lines if _SPEAKER_LINE.match(line))
    return len(lines) >= 2 and len(speakers) >= 2 and matching >= 0.6 * len(lines)


# -- prompts --------------------------------------------------------------------------------------------


def instruction(options: SummaryOptions, *, dialogue: bool, partials: bool) -> str:
    """The request that precedes the text; the same for every chunk, so its tokens stay in the cache."""
    subject = "conversation" if dialogue else "text"
    if partials:
        task = f"Below are summaries of consecutive parts of one {subject}. Combine them into one summary"
    else:
        task = f"Summarize the following {subject}"
    shape = {
        Style.PARAGRAPH: f" in at most {options.words} words, as prose.",
        Style.BULLETS: f" as a bulleted list of key points, at most {options.words} words in all.",
        Style.TLDR: " in one sentence (a TL;DR).",
    }[options.style]
    parts = [task + shape]
    if dialogue and not partials:
        parts.append("Say who said or decided what.")
    if options.focus:
        parts.append(f"Focus on: {options.focus}.")
    parts.append(
        f"Write the summary in {options.language}." if options.language else "Write it in the language of the text."
    )
    parts.append("Reply with the summary only.")
    return " ".join(parts)


def answer_budget(options: SummaryOptions) -> int:
    words = 40 if options.style is Style.TLDR else options.words
    return words * _TOKENS_PER_WORD + _ANSWER_MARGIN


# -- chunking -------------------------------------------------------------------------------------------


def split_units(text: str) -> list[str]:
    """Paragraphs with the blank lines after them; concatenated, they give the text back exactly."""
    units, start = [], 0
    for match in _BLANK_LINES.finditer(text):
        units.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        units.append(text[start:])
    return units


def _finer(unit: str) -> list[str]:
    """A unit cut smaller: into sentences, else words, else halves; exact, like split_units."""
    for pattern in (_SENTENCE_END, re.compile(r"(?<=\s)(?=\S)")):
        cuts = [m.end() for m in pattern.finditer(unit) if 0 < m.end() < len(unit)]
        if cuts:
            bounds = [0, *cuts, len(unit)]
            return [unit[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    middle = len(unit) // 2
    return [unit[:middle], unit[middle:]]


def plan_chunks(text: str, budget: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Consecutive spans of ``text``, each at most ``budget`` tokens, covering it exactly once.

    Units are added by their own token counts and each span is counted once, when it is closed, so the
    work grows with the text, not with the text times the span.
    """
    pending = split_units(text)
    pending.reverse()  # a stack: the next unit is at the end
    chunks: list[str] = []
    units: list[str] = []
    estimate = 0

    def close() -> None:
        # A join can tokenize into more than its parts: give units back until the span really fits.
        while len(units) > 1 and count_tokens("".join(units)) > budget:
            pending.append(units.pop())
        chunks.append("".join(units))
        units.clear()

    while pending:
        unit = pending.pop()
        unit_tokens = count_tokens(unit)
        if unit_tokens > budget:
            pending.extend(reversed(_finer(unit)))
        elif units and estimate + unit_tokens > budget:
            pending.append(unit)
            close()
            estimate = 0
        else:
            units.append(unit)
            estimate += unit_tokens
    if units:
        close()
    return chunks


def pack(items: Sequence[str], capacity: int, cost: Callable[[str], int]) -> list[list[str]]:
    """Consecutive groups of ``items`` whose costs add up to at most ``capacity`` each (greedy, in order).

    With every item costing at most ``capacity // k``, each group but the last holds at least k items.
    """
    groups: list[list[str]] = []
    total = capacity + 1
    for item in items:
        item_cost = cost(item)
        if total + item_cost > capacity:
            groups.append([])
            total = 0
        groups[-1].append(item)
        total += item_cost
    return groups


# -- budgets --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryBudget:
    """How many tokens each prompt carries and each answer takes; fixed before the first model call.

    A partial summary may take at most a fifth of the room for text and answer, so a prompt of partial
    summaries combines at least four of them into one: every level has at most a quarter of the parts
    of the one before, and the number of levels and calls is known from the first level's part count.
    """

    n_ctx: int
    overhead: int  # the instruction and the prompt format (the larger of the two requests)
    answer: int  # the final summary
    part_answer: int  # each partial summary

    @property
    def room(self) -> int:
        """Tokens of one prompt's text and its answer together."""
        return self.n_ctx - self.overhead - _SLACK

    @property
    def one_pass(self) -> int:
        """Tokens of text the final prompt carries beside its answer."""
        return self.room - self.answer

    @property
    def part(self) -> int:
        """Tokens of text a partial prompt carries beside its answer."""
        return self.room - self.part_answer

    @property
    def holds_parts(self) -> bool:
        """Whether parts fit: a partial prompt combines four answers, the final one two, none clipped small."""
        return self.part_answer >= _MIN_PART_ANSWER

    @property
    def smallest_context(self) -> int:
        """The context in which these answers leave room for parts."""
        return self.overhead + _SLACK + max(self.answer + 2 * _MIN_PART_ANSWER, _PART_SHARE * _MIN_PART_ANSWER)

    def levels_bound(self, n_parts: int) -> list[int]:
        """The most model calls per level when the text is cut into ``n_parts`` parts; the last is the final."""
        fan_in, final_fan_in = self.part // self.part_answer, self.one_pass // self.part_answer
        levels = [n_parts]
        while levels[-1] > final_fan_in:
            levels.append(-(-levels[-1] // fan_in))
        return [*levels, 1]


def summary_budget(*, n_ctx: int, overhead: int, answer: int) -> SummaryBudget:
    room = n_ctx - overhead - _SLACK
    # Partial summaries are the tool's own: as long as the final one, but never too short to say anything.
    part_answer = min(max(answer, _MIN_PART_ANSWER), room // _PART_SHARE, (room - answer) // 2)
    return SummaryBudget(n_ctx=n_ctx, overhead=overhead, answer=answer, part_answer=part_answer)
