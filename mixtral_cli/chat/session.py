"""The conversation and what acts on it: turns, context policy, undo, retry, settings, autosave.

No terminal here: the REPL reads input and renders; this module decides what is sent to the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from ..engine.model import Engine, GenerationStats
from ..engine.options import SamplingOptions
from ..errors import ContextOverflowError, MixtralError
from ..paths import mixtral_home
from ..prompt import Message
from ..structured import OutputShape, constrained_sampling, with_instruction
from .transcript import Transcript, Turn

# Room kept for the answer when deciding whether a turn fits: at most this share of the context.
_ANSWER_SHARE = 4


class ContextPolicy(str, Enum):
    DROP = "drop"  # drop the oldest exchanges, with a notice
    ERROR = "error"  # refuse the turn


class ChatError(MixtralError):
    """A chat command that cannot be carried out (nothing to undo, ...)."""


@dataclass
class TurnResult:
    stats: GenerationStats
    dropped_turns: int
    prompt_ids: list[int]


def chats_dir() -> Path:
    return mixtral_home() / "chats"


@dataclass(frozen=True)
class SavedChat:
    path: Path
    model: str
    created: str
    messages: int
    first_question: str


def list_saved_chats() -> list[SavedChat]:
    """The autosaved chats, newest first; files that do not load are skipped."""
    from .transcript import TranscriptError

    chats = []
    for path in sorted(chats_dir().glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            transcript = Transcript.load(path)
        except TranscriptError:
            continue
        question = next((t.content for t in transcript.turns if t.role == "user"), "")
        chats.append(SavedChat(path, transcript.model, transcript.created, len(transcript.turns), question))
    return chats


def _new_autosave_path(transcript: Transcript) -> Path:
    stamp = transcript.created[:19].replace(":", "").replace("-", "")
    return chats_dir() / f"{stamp}-{uuid.uuid4().hex[:6]}.json"


class ChatSession:
    """A conversation with one engine; every change is autosaved to ``autosave_path``."""

    def __init__(
        self,
        engine: Engine,
        transcript: Transcript,
        *,
        policy: ContextPolicy = ContextPolicy.DROP,
        autosave_path: Path | None = None,
    ) -> None:
        self.engine = engine
        self.transcript = transcript
        self.policy = policy
        self.autosave_path = autosave_path or _new_autosave_path(transcript)
        self.last_prompt_ids: list[int] = []
        self.totals = GenerationStats(stop_reason="")
        self.shape: OutputShape | None = None  # the shape every answer takes, told to the model with each message

    # -- the conversation -----------------------------------------------------------------------------

    @property
    def sampling(self) -> SamplingOptions:
        return self.transcript.sampling

    def messages(self, turns: list[Turn] | None = None) -> list[Message]:
        turns = self.transcript.turns if turns is None else turns
        system = [Message("system", self.transcript.system)] if self.transcript.system else []
        return [*system, *(turn.message for turn in turns)]

    def context_used(self) -> int:
        """Tokens the conversation so far takes (with an empty next question)."""
        if not self.transcript.turns:
            return 0
        return len(self.engine.chat_ids([*self.messages(), Message("user", "")]))

    def send(self, text: str) -> tuple[Iterator[str], Callable[[], TurnResult]]:
        """Start answering ``text``: the chunks to show, and a function that finishes the turn.

        The user's message joins the conversation at once; the answer joins when the chunks are
        consumed or when iteration stops early (Ctrl-C), marked as interrupted then.
        """
        self.transcript.turns.append(Turn("user", with_instruction(text, self.shape)))
        try:
            prompt_ids, dropped = self._fit()
        except BaseException:
            self.transcript.turns.pop()
            raise
        return self._answer(prompt_ids, dropped)

    def retry(self) -> tuple[Iterator[str], Callable[[], TurnResult]]:
        """Answer the last user message again, replacing the last answer."""
        turns = self.transcript.turns
        if not turns or turns[-1].role != "assistant":
            raise ChatError("There is no answer to retry yet.")
        turns.pop()
        prompt_ids, dropped = self._fit()
        return self._answer(prompt_ids, dropped)

    def undo(self) -> None:
        """Remove the last exchange (the last user message and its answer)."""
        turns = self.transcript.turns
        if not turns:
            raise ChatError("There is nothing to undo.")
        if turns[-1].role == "assistant":
            turns.pop()
        if turns and turns[-1].role == "user":
            turns.pop()
        self.autosave()

    def clear(self) -> None:
        self.transcript.turns.clear()
        self.autosave()

    def set_system(self, text: str | None) -> None:
        self.transcript.system = text or None
        self.autosave()

    def set_sampling(self, **changes: object) -> None:
        self.transcript.sampling = replace(self.transcript.sampling, **changes)
        self.autosave()

    def set_shape(self, shape: OutputShape | None) -> None:
        """Constrain every answer to ``shape`` (None: free answers), checked against the model's vocabulary."""
        grammar = constrained_sampling(self.engine.info.path, shape, self.sampling).grammar if shape else None
        self.shape = shape
        self.set_sampling(grammar=grammar)

    def autosave(self) -> None:
        self.transcript.save(self.autosave_path)

    # -- internals -------------------------------------------------------------------------------------

    def _fit(self) -> tuple[list[int], int]:
        """Prompt ids for the conversation, dropping the oldest exchanges if the policy allows."""
        n_ctx = self.engine.n_ctx
        reserve = min(self.sampling.max_tokens, n_ctx // _ANSWER_SHARE)
        turns = self.transcript.turns
        last = self.engine.chat_ids(self.messages(turns[-1:]))
        if len(last) >= n_ctx - reserve:
            raise ContextOverflowError(
                prompt_tokens=len(last), n_ctx=n_ctx - reserve, hint="Send a shorter message, or raise --ctx-size."
            )
        dropped = 0
        while True:
            ids = self.engine.chat_ids(self.messages(turns[dropped:]))
            if len(ids) + reserve <= n_ctx:
                break
            if self.policy is ContextPolicy.ERROR:
                raise ContextOverflowError(
                    prompt_tokens=len(ids),
                    n_ctx=n_ctx - reserve,
                    hint="/undo or /clear some history, or use --context-policy drop.",
                )
            dropped += _exchange_length(turns, dropped)
        if dropped:
            del turns[:dropped]
        return ids, dropped

    def _answer(self, prompt_ids: list[int], dropped: int) -> tuple[Iterator[str], Callable[[], TurnResult]]:
        self.last_prompt_ids = prompt_ids
        generation = self.engine.generate(prompt_ids, self.sampling, answer=True)
        parts: list[str] = []

        def chunks() -> Iterator[str]:
            for chunk in generation:
                parts.append(chunk)
                yield chunk

        def finish() -> TurnResult:
            stats = generation.stats
            text = "".join(parts)
            if text.strip():
                self.transcript.turns.append(Turn("assistant", text, interrupted=stats.stop_reason == "interrupted"))
            else:
                # An empty answer is no valid message: the question goes too, so it can be asked again.
                self.transcript.turns.pop()
            self._add_totals(stats)
            self.autosave()
            return TurnResult(stats=stats, dropped_turns=dropped, prompt_ids=prompt_ids)

        return chunks(), finish

    def _add_totals(self, stats: GenerationStats) -> None:
        totals = self.totals
        totals.prompt_tokens += stats.prompt_tokens
        totals.prompt_tokens_evaluated += stats.prompt_tokens_evaluated
        totals.completion_tokens += stats.completion_tokens
        totals.prompt_eval_s += stats.prompt_eval_s
        totals.decode_s += stats.decode_s


def _exchange_length(turns: list[Turn], start: int) -> int:
    """How many turns from ``start`` make one exchange; never the last turn, the question being asked."""
    return 2 if start + 1 < len(turns) - 1 and turns[start + 1].role == "assistant" else 1
