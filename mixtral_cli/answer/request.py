"""What is asked of an answer, and how it ended: the values every caller hands the answer job and reads back.

A request comes from `mixtral complete`, from any server route, or from `complete --server`, whose body is
this value as it stands after the CLI parsed its options (serve/work.py writes and reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..base.errors import AnswerCutError
from ..family.prompt_ids import Message, PromptMode

if TYPE_CHECKING:
    from ..base.errors import MixtralError
    from ..engine.model import GenerationStats
    from ..engine.options import SamplingOptions
    from .shapes import OutputShape
    from .tool_calls import ToolCallAnswer, ToolRequest


@dataclass(frozen=True)
class AnswerRequest:
    prompt: str | tuple[Message, ...]  # a text, or a conversation
    sampling: SamplingOptions  # as asked: the shape's grammar and the context's bound are the job's to add
    mode: PromptMode = PromptMode.AUTO
    system: str | None = None
    shape: OutputShape | None = None
    describe_shape: bool = True  # the prompt says which shape is wanted (what --no-schema-prompt turns off)
    tools: ToolRequest | None = None  # functions the model may (or must, or must not) call
    # Answers to the same prompt, one after the other (OpenAI's n); the k-th samples with seed + k where a seed
    # is given. ``echo``: each starts with the prompt's text (and its tokens' log-probabilities when asked).
    n: int = 1
    echo: bool = False

    @property
    def shown(self) -> OutputShape | None:
        """The shape the prompt describes to the model."""
        return self.shape if self.describe_shape else None


@dataclass(frozen=True)
class AnswerEnd:
    """The end of an answer, after its text chunks: what it cost, and what may be printed of it.

    ``answer`` is the text to print (a shaped answer's value, re-serialized), or None where ``error`` says
    why there is none: a shaped answer cut before it was complete (AnswerCutError), or one that is not valid
    JSON. A raw generation (the server's generate route) ends with its statistics alone.
    """

    stats: GenerationStats
    report: dict = field(default_factory=dict)  # the `--json` object without its text
    answer: str | None = None
    error: MixtralError | None = None
    tool_calls: tuple[ToolCallAnswer, ...] = ()  # the calls the answer made, after its text (if any)
    index: int = 0  # which of the request's answers ends here
    first_of_prompt: bool = True  # False for the 2nd to nth answers to one prompt, whose prompt counted once

    @property
    def cut(self) -> bool:
        """A shaped answer that ended before it was complete (docs/answers.md says when that is)."""
        return isinstance(self.error, AnswerCutError)
