"""One prompt answered by a loaded engine: the same steps for `mixtral complete` and `mixtral serve`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..family.prompt_ids import Message, PromptMode
from .shapes import OutputShape, with_instruction

if TYPE_CHECKING:
    from ..engine.model import Engine, Generation
    from ..engine.options import SamplingOptions


def start_answer(
    engine: Engine,
    prompt: str | list[Message],
    sampling: SamplingOptions,
    *,
    mode: PromptMode = PromptMode.AUTO,
    system: str | None = None,
    shown: OutputShape | None = None,
) -> tuple[Generation, bool]:
    """The generation that answers ``prompt`` (told the ``shown`` shape), and whether it has the chat format."""
    ids, chat = engine.completion_ids(with_instruction(prompt, shown), system=system, mode=mode)
    return engine.generate(ids, sampling, answer=chat), chat
