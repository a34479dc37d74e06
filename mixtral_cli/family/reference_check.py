"""Comparing our prompt ids with Mistral's own mistral-common, when it is installed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..base.errors import MixtralError
from .prompt_ids import Message, PromptFormat


@dataclass(frozen=True)
class CheckResult:
    reference: list[int]
    first_difference: int | None  # None: identical


def check_against_mistral_common(
    messages: Sequence[Message], ids: list[int], prompt_format: PromptFormat
) -> CheckResult:
    try:
        from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    except ImportError:
        raise MixtralError(
            "--check needs mistral-common, which is not installed.", hint="pip install mistral-common"
        ) from None
    classes = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    tokenizer = MistralTokenizer.v1() if prompt_format is PromptFormat.V1 else MistralTokenizer.v3()
    request = ChatCompletionRequest(messages=[classes[m.role](content=m.content) for m in messages])
    reference = tokenizer.encode_chat_completion(request).tokens
    if reference == ids:
        return CheckResult(reference, None)
    pairs = enumerate(zip(ids, reference, strict=False))
    first = next((i for i, (ours, theirs) in pairs if ours != theirs), min(len(ids), len(reference)))
    return CheckResult(reference, first)
