"""The conversation and what acts on it: turns, context policy, undo, retry, settings, autosave.

No terminal here: the REPL reads input and renders; this module decides what is sent to the engine.
"""

from __future__ import annotations

import bisect
import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from ..answer.job import answer_sampling, bounded_by_context
from ..answer.shapes import OutputShape, with_instruction
from ..base.atomic import locked
from ..base.errors import ChatError, ContextOverflowError, OutputPathError
from ..base.paths import exists, mixtral_home
from ..engine.model import Engine, GenerationStats
from ..engine.options import LoraSpec, SamplingOptions
from ..family.prompt_ids import Message
from .transcript import Transcript, Turn, now

# Room kept for the answer when deciding whether a turn fits: at most this share of the context.
_ANSWER_SHARE = 4


class ContextPolicy(str, Enum):
    DROP = "drop"  # drop the oldest exchanges, with a notice
    ERROR = "error"  # refuse the turn


@dataclass
class TurnResult:
    stats: GenerationStats
    newly_left_out: int  # oldest messages this turn left out of what the model sees (the transcript keeps them)
    prompt_ids: list[int]
    answered: bool  # False: nothing came back, and the conversation is as it was before the turn


def chats_dir() -> Path:
    return mixtral_home() / "chats"


@dataclass(frozen=True)
class SavedChat:
    path: Path
    model: str
    created: str
    messages: int
    first_question: str


@dataclass(frozen=True)
class UnreadableChat:
    path: Path
    reason: str  # a sentence, as the transcript reader says it


def list_saved_chats() -> tuple[list[SavedChat], list[UnreadableChat]]:
    """The autosaved chats, newest first, and the files of the chats folder that do not load, with why.

    A file that does not load is shown, never skipped: it may be a chat that a later version of mixtral
    could read, and the user should know it is there.
    """
    from .transcript import TranscriptError

    chats: list[tuple[float, SavedChat]] = []
    unreadable = []
    for path in sorted(chats_dir().glob("*.json")):
        try:
            transcript = Transcript.load(path)
            modified = path.stat().st_mtime
        except (TranscriptError, OSError) as exc:
            reason = exc.message if isinstance(exc, TranscriptError) else f"{path}: {exc.strerror or exc}."
            unreadable.append(UnreadableChat(path, reason))
            continue
        question = next((t.content for t in transcript.turns if t.role == "user"), "")
        chats.append((modified, SavedChat(path, transcript.model, transcript.created, len(transcript.turns), question)))
    chats.sort(key=lambda pair: pair[0], reverse=True)
    return [chat for _, chat in chats], unreadable


@contextlib.contextmanager
def resumed(path: Path) -> Iterator[Transcript]:
    """The chat saved in ``path``, held for a session that continues it and saves to it.

    The lock is taken before the file is read: a second session is refused whatever the timing, so that
    neither saves over turns it never read.
    """
    if not exists(path.expanduser()):
        yield Transcript.load(path)  # which names what is missing; nothing there to hold, no folder to make
        return
    hold = contextlib.ExitStack()
    try:
        hold.enter_context(locked(path.expanduser(), wait=False))
    except BlockingIOError:
        raise ChatError(
            f"{path} is open in another chat session.",
            hint="Leave that session first, or resume a copy of the file.",
        ) from None
    except OutputPathError:
        pass  # where no lock can be made, no autosave can be written either: each save says so
    with hold:
        yield Transcript.load(path)


def _new_autosave_path() -> Path:
    stamp = now()[:19].replace(":", "").replace("-", "")
    return chats_dir() / f"{stamp}-{uuid.uuid4().hex[:6]}.json"


