"""`mixtral summarize`: chunks that fit and cover the input exactly once, the map-reduce, bad input."""

from __future__ import annotations

import json
import random

import pytest

from mixtral_cli.answer.summarize import Summarizer
from mixtral_cli.answer.summary_plan import (
    Length,
    Style,
    SummaryOptions,
    SummaryPlan,
    instruction,
    is_dialogue,
    plan_chunks,
    summary_budget,
)
from mixtral_cli.base.errors import ContextOverflowError, SummaryContextError
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions
from mixtral_cli.family.prompt_ids import Message, PromptFormat

from .helpers import run_mixtral
from .test_prompt import reference_ids

pytestmark = pytest.mark.usefixtures("demo_model")

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
    with Engine(demo_model, EngineOptions(ctx_size=512, threads=1)) as loaded:
        yield loaded


@pytest.fixture
def summarizer(engine):
    return Summarizer(engine, OPTIONS, SAMPLING)


def test_chunks_cover_the_input_exactly_once_in_order_and_each_prompt_fits(summarizer, engine):
    text = prose(40)
    budget = summarizer.budget(dialogue=False)
    chunks = plan_chunks(text, budget.part, summarizer.count_tokens)

    assert "".join(chunks) == text
    assert len(chunks) > 1
    for chunk in chunks:
        request = instruction(OPTIONS, dialogue=False, partials=False)
        prompt = engine.chat_ids([Message("user", f"{request}\n\n{chunk}")])
        assert len(prompt) + budget.part_answer <= engine.n_ctx


def test_chunks_end_on_paragraph_boundaries_when_paragraphs_fit(summarizer):
    text = prose(30)
    chunks = plan_chunks(text, summarizer.budget(dialogue=False).part, summarizer.count_tokens)
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
    budget = summarizer.budget(dialogue=False).part
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
    first_plan = plan_chunks(text, summarizer.budget(dialogue=False).part, summarizer.count_tokens)
    chunks, plan = summarizer.summarize(text)
    "".join(chunks)

    assert plan.levels[0] == len(first_plan)
    assert plan.levels[-1] == 1 and plan.depth >= 2
    assert all(above > below for above, below in zip(plan.levels[:-1], plan.levels[1:-1], strict=False))
    assert plan.model_calls == sum(plan.levels) <= plan.max_model_calls
    assert plan.tokens_in > summarizer.count_tokens(text)


# -- every run ends: budgets fixed before the first call ----------------------------------------------

CONTEXTS = (256, 512, 1024, 2048, 4096)  # 256: the smallest llama.cpp makes (it rounds up to a multiple)
ALL_OPTIONS = [SummaryOptions(style=style, length=length) for style in Style for length in Length]


