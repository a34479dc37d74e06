"""Prompt ids equal mistral-common's, for v1 and v3, on the reference examples and fuzzed conversations."""

from __future__ import annotations

import functools
import random

import pytest
from sentencepiece import SentencePieceProcessor

from mixtral_cli.family.prompt_ids import (
    InvalidConversationError,
    Message,
    PromptFormat,
    SpecialIds,
    chat_prompt_ids,
    messages_from_dicts,
)
from mixtral_cli.sources.tiny_model import tokenizer_model_path

SPECIAL = {PromptFormat.V1: SpecialIds(bos=1, eos=2), PromptFormat.V3: SpecialIds(bos=1, eos=2, inst=3, inst_end=4)}
PIECES = [
    "Hello, how are you?",
    "Fine, and you?",
    "I'm doing great!",
    "",
    " ",
    "  leading and trailing  ",
    "tabs\tand\nnew\n\nlines",
    "</s>",
    "<s>",
    "[INST]",
    "[/INST]",
    "déjà vu à Paris",
    "emoji 🦙🚀👩‍💻",
    "東京 한국어",
    "code: `x = [i ** 2 for i in range(10)]`",
    "runs    of     spaces",
]


def reference_ids(messages: list[Message], prompt_format: PromptFormat) -> list[int]:
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    classes = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    tokenizer = _mistral_tokenizer(prompt_format, MistralTokenizer)
    messages = list(messages)
    spoken = [i for i, m in enumerate(messages) if m.role != "system"]
    while spoken and messages[spoken[-1]].role == "assistant" and not messages[spoken[-1]].content:
        # An empty last assistant message asks for an answer: it is no prefix (which mistral-common refuses).
        del messages[spoken.pop()]
    reference = [classes[m.role](content=m.content) for m in messages]
    if spoken and messages[spoken[-1]].role == "assistant":
        # A conversation whose last turn is the assistant's is one whose answer continues it.
        reference[spoken[-1]] = AssistantMessage(content=messages[spoken[-1]].content, prefix=True)
    # The normalizer, not the serving validator, is the reference: it takes a system message after an
    # assistant's, which the validator refuses (mistral-common joins every system message into one).
    request = tokenizer._instruct_request_normalizer.from_chat_completion_request(
        ChatCompletionRequest(messages=reference)
    )
    return tokenizer.instruct_tokenizer.encode_instruct(request).tokens


@functools.cache
def _mistral_tokenizer(prompt_format, factory):
    return factory.v1() if prompt_format is PromptFormat.V1 else factory.v3()


@functools.cache
def _processor(prompt_format: PromptFormat) -> SentencePieceProcessor:
    return SentencePieceProcessor(model_file=str(tokenizer_model_path(prompt_format.value)))


def our_ids(messages: list[Message], prompt_format: PromptFormat) -> list[int]:
    encode = _processor(prompt_format).encode
    return chat_prompt_ids(messages, prompt_format=prompt_format, special=SPECIAL[prompt_format], encode=encode)


THREE_TURNS = [
    Message("user", "Hello, how are you?"),
    Message("assistant", "Fine, and you?"),
    Message("user", "I'm doing great!"),
]


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
def test_three_turns_match_mistral_common(prompt_format):
    assert our_ids(THREE_TURNS, prompt_format) == reference_ids(THREE_TURNS, prompt_format)


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
def test_system_prompt_goes_where_each_version_puts_it(prompt_format):
    messages = [Message("system", "Answer in French."), *THREE_TURNS]
    ids = our_ids(messages, prompt_format)

    assert ids == reference_ids(messages, prompt_format)
    first_user = _processor(prompt_format).encode("[INST] Answer in French.\n\nHello, how are you? [/INST]")
    assert (ids[1 : 1 + len(first_user)] == first_user) is (prompt_format is PromptFormat.V1)


def _random_conversation(rng: random.Random) -> list[Message]:
    messages = []
    for _ in range(rng.randint(1, 7)):
        role = rng.choices(["system", "user", "assistant"], weights=[1, 3, 2])[0]
        content = rng.choice(PIECES) if rng.random() < 0.6 else " ".join(rng.sample(PIECES, 2))
        messages.append(Message(role, content))
    if rng.random() < 0.8 and messages[-1].role != "user":
        messages.append(Message("user", rng.choice(PIECES)))
    return messages


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
def test_fuzzed_conversations_match_mistral_common_or_both_refuse(prompt_format):
    rng = random.Random(20261122)
    compared = refused = 0
    for _ in range(1000):
        messages = _random_conversation(rng)
        try:
            expected = reference_ids(messages, prompt_format)
        except Exception:
            with pytest.raises(InvalidConversationError):
                our_ids(messages, prompt_format)
            refused += 1
            continue
        assert our_ids(messages, prompt_format) == expected, messages
        compared += 1
    # The fuzzer must exercise both paths, mostly the valid one.
    assert compared > 600 and refused > 20


def test_messages_from_json_are_checked():
    assert messages_from_dicts([{"role": "user", "content": "hi"}]) == [Message("user", "hi")]
    for bad in ({"role": "user"}, [{"role": "robot", "content": "x"}], [{"role": "user", "content": 3}]):
        with pytest.raises(InvalidConversationError):
            messages_from_dicts(bad)


def test_vocab_size_chooses_the_format():
    assert PromptFormat.for_vocab_size(32000) is PromptFormat.V1
    assert PromptFormat.for_vocab_size(32768) is PromptFormat.V3


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
@pytest.mark.parametrize(
    "messages",
    [
        [*THREE_TURNS[:2], Message("system", "Answer in French."), THREE_TURNS[2]],
        [THREE_TURNS[0], Message("assistant", "Fine, and")],
        [*THREE_TURNS, Message("assistant", "")],
    ],
    ids=["system-after-assistant", "ends-with-assistant", "empty-last-assistant"],
)
def test_orders_mistral_commons_normalizer_takes_match_it(prompt_format, messages):
    assert our_ids(messages, prompt_format) == reference_ids(messages, prompt_format)


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
def test_a_last_assistant_message_is_a_prefix_without_its_end(prompt_format):
    ids = our_ids([THREE_TURNS[0], Message("assistant", "Fine, and")], prompt_format)

    assert ids[-1] != SPECIAL[prompt_format].eos
    assert ids[-3:] == _processor(prompt_format).encode("Fine, and")[-3:]


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
def test_an_empty_assistant_message_before_the_last_turn_is_refused(prompt_format):
    with pytest.raises(InvalidConversationError, match="cannot be empty"):
        our_ids([THREE_TURNS[0], Message("assistant", ""), THREE_TURNS[2]], prompt_format)
