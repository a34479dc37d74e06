"""Summaries of any length: one pass when the text fits, token-aware map-reduce when it does not.

The text is cut into consecutive spans (on paragraph, then sentence, then word boundaries) whose prompts
fit the context with room for the answer; the spans cover the text exactly once, in order. Each span
is summarized; the partial summaries are joined and, if they do not fit one prompt either, cut and
summarized again, level by level, until one final summary remains.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from .engine.layout import Work
from .engine.model import Engine
from .engine.options import SamplingOptions
from .errors import ContextOverflowError, MixtralError
from .prompt import Message


class InputError(MixtralError, ValueError):
    """Input that cannot be summarized: empty, binary, not UTF-8, unreadable."""


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
_SPEAKER_LINE = re.compile(r"^\s*[^\s:][^:\n]{0,39}:\s+\S")
_SENTENCE_END = re.compile(r"(?<=[.!?…。])[\"')\]]*\s+")
_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Document:
    name: str
    text: str


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
    """What the map-reduce did: chunks per level (the first level is the input's own chunks)."""

    levels: list[int] = field(default_factory=list)
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


# -- input ----------------------------------------------------------------------------------------------


def read_document(path: Path) -> Document:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    return decode_document(str(path), data)


def decode_document(name: str, data: bytes) -> Document:
    if b"\x00" in data:
        raise InputError(f"{name} is a binary file, not text.", hint="Summarize text or Markdown files.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name} is not UTF-8 text (byte {exc.start} is invalid).", hint="Convert it, e.g. with iconv -t UTF-8."
        ) from exc
    if not text.strip():
        raise InputError(f"{name} is empty.")
    return Document(name, text)


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
    return words * _TOKENS_PER_WORD + 16


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
    """Consecutive spans of ``text``, each at most ``budget`` tokens, covering it exactly once."""
    pending = split_units(text)
    pending.reverse()  # a stack: the next unit is at the end
    chunks: list[str] = []
    current, current_tokens = "", 0
    while pending:
        unit = pending.pop()
        unit_tokens = count_tokens(unit)
        if unit_tokens > budget:
            pending.extend(reversed(_finer(unit)))
            continue
        if current and current_tokens + unit_tokens > budget:
            chunks.append(current)
            current, current_tokens = "", 0
        current += unit
        current_tokens = count_tokens(current)
        if current_tokens > budget:  # the join made more tokens than the parts: start again from this unit
            chunks.append(current[: -len(unit)])
            current, current_tokens = unit, unit_tokens
    if current:
        chunks.append(current)
    return chunks


# -- running --------------------------------------------------------------------------------------------


class Summarizer:
    """Summarizes with one engine and fixed options."""

    def __init__(
        self,
        engine: Engine,
        options: SummaryOptions,
        sampling: SamplingOptions,
        *,
        on_level: Callable[[int, int], None] | None = None,
        on_chunk: Callable[[], None] | None = None,
    ) -> None:
        """``on_level(level, chunks)`` is called as each level is planned, ``on_chunk()`` as a part is done."""
        self.engine = engine
        self.options = options
        self.sampling = replace(sampling, max_tokens=min(sampling.max_tokens, answer_budget(options)))
        self._on_level = on_level or (lambda level, chunks: None)
        self._on_chunk = on_chunk or (lambda: None)

    def text_budget(self, *, dialogue: bool, partials: bool) -> int:
        """Tokens of text one prompt can carry: the context less the instruction and the answer."""
        overhead = len(self._prompt_ids("", dialogue=dialogue, partials=partials))
        return self.engine.n_ctx - overhead - self.sampling.max_tokens - 8

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenize(text))

    def summarize(self, text: str, *, chunking: bool = True) -> tuple[Iterator[str], SummaryPlan]:
        """Run every level but the last now; return the final summary's chunks (to stream) and the plan.

        The plan's counts and timings are complete once the chunks are consumed.
        """
        started = time.perf_counter()
        plan = SummaryPlan()
        dialogue = is_dialogue(text)
        partials = False
        while True:
            budget = self.text_budget(dialogue=dialogue, partials=partials)
            if not chunking and self.count_tokens(text) > budget:
                raise ContextOverflowError(
                    prompt_tokens=self.count_tokens(text),
                    n_ctx=budget,
                    hint="Drop --no-chunk to summarize it in parts, or raise --ctx-size.",
                )
            chunks = plan_chunks(text, budget, self.count_tokens) if chunking else [text]
            plan.levels.append(len(chunks))
            if plan.depth == 1:  # the whole job: every part's prompt and answer, and the final summary
                self.engine.prepare(Work(self.count_tokens(text), (len(chunks) + 1) * self.sampling.max_tokens))
            self._on_level(len(plan.levels), len(chunks))
            if len(chunks) == 1:
                return self._final(chunks[0], dialogue=dialogue, partials=partials, plan=plan, started=started), plan
            summaries = []
            for chunk in chunks:
                summaries.append("".join(self._generate(chunk, dialogue=dialogue, partials=partials, plan=plan)))
                self._on_chunk()
            text = "\n\n".join(s.strip() for s in summaries if s.strip()) or " "
            partials = True

    def _final(self, text: str, *, dialogue: bool, partials: bool, plan: SummaryPlan, started: float) -> Iterator[str]:
        yield from self._generate(text, dialogue=dialogue, partials=partials, plan=plan)
        plan.wall_s = time.perf_counter() - started

    def _prompt_ids(self, text: str, *, dialogue: bool, partials: bool) -> list[int]:
        request = instruction(self.options, dialogue=dialogue, partials=partials)
        return self.engine.chat_ids([Message("user", f"{request}\n\n{text}")])

    def _generate(self, text: str, *, dialogue: bool, partials: bool, plan: SummaryPlan) -> Iterator[str]:
        generation = self.engine.generate(
            self._prompt_ids(text, dialogue=dialogue, partials=partials), self.sampling, answer=True
        )
        yield from generation
        stats = generation.stats
        plan.tokens_in += stats.prompt_tokens
        plan.tokens_out += stats.completion_tokens
        plan.prompt_eval_s += stats.prompt_eval_s
        plan.decode_s += stats.decode_s


def inputs_to_summarize(documents: Sequence[Document], *, each: bool) -> list[tuple[str | None, str]]:
    """(name, text) per summary to write: one of all documents, or (``each``) one per document."""
    if each:
        return [(d.name, d.text) for d in documents]
    if len(documents) == 1:
        return [(None, documents[0].text)]
    return [(None, "\n\n".join(d.text.strip("\n") for d in documents))]