def text_of(tokens: int, count_tokens) -> str:  # noqa: ANN001
    """Prose of at least ``tokens`` tokens, built in paragraph-sized steps."""
    per_paragraph = count_tokens(prose(1))
    paragraphs = -(-tokens // per_paragraph)
    while count_tokens(text := prose(paragraphs)) < tokens:
        paragraphs += max(1, paragraphs // 10)
    return text


@pytest.fixture(scope="module")
def engines(demo_model):
    """One engine per context size, loaded on first use; one thread, the fastest on a busy machine."""
    loaded: dict[int, Engine] = {}

    def engine_of(n_ctx: int) -> Engine:
        if n_ctx not in loaded:
            loaded[n_ctx] = Engine(demo_model, EngineOptions(ctx_size=n_ctx, threads=1))
        return loaded[n_ctx]

    yield engine_of
    for engine in loaded.values():
        engine.close()


def summarize_to_the_end(
    engine: Engine, options: SummaryOptions, sampling: SamplingOptions, text: str, *, limit: int
) -> tuple[str, SummaryPlan, int]:
    """The summary, its plan, and the model calls counted as they happen; past ``limit`` it would not end."""
    calls = 0

    def count() -> None:
        nonlocal calls
        calls += 1
        if calls > limit:
            raise AssertionError(f"more than {limit} model calls: the map-reduce does not converge")

    chunks, plan = Summarizer(engine, options, sampling, on_chunk=count).summarize(text)
    return "".join(chunks), plan, calls + 1  # the final summary is the last call


def tokens_of(engine: Engine):  # noqa: ANN201 - a token counter
    return lambda text: len(engine.tokenize(text))


def test_a_small_context_with_the_default_length_finishes_within_the_planned_calls(engines):
    engine = engines(512)
    text = text_of(4 * engine.n_ctx, tokens_of(engine))

    summary, plan, calls = summarize_to_the_end(
        engine, SummaryOptions(), SamplingOptions(temperature=0), text, limit=100
    )

    assert summary.strip()
    assert calls == plan.model_calls <= plan.max_model_calls
    assert len(plan.levels) <= len(plan.bound)


def test_a_context_too_small_for_the_answer_is_refused_before_any_model_call(engines):
    engine = engines(512)
    summarizer = Summarizer(engine, SummaryOptions(length=Length.LONG), SamplingOptions(temperature=0))
    text = text_of(2 * engine.n_ctx, summarizer.count_tokens)
    tokens_before = engine.cached_tokens

    with pytest.raises(SummaryContextError) as refused:
        summarizer.summarize(text)

    error = refused.value
    assert error.n_ctx == 512 and error.answer == summarizer.sampling.max_tokens
    assert error.needed > 512 and f"--ctx-size to {error.needed}" in error.hint
    assert engine.cached_tokens == tokens_before


@pytest.mark.parametrize("n_ctx", CONTEXTS)
@pytest.mark.parametrize("options", ALL_OPTIONS, ids=lambda o: f"{o.style.value}-{o.length.value}")
def test_every_context_length_and_style_has_a_shrinking_bound_up_to_100x_the_context(n_ctx, options, engines):
    summarizer = Summarizer(engines(256), options, SamplingOptions())
    overhead = summarizer.budget(dialogue=False).overhead
    budget = summary_budget(n_ctx=n_ctx, overhead=overhead, answer=summarizer.sampling.max_tokens)
    if not budget.holds_parts:
        assert budget.smallest_context > n_ctx
        return
    assert budget.part_answer * 4 <= budget.part  # each partial summary is well below its part
    # Greedy chunks: two neighbours always hold more than one part's worth, so 100x gives at most this many.
    most_parts = 2 * 100 * n_ctx // budget.part + 1
    for n_parts in (1, 2, 7, most_parts):
        levels = budget.levels_bound(n_parts)
        assert levels[-1] == 1 and levels[0] == n_parts
        assert all(above > below for above, below in zip(levels[1:-1], levels[2:-1], strict=False))
        assert all(-(-above // 4) >= below for above, below in zip(levels[:-2], levels[1:-1], strict=False))


@pytest.mark.parametrize(("n_ctx", "times"), [*((n, 2) for n in CONTEXTS), (256, 100)])
def test_runs_end_within_the_planned_calls_at_every_context(n_ctx, times, engines):
    engine = engines(n_ctx)
    text = text_of(times * engine.n_ctx, tokens_of(engine))

    # Eight-token answers: the input, not decoding, sets the work, and the structure is the same.
    summary, plan, calls = summarize_to_the_end(
        engine, SummaryOptions(), SamplingOptions(temperature=0, max_tokens=8), text, limit=10 * times
    )

    assert calls == plan.model_calls <= plan.max_model_calls
    assert plan.levels[0] == plan.bound[0] > 1


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=lambda o: f"{o.style.value}-{o.length.value}")
def test_every_length_and_style_at_a_small_context_ends_within_its_bound_or_is_refused(options, engines):
    engine = engines(512)
    text = text_of(3 * engine.n_ctx, tokens_of(engine))
    try:
        summary, plan, calls = summarize_to_the_end(engine, options, SamplingOptions(temperature=0), text, limit=100)
    except SummaryContextError as refused:
        assert refused.needed > engine.n_ctx
        return
    assert calls == plan.model_calls <= plan.max_model_calls


def test_a_part_longer_as_a_summary_stands_for_itself(engines):
    engine = engines(512)
    summarizer = Summarizer(engine, SummaryOptions(), SamplingOptions(temperature=0))
    budget = summarizer.budget(dialogue=False)
    # The last part is a few words: its summary (the model writes to its budget) would be longer.
    text = text_of(2 * engine.n_ctx, summarizer.count_tokens) + "\n\nExperts idle."
    parts = plan_chunks(text, budget.part, summarizer.count_tokens)
    assert parts[-1] == "\n\nExperts idle." or parts[-1].endswith("Experts idle.")

    summaries = summarizer.partial_summaries(parts, budget, dialogue=False, partials=False, plan=SummaryPlan())

    assert all(summarizer.cost(s) <= budget.part_answer for s in summaries)
    assert summarizer.cost(summaries[-1]) <= summarizer.cost(parts[-1].strip())


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


def summarize(*args, input: str = ""):
    return run_mixtral("summarize", "-m", "tiny", "--temperature", "0", "--max-words", "20", *args, input=input)


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
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)

    assert data["summary"].strip()
    assert data["chunks"] == data["levels"][0] > 1 and data["depth"] == len(data["levels"]) >= 2
    assert data["model_calls"] == sum(data["levels"]) <= data["max_model_calls"] == sum(data["max_levels"])
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
