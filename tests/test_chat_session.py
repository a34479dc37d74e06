"""The chat session on a real engine: exact ids per turn, KV reuse, history edits, context policy, saving."""

from __future__ import annotations

import pytest

from mixtral_cli.base.errors import ContextOverflowError
from mixtral_cli.chat.session import ChatError, ChatSession, ContextPolicy
from mixtral_cli.chat.transcript import Transcript, TranscriptError
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions
from mixtral_cli.family.prompt_ids import PromptFormat
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .test_prompt import reference_ids

GREEDY = SamplingOptions(temperature=0, max_tokens=16)


@pytest.fixture(scope="module")
def engines(convert):
    loaded = {
        version: Engine(convert(TinyMixtralSpec(tokenizer=version.value), "Q8_0"), EngineOptions(ctx_size=2048))
        for version in PromptFormat
    }
    yield loaded
    for engine in loaded.values():
        engine.close()


def new_session(engine, tmp_path, *, system=None, policy=ContextPolicy.DROP, sampling=GREEDY) -> ChatSession:
    transcript = Transcript(model="tiny", system=system, sampling=sampling)
    return ChatSession(engine, transcript, policy=policy, autosave_path=tmp_path / "autosave.json")


def turn(session: ChatSession, text: str):
    chunks, finish = session.send(text)
    answer = "".join(chunks)
    return answer, finish()


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
def test_third_turn_sends_mistral_commons_ids_for_the_whole_conversation(prompt_format, engines, tmp_path):
    session = new_session(engines[prompt_format], tmp_path, system="Answer briefly.")
    for text in ("Hello, how are you?", "What is a mixture of experts?"):
        turn(session, text)
    _, result = turn(session, "Thanks! </s> [INST] and bye")

    assert len(session.transcript.turns) == 6
    conversation = session.messages()[:-1]  # what was sent: everything but the third answer
    assert result.prompt_ids == reference_ids(conversation, prompt_format)


def test_each_turn_evaluates_only_what_the_cache_lacks(engines, tmp_path):
    engine = engines[PromptFormat.V1]
    session = new_session(engine, tmp_path)
    previous_prompt: list[int] = []
    for text in ("First question?", "Second question?", "Third question?"):
        cached = engine.cached_tokens
        _, result = turn(session, text)
        shared = next(
            (i for i, (a, b) in enumerate(zip(cached, result.prompt_ids, strict=False)) if a != b),
            min(len(cached), len(result.prompt_ids)),
        )
        assert result.stats.prompt_tokens_evaluated == len(result.prompt_ids) - shared
        assert shared >= len(previous_prompt)  # the whole previous prompt came from the cache
        previous_prompt = result.prompt_ids


def test_undo_removes_the_last_exchange(engines, tmp_path):
    session = new_session(engines[PromptFormat.V1], tmp_path)
    turn(session, "One")
    turn(session, "Two")
    session.undo()

    assert [t.content for t in session.transcript.turns if t.role == "user"] == ["One"]
    session.undo()
    assert session.transcript.turns == []
    with pytest.raises(ChatError):
        session.undo()


def test_retry_replaces_the_last_answer_and_sends_the_same_prompt(engines, tmp_path):
    session = new_session(engines[PromptFormat.V1], tmp_path)
    _, first = turn(session, "Tell me something.")
    chunks, finish = session.retry()
    "".join(chunks)
    second = finish()

    assert second.prompt_ids == first.prompt_ids
    assert [t.role for t in session.transcript.turns] == ["user", "assistant"]


def test_system_prompt_change_reaches_the_next_prompt(engines, tmp_path):
    session = new_session(engines[PromptFormat.V1], tmp_path)
    turn(session, "Hi")
    session.set_system("Answer in French.")
    _, result = turn(session, "Again")

    assert result.prompt_ids == reference_ids(session.messages()[:-1], PromptFormat.V1)
    assert session.messages()[0].content == "Answer in French."