class ChatSession:
    """A conversation with one engine; every change is autosaved to ``autosave_path``.

    The transcript always holds the whole conversation. When it outgrows the context, only what is sent
    to the model leaves out the oldest exchanges (``left_out`` messages), never the transcript.
    """

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
        self.autosave_path = autosave_path or _new_autosave_path()
        self.left_out = 0
        self.last_prompt_ids: list[int] = []
        self.totals = GenerationStats(stop_reason="")

    # -- the conversation -----------------------------------------------------------------------------

    @property
    def sampling(self) -> SamplingOptions:
        return self.transcript.sampling

    @property
    def shape(self) -> OutputShape | None:
        """The shape every answer takes, told to the model with each message."""
        return self.transcript.shape

    def messages(self, turns: list[Turn] | None = None) -> list[Message]:
        turns = self.transcript.turns if turns is None else turns
        system = [Message("system", self.transcript.system)] if self.transcript.system else []
        return [*system, *(turn.message for turn in turns)]

    @property
    def sent_turns(self) -> list[Turn]:
        """The messages the model sees: the conversation without the ``left_out`` oldest."""
        return self.transcript.turns[self.left_out :]

    def context_used(self) -> int:
        """Tokens the conversation so far takes (with an empty next question)."""
        if not self.sent_turns:
            return 0
        return len(self.engine.chat_ids([*self.messages(self.sent_turns), Message("user", "")]))

    def send(self, text: str) -> tuple[Iterator[str], Callable[[], TurnResult]]:
        """Start answering ``text``: the chunks to show, and a function that finishes the turn.

        The user's message joins the conversation at once; the answer joins when the chunks are
        consumed or when iteration stops early (Ctrl-C), marked as interrupted then. A turn that
        fails or brings nothing back leaves the conversation as it was.
        """
        self.transcript.turns.append(Turn("user", with_instruction(text, self.shape)))
        return self._start(replaced=None)

    def retry(self) -> tuple[Iterator[str], Callable[[], TurnResult]]:
        """Answer the last user message again; the last answer stays unless a new one comes back."""
        turns = self.transcript.turns
        if not turns or turns[-1].role != "assistant":
            raise ChatError("There is no answer to retry yet.")
        return self._start(replaced=turns.pop())

    def load(self, path: Path) -> None:
        """Continue the chat saved in ``path`` with this model, autosaving to a new file from now on.

        Neither ``path`` nor the file this session saved to until now is written again.
        """
        transcript = Transcript.load(path)
        transcript.model = self.transcript.model
        self.transcript = transcript
        self.autosave_path = _new_autosave_path()
        self.left_out = 0

    def switch_engine(self, engine: Engine, model: str) -> None:
        """Talk to ``engine`` (loaded by the caller) from now on; the conversation stays."""
        self.engine.close()
        self.engine = engine
        self.transcript.model = model
        self.left_out = 0  # another context size fits another window
        self.autosave()

    def set_loras(self, specs: Sequence[LoraSpec]) -> None:
        """Answer with these LoRA adapters from now on; the conversation stays and is evaluated again."""
        self.engine.set_loras(specs)

    def undo(self) -> None:
        """Remove the last exchange (the last user message and its answer)."""
        turns = self.transcript.turns
        if not turns:
            raise ChatError("There is nothing to undo.")
        if turns[-1].role == "assistant":
            turns.pop()
        if turns and turns[-1].role == "user":
            turns.pop()
        self.left_out = min(self.left_out, len(turns))
        self.autosave()

    def clear(self) -> None:
        self.transcript.turns.clear()
        self.left_out = 0
        self.autosave()

    def set_system(self, text: str | None) -> None:
        self.transcript.system = text or None
        self.autosave()

    def set_sampling(self, **changes: object) -> None:
        self.transcript.sampling = replace(self.transcript.sampling, **changes)
        self.autosave()

    def set_shape(self, shape: OutputShape | None) -> None:
        """Constrain every answer to ``shape`` (None: free answers), checked against the model's vocabulary."""
        sampling = answer_sampling(self.engine.info.path, shape, replace(self.sampling, grammar=None))
        self.transcript.shape = shape
        self.set_sampling(grammar=sampling.grammar)

    def autosave(self) -> None:
        self.transcript.save(self.autosave_path)

    # -- internals -------------------------------------------------------------------------------------

    def _start(self, *, replaced: Turn | None) -> tuple[Iterator[str], Callable[[], TurnResult]]:
        """Fit the conversation (its last message a question) and start the answer; undone on failure."""
        try:
            prompt_ids, left_out = self._fit()
            sampling = bounded_by_context(self.sampling, self.engine.n_ctx)
            generation = self.engine.generate(prompt_ids, sampling, answer=True)
        except BaseException:
            self._restore(replaced)
            raise
        newly_left_out = max(0, left_out - self.left_out)
        self.left_out = left_out
        self.last_prompt_ids = prompt_ids
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
                self._restore(replaced)
            self._add_totals(stats)
            result = TurnResult(stats, newly_left_out, prompt_ids, answered=bool(text.strip()))
            self.autosave()
            return result

        return chunks(), finish

    def _restore(self, replaced: Turn | None) -> None:
        """Undo a turn that brought nothing back: a retry keeps the answer it was to replace; a new
        question goes (an empty answer is no valid message), so that it can be asked again."""
        if replaced is not None:
            self.transcript.turns.append(replaced)
        else:
            self.transcript.turns.pop()

    def _fit(self) -> tuple[list[int], int]:
        """Prompt ids for the conversation, and how many of the oldest messages they leave out."""
        n_ctx = self.engine.n_ctx
        reserve = min(self.sampling.max_tokens, n_ctx // _ANSWER_SHARE)
        turns = self.transcript.turns

        def ids_from(start: int) -> list[int]:
            return self.engine.chat_ids(self.messages(turns[start:]))

        last = ids_from(len(turns) - 1)
        if len(last) >= n_ctx - reserve:
            raise ContextOverflowError(
                prompt_tokens=len(last), n_ctx=n_ctx - reserve, hint="Send a shorter message, or raise --ctx-size."
            )
        whole = ids_from(0)
        if len(whole) + reserve <= n_ctx:
            return whole, 0
        if self.policy is ContextPolicy.ERROR:
            raise ContextOverflowError(
                prompt_tokens=len(whole),
                n_ctx=n_ctx - reserve,
                hint="/undo or /clear some history, or use --context-policy drop.",
            )
        # Whole exchanges go, oldest first: the window starts at a question. Fewer messages never take
        # more tokens, so the first start that fits is found by bisection; the last question fits.
        starts = [i for i, turn in enumerate(turns) if i > 0 and turn.role == "user"]
        first = bisect.bisect_left(starts, True, key=lambda start: len(ids_from(start)) + reserve <= n_ctx)
        return ids_from(starts[first]), starts[first]

    def _add_totals(self, stats: GenerationStats) -> None:
        totals = self.totals
        totals.prompt_tokens += stats.prompt_tokens
        totals.prompt_tokens_evaluated += stats.prompt_tokens_evaluated
        totals.completion_tokens += stats.completion_tokens
        totals.prompt_eval_s += stats.prompt_eval_s
        totals.decode_s += stats.decode_s
