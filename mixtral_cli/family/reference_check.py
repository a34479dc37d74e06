"""Comparing our prompt ids with Mistral's own mistral-common, when it is installed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..base.errors import MixtralError
from .prompt_ids import Message, PromptFormat, conversation_call_ids, message_dict
from .tool_prompt import Tool, ToolCall


@dataclass(frozen=True)
class CheckResult:
    reference: list[int]
    first_difference: int | None  # None: identical


def mistral_common_ids(
    messages: Sequence[Message], prompt_format: PromptFormat, tools: Sequence[Tool] = ()
) -> list[int]:
    """mistral-common's ids for the conversation, its call ids mapped to the ones our prompt shows."""
    try:
        from mistral_common.exceptions import InvalidMessageStructureException
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    except ImportError:
        raise MixtralError(
            "--check needs mistral-common, which is not installed.", hint="pip install mistral-common"
        ) from None
    ids = conversation_call_ids(messages)
    mapped = [
        replace(
            m,
            tool_calls=tuple(ToolCall(c.name, c.arguments, ids.get(c.id, c.id)) for c in m.tool_calls),  # type: ignore[arg-type]
            tool_call_id=ids.get(m.tool_call_id) if m.tool_call_id is not None else None,
        )
        for m in messages
    ]
    spoken = [i for i, m in enumerate(mapped) if m.role != "system"]
    last = mapped[spoken[-1]] if spoken else None
    if last is not None and last.role == "assistant" and not last.content and not last.tool_calls:
        del mapped[spoken.pop()]  # an empty last assistant message asks for an answer, as our prompt reads it
    tokenizer = MistralTokenizer.v1() if prompt_format is PromptFormat.V1 else MistralTokenizer.v3()
    request = ChatCompletionRequest.from_openai(
        messages=[message_dict(m) for m in mapped], tools=[tool.as_json() for tool in tools] or None
    )
    if spoken and mapped[spoken[-1]].role == "assistant":
        # A last assistant message is a prefix the answer continues (mistral-common's `prefix`).
        messages = list(request.messages)
        index = max(i for i, m in enumerate(messages) if m.role == "assistant")
        messages[index] = messages[index].model_copy(update={"prefix": True})
        request = request.model_copy(update={"messages": messages})
    try:
        return tokenizer.encode_chat_completion(request).tokens
    except InvalidMessageStructureException:
        # Its serving validator refuses orders its normalizer takes (a system message after an assistant's),
        # which our prompts take too: then the normalizer, mistral-common's own encode less that check, is it.
        normalized = tokenizer._instruct_request_normalizer.from_chat_completion_request(request)
        return tokenizer.instruct_tokenizer.encode_instruct(normalized).tokens


def check_against_mistral_common(
    messages: Sequence[Message], ids: list[int], prompt_format: PromptFormat, tools: Sequence[Tool] = ()
) -> CheckResult:
    reference = mistral_common_ids(messages, prompt_format, tools)
    if reference == ids:
        return CheckResult(reference, None)
    pairs = enumerate(zip(ids, reference, strict=False))
    first = next((i for i, (ours, theirs) in pairs if ours != theirs), min(len(ids), len(reference)))
    return CheckResult(reference, first)
