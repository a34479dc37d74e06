"""`mixtral summarize`: chunks that fit and cover the input exactly once, the map-reduce, bad input."""

from __future__ import annotations

import json
import random

import pytest

from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions
from mixtral_cli.errors import ContextOverflowError
from mixtral_cli.prompt import Message, PromptFormat
from mixtral_cli.summarize import (
    Style,
    Summarizer,
    SummaryOptions,
    instruction,
    is_dialogue,
    plan_chunks,
)

from .helpers import run_mixtral_process
from .test_prompt import reference_ids

WORDS = "the router sends each token to two experts while the rest stay idle and bandwidth sets the pace".split()
OPTIONS = SummaryOptions(max_words=20)
SAMPLING = SamplingOptions(temperature=0, max_tokens=512)
DIALOGUE = "Anna: Are you coming tonight?\nBen: Yes, after work.\nAnna: Bring the cake!\nBen: Sure, chocolate."


def prose(paragraphs: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return "\n\n".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 80))).capitalize() + "." for _ in range(paragraphs)
    )


@pytest.fixture(scope="module")
def engine(demo_model):
    with Engine(demo_model, EngineOptions(ctx_size=512)) as loaded:
        yield loaded


@pytest.fixture
def summarizer(engine):
    return Summarizer(engine, OPTIONS, SAMPLING)


def test_chunks_cover_the_input_exactly_once_in_order_and_each_prompt_fits(summarizer, engine):
    text = prose(40)
    budget = summarizer.text_budget(dialogue=False, partials=False)
    chunks = plan_chunks(text, budget, summarizer.count_tokens)

    assert "".join(chunks) == text
    assert len(chunks) > 1
    for chunk in chunks:
        request = instruction(OPTIONS, dialogue=False, partials=False)
        prompt = engine.chat_ids([Message("user", f"{request}\n\n{chunk}")])
        assert len(prompt) + summarizer.sampling.max_tokens <= engine.n_ctx


def test_chunks_end_on_paragraph_boundaries_when_paragraphs_fit(summarizer):
    text = prose(30)
    chunks = plan_chunks(text, summarizer.text_budget(dialogue=False, partials=False), summarizer.count_tokens)
    assert all(chunk.endswith("\n\n") for chunk in chunks[:-1])


@pytest.mark.parametrize(
    "text",
    [
        " ".join(f"Sentence {i} is about experts." for i in range(300)),  # one long paragraph: sentences
        "word " * 2000,  # no sentence ends: words
        "x" * 6000,  # not even spaces: halves
    ],
    ids=["sentences", "words", "one-huge-token-run"],
)
def test_oversized_paragraphs_are_cut_finer_and_still_covered_exactly(text, summarizer):
    budget = summarizer.text_budget(dialogue=False, partials=False)
    chunks = plan_chunks(text, budget, summarizer.count_tokens)

    assert "".join(chunks) == text
    assert all(summarizer.count_tokens(chunk) <= budget for chunk in chunks)


def test_short_input_is_one_pass(summarizer):
    chunks, plan = summarizer.summarize("A short note about experts.")
    assert "".join(chunks).strip()
    assert plan.levels == [1] and plan.model_calls == 1


def test_input_ten_times_the_context_is_reduced_level_by_level(summarizer, engine):
    text = prose(90)
    assert summarizer.count_tokens(text) >= 10 * engine.n_ctx
    first_plan = plan_chunks(text, summarizer.text_budget(dialogue=False, partials=False), summarizer.count_tokens)
    chunks, plan = summarizer.summarize(text)
    "".join(chunks)

    assert plan.levels[0] == len(first_plan)
    assert plan.levels[-1] == 1 and plan.depth >= 2
    # Each partial summary is at most max_tokens, so each level shrinks by at least this factor.
    shrink = summarizer.text_budget(dialogue=False, partials=True) // summarizer.sampling.max_tokens
    for above, below in zip(plan.levels, plan.levels[1:], strict=False):
        assert below <= -(-above // shrink) + 1
    assert plan.model_calls == sum(plan.levels)
    assert plan.tokens_in > summarizer.count_tokens(text)


def test_prompts_are_the_exact_instruct_ids(engine):
    request = instruction(OPTIONS, dialogue=False, partials=False)
    messages = [Message("user", f"{request}\n\nSome text to summarize.")]
    assert engine.chat_ids(messages) == reference_ids(messages, PromptFormat.V1)


def test_dialogue_is_recognised_and_asked_for_as_a_conversation():
    assert is_dialogue(DIALOGUE)
    assert not is_dialogue(prose(3))
    assert "conversation" in instruction(OPTIONS, dialogue=True, partials=False)


def test_options_shape_the_instruction():
    text = instruction(
        SummaryOptions(style=Style.BULLETS, max_words=50, focus="errors", language="French"),
        dialogue=False,
        partials=True,
    )
    assert "bulleted list" in text and "50 words" in text
    assert "Focus on: errors." in text and "in French" in text and "summaries of consecutive parts" in text
    assert "language of the text" in instruction(SummaryOptions(), dialogue=False, partials=False)


def test_no_chunk_refuses_input_larger_than_the_context(summarizer):
    with pytest.raises(ContextOverflowError):
        summarizer.summarize(prose(40), chunking=False)


# -- the command ----------------------------------------------------------------------------------------


def summarize(*args, **kwargs):
    return run_mixtral_process("summarize", "-m", "tiny", "--temperature", "0", "--max-words", "20", *args, **kwargs)


def test_file_summary_streams_to_stdout(tmp_path):
    (tmp_path / "a.txt").write_text(prose(2))
    result = summarize(tmp_path / "a.txt")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and "\x1b" not in result.stdout


def test_stdin_is_read_when_piped():
    result = summarize(input=DIALOGUE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_each_gives_one_summary_per_file(tmp_path):
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text(prose(2, seed=len(name)))
    result = summarize("--each", tmp_path / "a.md", tmp_path / "b.md")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("==> ") == 2
    assert f"==> {tmp_path / 'a.md'} <==" in result.stdout


def test_json_reports_chunks_depth_tokens_and_timings(tmp_path):
    (tmp_path / "long.txt").write_text(prose(70))
    result = summarize("--ctx-size", "512", "--json", tmp_path / "long.txt")
    data = json.loads(result.stdout)

    assert data["summary"].strip()
    assert data["chunks"] == data["levels"][0] > 1 and data["depth"] == len(data["levels"]) >= 2
    assert data["model_calls"] == sum(data["levels"])
    assert data["tokens_in"] > 0 and data["tokens_out"] > 0
    assert set(data["timings"]) == {"prompt_eval_s", "decode_s", "total_s", "layout"}
    assert "Summarizing, level 1" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"  \n\n ", "is empty"), (b"\x00\x01binary", "binary"), (b"caf\xe9 au lait", "not UTF-8")],
    ids=["empty", "blank", "binary", "latin-1"],
)
def test_bad_input_is_one_clear_line(content, message, tmp_path):
    (tmp_path / "input").write_bytes(content)
    result = summarize(tmp_path / "input")

    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unreadable_path_is_one_clear_line(tmp_path):
    result = summarize(tmp_path / "missing.txt")
    assert result.returncode == 1
    assert "Cannot read" in result.stderr and "missing.txt" in result.stderr


def test_no_chunk_on_too_large_input_is_refused_with_both_counts(tmp_path):
    (tmp_path / "long.txt").write_text(prose(40))
    result = summarize("--ctx-size", "512", "--no-chunk", tmp_path / "long.txt")

    assert result.returncode == 1
    assert "The prompt is" in result.stderr and "context holds" in result.stderr
