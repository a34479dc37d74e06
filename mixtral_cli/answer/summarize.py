"""Summaries of any length: one pass when the text fits, token-aware map-reduce when it does not.

The text is cut into consecutive spans (on paragraph, then sentence, then word boundaries) whose prompts
fit the context with room for the answer; the spans cover the text exactly once, in order. Each span
is summarized into a partial summary of a small, fixed budget; the partial summaries are grouped and
combined, level by level, until they fit the final prompt. The budgets make every level at most a
quarter of the one before, so the levels and model calls are bounded before the first call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..base.errors import ContextOverflowError, InputError, SummaryContextError
from ..base.textinput import decode_text, read_file_bytes
from ..engine.layout import Work
from ..engine.model import Engine
from ..engine.options import SamplingOptions
from ..family.prompt_ids import Message
from .summary_plan import (
    SummaryBudget,
    SummaryOptions,
    SummaryPlan,
    answer_budget,
    instruction,
    is_dialogue,
    pack,
    plan_chunks,
    summary_budget,
)

_SEPARATOR = "\n\n"  # between partial summaries in the prompt that combines them


@dataclass(frozen=True)
class Document:
    name: str
    text: str


# -- input ----------------------------------------------------------------------------------------------


def read_document(path: Path) -> Document:
    return decode_document(str(path), read_file_bytes(path))


def decode_document(name: str, data: bytes) -> Document:
    if b"\x00" in data:
        raise InputError(f"{name} is a binary file, not text.", hint="Summarize text or Markdown files.")
    text = decode_text(name, data)
    if not text.strip():
        raise InputError(f"{name} is empty.")
    return Document(name, text)


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
        on_plan: Callable[[SummaryPlan, float | None], None] | None = None,
    ) -> None:
        """``on_level(level, chunks)`` is called as each level is planned, ``on_chunk()`` as a part is done.
        ``on_plan(plan, seconds)`` is called before the first model call of a summary in parts, with the
        bound set and the seconds it should take on this machine (None: not measured); raising stops it."""
        self.engine = engine
        self.options = options
        self.sampling = replace(sampling, max_tokens=min(sampling.max_tokens, answer_budget(options)))
        self._on_level = on_level or (lambda level, chunks: None)
        self._on_chunk = on_chunk or (lambda: None)
        self._on_plan = on_plan or (lambda plan, seconds: None)

    def budget(self, *, dialogue: bool) -> SummaryBudget:
        overhead = max(len(self._prompt_ids("", dialogue=dialogue, partials=p)) for p in (False, True))
        return summary_budget(n_ctx=self.engine.n_ctx, overhead=overhead, answer=self.sampling.max_tokens)

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenize(text))

    def cost(self, text: str) -> int:
        """Tokens ``text`` adds to a prompt where it follows a blank line, as a part or partial summary does."""
        return self.count_tokens(_SEPARATOR + text)

    def summarize(self, text: str, *, chunking: bool = True) -> tuple[Iterator[str], SummaryPlan]:
        """Run every level but the last now; return the final summary's chunks (to stream) and the plan.

        The plan's bound is set before the first model call; its counts and timings are complete once the
        chunks are consumed.
        """
        started = time.perf_counter()
        plan = SummaryPlan()
        dialogue = is_dialogue(text)
        budget = self.budget(dialogue=dialogue)
        tokens = self.count_tokens(text)
        if tokens <= budget.one_pass:
            plan.bound = [1]
            self.engine.prepare(Work(tokens, self.sampling.max_tokens))
            self._start_level(plan, 1)
            return self._final(text, dialogue=dialogue, partials=False, plan=plan, started=started), plan
        if not chunking:
            raise ContextOverflowError(
                prompt_tokens=tokens,
                n_ctx=max(budget.one_pass, 0),
                hint="Drop --no-chunk to summarize it in parts, or raise --ctx-size.",
            )
        if not budget.holds_parts:
            raise SummaryContextError(
                n_ctx=budget.n_ctx,
                overhead=budget.overhead,
                answer=budget.answer,
                needed=budget.smallest_context,
            )
        parts = plan_chunks(text, budget.part, self.count_tokens)
        plan.bound = budget.levels_bound(len(parts))
        # The whole job for the weight layout: every part read once, and the answers the bound allows.
        answers = (sum(plan.bound) - 1) * budget.part_answer + self.sampling.max_tokens
        self.engine.prepare(Work(tokens, answers))
        # Each level reads what the level before wrote: the answers are read once more as prompts.
        self._on_plan(plan, self.engine.expected_seconds(Work(tokens + answers, answers)))
        summaries = self.partial_summaries(parts, budget, dialogue=dialogue, partials=False, plan=plan)
        while sum(map(self.cost, summaries)) > budget.one_pass:
            groups = pack(summaries, budget.part, self.cost)
            summaries = self.partial_summaries(
                [_SEPARATOR.join(g) for g in groups], budget, dialogue=dialogue, partials=True, plan=plan
            )
        self._start_level(plan, 1)
        final = self._final(_SEPARATOR.join(summaries), dialogue=dialogue, partials=True, plan=plan, started=started)
        return final, plan

    def partial_summaries(
        self, parts: list[str], budget: SummaryBudget, *, dialogue: bool, partials: bool, plan: SummaryPlan
    ) -> list[str]:
        """A partial summary of each part, none costing more than ``budget.part_answer``.

        The answer is cut to its budget where the model's tokens count for more as text, and a part
        shorter than its summary stands for itself: no level is longer than the one before.
        """
        self._start_level(plan, len(parts))
        sampling = replace(self.sampling, max_tokens=budget.part_answer)
        summaries = []
        for part in parts:
            answer = "".join(self._generate(part, dialogue=dialogue, partials=partials, plan=plan, sampling=sampling))
            answer = self._clip(answer.strip() or " ", budget.part_answer)
            summaries.append(min(answer, part.strip() or " ", key=self.cost))
            self._on_chunk()
        return summaries

    def _clip(self, text: str, limit: int) -> str:
        """The longest start of ``text`` that costs at most ``limit`` tokens."""
        if self.cost(text) <= limit:
            return text
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if self.cost(text[:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        return text[:low]

    def _start_level(self, plan: SummaryPlan, calls: int) -> None:
        plan.levels.append(calls)
        self._on_level(len(plan.levels), calls)

    def _final(self, text: str, *, dialogue: bool, partials: bool, plan: SummaryPlan, started: float) -> Iterator[str]:
        yield from self._generate(text, dialogue=dialogue, partials=partials, plan=plan, sampling=self.sampling)
        plan.wall_s = time.perf_counter() - started

    def _prompt_ids(self, text: str, *, dialogue: bool, partials: bool) -> list[int]:
        request = instruction(self.options, dialogue=dialogue, partials=partials)
        return self.engine.chat_ids([Message("user", f"{request}\n\n{text}")])

    def _generate(
        self, text: str, *, dialogue: bool, partials: bool, plan: SummaryPlan, sampling: SamplingOptions
    ) -> Iterator[str]:
        generation = self.engine.generate(
            self._prompt_ids(text, dialogue=dialogue, partials=partials), sampling, answer=True
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