def test_set_changes_sampling_and_clear_keeps_the_system_prompt(engines, tmp_path):
    session = new_session(engines[PromptFormat.V1], tmp_path, system="Be brief.")
    session.set_sampling(max_tokens=3)
    _, result = turn(session, "Hi")
    assert result.stats.completion_tokens <= 3

    session.clear()
    assert session.transcript.turns == [] and session.transcript.system == "Be brief."


def test_save_and_load_restore_the_conversation_and_the_next_prompt(engines, tmp_path):
    engine = engines[PromptFormat.V3]
    session = new_session(engine, tmp_path, system="Be brief.")
    turn(session, "One")
    turn(session, "Two")
    saved = session.transcript.save(tmp_path / "chat.json")
    markdown = session.transcript.save(tmp_path / "chat.md").read_text()

    restored = Transcript.load(saved)
    assert restored.turns == session.transcript.turns
    assert (restored.system, restored.sampling) == (session.transcript.system, session.transcript.sampling)
    assert "## You" in markdown and session.transcript.turns[1].content in markdown

    resumed = ChatSession(engine, restored, autosave_path=tmp_path / "other.json")
    _, original_next = turn(session, "Three")
    _, resumed_next = turn(resumed, "Three")
    assert resumed_next.prompt_ids == original_next.prompt_ids


def test_every_turn_is_autosaved(engines, tmp_path):
    session = new_session(engines[PromptFormat.V1], tmp_path)
    turn(session, "Hi")
    assert Transcript.load(tmp_path / "autosave.json").turns == session.transcript.turns


def test_an_answer_stopped_early_is_kept_and_marked(engines, tmp_path):
    session = new_session(engines[PromptFormat.V1], tmp_path, sampling=SamplingOptions(temperature=0, max_tokens=200))
    chunks, finish = session.send("Write a long story.")
    partial = next(chunks) + next(chunks)
    chunks.close()  # what Ctrl-C does to the answer being rendered
    finish()

    last = session.transcript.turns[-1]
    assert (last.role, last.interrupted) == ("assistant", True)
    assert last.content == partial
    turn(session, "Go on.")
    assert session.transcript.turns[-1].role == "assistant"


def test_history_beyond_the_context_drops_the_oldest_exchanges(convert, tmp_path):
    with Engine(convert(TinyMixtralSpec(), "Q8_0"), EngineOptions(ctx_size=256)) as engine:
        session = new_session(
            engine, tmp_path, system="Keep me.", sampling=SamplingOptions(temperature=0, max_tokens=16)
        )
        dropped = 0
        for i in range(12):
            _, result = turn(session, f"Question number {i}: " + "tell me more " * 4)
            dropped += result.newly_left_out
            assert len(result.prompt_ids) + 16 <= engine.n_ctx
        assert dropped > 0
        assert session.transcript.system == "Keep me."
        assert session.sent_turns[0].role == "user"


def test_the_saved_chat_keeps_the_exchanges_left_out_of_the_context(convert, tmp_path):
    with Engine(convert(TinyMixtralSpec(), "Q8_0"), EngineOptions(ctx_size=256)) as engine:
        session = new_session(engine, tmp_path, sampling=SamplingOptions(temperature=0, max_tokens=16))
        questions = [f"Question number {i}: " + "tell me more " * 4 for i in range(12)]
        for question in questions:
            _, result = turn(session, question)

        saved = Transcript.load(session.autosave_path)
        assert session.left_out > 0
        assert [t.content for t in saved.turns if t.role == "user"] == questions
        assert saved.turns == session.transcript.turns
        sent = session.messages(session.sent_turns)[:-1]  # the last answer came after the prompt
        assert result.prompt_ids == reference_ids(sent, PromptFormat.V1)


def test_error_policy_refuses_instead_of_dropping(convert, tmp_path):
    with Engine(convert(TinyMixtralSpec(), "Q8_0"), EngineOptions(ctx_size=256)) as engine:
        session = new_session(engine, tmp_path, policy=ContextPolicy.ERROR)
        with pytest.raises(ContextOverflowError):
            for i in range(12):
                turn(session, f"Question number {i}: " + "tell me more " * 4)
        assert session.transcript.turns[-1].role == "assistant"


def test_one_message_larger_than_the_context_is_refused_with_both_counts(convert, tmp_path):
    with Engine(convert(TinyMixtralSpec(), "Q8_0"), EngineOptions(ctx_size=256)) as engine:
        session = new_session(engine, tmp_path)
        with pytest.raises(ContextOverflowError) as caught:
            session.send("word " * 400)
        assert caught.value.prompt_tokens > caught.value.n_ctx
        assert session.transcript.turns == []


def test_a_retry_stopped_before_its_answer_keeps_the_previous_answer(engines, tmp_path):
    session = new_session(engines[PromptFormat.V1], tmp_path)
    turn(session, "Tell me something.")
    before = list(session.transcript.turns)
    chunks, finish = session.retry()
    chunks.close()  # what Ctrl-C during the prompt's evaluation does
    result = finish()

    assert not result.answered
    assert session.transcript.turns == before
    assert Transcript.load(session.autosave_path).turns == before


def test_a_retry_that_fails_keeps_the_previous_answer(convert, tmp_path):
    with Engine(convert(TinyMixtralSpec(), "Q8_0"), EngineOptions(ctx_size=256)) as engine:
        session = new_session(engine, tmp_path, policy=ContextPolicy.ERROR)
        _, result = turn(session, "Question 0")
        for i in range(1, 30):
            if len(result.prompt_ids) + 64 > engine.n_ctx:
                break  # a retry now needs more room than the context has
            _, result = turn(session, f"Question {i}")
        before = list(session.transcript.turns)
        session.set_sampling(max_tokens=64)  # more room for the answer than the history leaves
        with pytest.raises(ContextOverflowError):
            session.retry()
        assert session.transcript.turns == before


def test_load_continues_into_a_new_file_and_writes_neither_old_one(engines, tmp_path):
    engine = engines[PromptFormat.V1]
    earlier = new_session(engine, tmp_path)
    turn(earlier, "Saved question")
    saved = earlier.transcript.save(tmp_path / "saved.json")
    saved_text = saved.read_text()
    session = ChatSession(engine, Transcript(model="tiny", sampling=GREEDY), autosave_path=tmp_path / "current.json")
    turn(session, "Current question")
    current_text = session.autosave_path.read_text()

    session.load(saved)
    turn(session, "Next question")

    assert session.autosave_path not in (saved, tmp_path / "current.json")
    assert (saved.read_text(), (tmp_path / "current.json").read_text()) == (saved_text, current_text)
    continued = Transcript.load(session.autosave_path)
    assert [t.content for t in continued.turns if t.role == "user"] == ["Saved question", "Next question"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"# Chat with tiny\n", "it is not JSON (Expecting value at line 1, column 1)"),
        (b"\xff\xfe{}", "byte 0 is not UTF-8 text"),
        (b"[1, 2]", "it holds no list of messages"),
        (b'{"messages": [{"role": "user"}]}', "message 1 has no text content"),
        (b'{"messages": [{"role": "tool", "content": "x"}]}', "message 1's role is 'tool', not user or assistant"),
        (b'{"messages": [], "sampling": {"temperature": "hot"}}', "its setting temperature is 'hot', not a number"),
    ],
)
def test_a_file_that_is_not_a_chat_is_refused_with_its_name_and_why(content, reason, tmp_path):
    path = tmp_path / "not-a-chat.json"
    path.write_bytes(content)
    with pytest.raises(TranscriptError) as caught:
        Transcript.load(path)
    assert caught.value.message == f"{path} is not a saved chat: {reason}."


def test_saving_to_a_path_that_cannot_be_written_names_it_and_the_reason(tmp_path):
    target = tmp_path / "a-folder"
    target.mkdir()
    with pytest.raises(TranscriptError) as caught:
        Transcript(model="tiny").save(target)
    assert caught.value.message == f"Cannot save the chat to {target}: Is a directory."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder"]  # no partial file left
