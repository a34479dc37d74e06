"""The engine on a tiny Mixtral that llama.cpp really runs: prompt ids, KV reuse, stops, overflow."""

from __future__ import annotations

import random

import pytest

from mixtral_cli.base.errors import ContextOverflowError, GGUFError, ModelNotFoundError, UnsupportedArchitectureError
from mixtral_cli.engine.context_memory import context_that_fits
from mixtral_cli.engine.logprobs import log_softmax
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions
from mixtral_cli.family.prompt_ids import InvalidConversationError, Message, PromptFormat
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .helpers import split_gguf, write_gguf_of_architecture
from .reference import llama_cpp_greedy, llama_cpp_logits
from .test_prompt import PIECES, reference_ids

GREEDY = SamplingOptions(temperature=0, max_tokens=24)
# llama-cpp-python evaluates the whole text in one batch, the engine the answer a token at a time (other
# kernels, other sums): log-probabilities differ by up to a few hundredths on these quantized models.
LOGPROB_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def engines(convert):
    loaded = {
        PromptFormat.V1: Engine(convert(TinyMixtralSpec(tokenizer="v1"), "Q8_0"), EngineOptions(ctx_size=512)),
        PromptFormat.V3: Engine(convert(TinyMixtralSpec(tokenizer="v3"), "Q8_0"), EngineOptions(ctx_size=512)),
    }
    yield loaded
    for engine in loaded.values():
        engine.close()


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
def test_prompt_format_comes_from_the_vocabulary(prompt_format, engines):
    assert engines[prompt_format].info.prompt_format is prompt_format


@pytest.mark.parametrize("prompt_format", list(PromptFormat))
def test_chat_ids_equal_mistral_common_on_fuzzed_conversations(prompt_format, engines):
    engine = engines[prompt_format]
    rng = random.Random(7)
    compared = 0
    for _ in range(300):
        messages = [
            Message(rng.choice(["system", "user", "assistant"]), rng.choice(PIECES)) for _ in range(rng.randint(1, 6))
        ]
        if messages[-1].role != "user":
            messages.append(Message("user", rng.choice(PIECES)))
        try:
            expected = reference_ids(messages, prompt_format)
        except Exception:
            with pytest.raises(InvalidConversationError):
                engine.chat_ids(messages)
            continue
        assert engine.chat_ids(messages) == expected, messages
        compared += 1
    assert compared > 150


@pytest.fixture(scope="module")
def cpu_engine(engines):
    """The V1 model on the CPU alone, as llama-cpp-python's reference loads it (a GPU computes other digits)."""
    with Engine(engines[PromptFormat.V1].info.path, EngineOptions(ctx_size=512, n_gpu_layers=0)) as engine:
        yield engine


def test_greedy_generation_equals_llama_cpp_python(cpu_engine):
    engine = cpu_engine
    ours = "".join(engine.generate(engine.raw_ids("The mixture of experts"), GREEDY))
    assert ours == llama_cpp_greedy(engine.info.path, "The mixture of experts", GREEDY.max_tokens, n_ctx=512)


def test_repeat_penalty_generation_equals_llama_cpp_python(cpu_engine):
    engine = cpu_engine
    penalized = SamplingOptions(temperature=0, max_tokens=24, repeat_penalty=1.5)
    ours = "".join(engine.generate(engine.raw_ids("The mixture of experts"), penalized))
    assert ours == llama_cpp_greedy(engine.info.path, "The mixture of experts", 24, n_ctx=512, repeat_penalty=1.5)


def test_kv_cache_reuse_evaluates_only_new_tokens(engines):
    engine = engines[PromptFormat.V1]
    first = engine.chat_ids([Message("user", "Hello, how are you?")])
    answer = "".join(engine.generate(first, GREEDY, answer=True))
    cached = engine.cached_tokens
    assert cached[: len(first)] == tuple(first)

    second = engine.chat_ids(
        [Message("user", "Hello, how are you?"), Message("assistant", answer), Message("user", "Tell me more.")]
    )
    follow_up = engine.generate(second, GREEDY, answer=True)
    "".join(follow_up)
    shared = next((i for i, (a, b) in enumerate(zip(cached, second, strict=False)) if a != b), len(cached))
    assert follow_up.stats.prompt_tokens == len(second)
    assert follow_up.stats.prompt_tokens_evaluated == len(second) - shared
    assert shared >= len(first)


def test_stop_string_cuts_the_text_where_it_starts(engines):
    engine = engines[PromptFormat.V1]
    full = "".join(engine.generate(engine.raw_ids("Once upon a time"), GREEDY))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    generation = engine.generate(
        engine.raw_ids("Once upon a time"), SamplingOptions(temperature=0, max_tokens=24, stop=(stop,))
    )

    assert "".join(generation) == full[: full.index(stop)]
    assert generation.stats.stop_reason == "stop"


def test_same_seed_same_text_other_seed_other_text(engines):
    engine = engines[PromptFormat.V1]

    def sample(seed: int) -> str:
        return "".join(
            engine.generate(engine.raw_ids("Hi"), SamplingOptions(temperature=1.0, seed=seed, max_tokens=16))
        )

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_max_tokens_ends_with_length(engines):
    engine = engines[PromptFormat.V1]
    generation = engine.generate(engine.raw_ids("Hi"), SamplingOptions(temperature=0, max_tokens=5))
    "".join(generation)
    assert (generation.stats.completion_tokens, generation.stats.stop_reason) == (5, "length")


def test_prompt_longer_than_context_is_refused_with_both_counts(engines):
    engine = engines[PromptFormat.V1]
    ids = engine.raw_ids("word " * 600)
    with pytest.raises(ContextOverflowError) as caught:
        engine.generate(ids, GREEDY)
    assert (caught.value.prompt_tokens, caught.value.n_ctx) == (len(ids), 512)
    assert str(len(ids)) in caught.value.message and "512" in caught.value.message


def test_missing_truncated_and_foreign_files_are_clear_errors(tmp_path, convert):
    with pytest.raises(ModelNotFoundError):
        Engine(tmp_path / "missing.gguf")
    (tmp_path / "notes.gguf").write_text("not a model")
    with pytest.raises(GGUFError, match="not a GGUF"):
        Engine(tmp_path / "notes.gguf")
    (tmp_path / "cut.gguf").write_bytes(convert(TinyMixtralSpec(), "Q8_0").read_bytes()[:300_000])
    with pytest.raises(GGUFError, match="truncated or corrupt"):
        Engine(tmp_path / "cut.gguf")


def test_gguf_of_another_architecture_is_refused(tmp_path):
    with pytest.raises((UnsupportedArchitectureError, GGUFError)) as caught:
        Engine(write_gguf_of_architecture(tmp_path / "dense.gguf", "gpt2"))
    assert "gpt2" in caught.value.message


def test_context_is_capped_to_what_memory_holds_for_8x7b():
    # 8x7B: 32 layers, 8 KV heads of 128: K and V in f16 take 128 KiB per token; Q4_K_M weighs 26.4 GB.
    per_token, model = 2 * 32 * 8 * 128 * 2, 26_400_000_000
    roomy = context_that_fits(32768, bytes_per_token=per_token, free=64 * 2**30, model_bytes=model)
    tight = context_that_fits(32768, bytes_per_token=per_token, free=32 * 2**30, model_bytes=model)
    starved = context_that_fits(32768, bytes_per_token=per_token, free=24 * 2**30, model_bytes=model)

    assert roomy == 32768
    assert tight < 32768 and tight % 256 == 0
    assert tight * per_token <= (32 * 2**30 - model) // 2 < (tight + 256) * per_token
    assert starved == 512


def test_split_model_loads_from_its_first_shard(convert, tmp_path):
    single = convert(TinyMixtralSpec(), "Q8_0")
    shards = split_gguf(single, tmp_path, max_tensors=10)
    assert len(shards) > 1

    def greedy(path):
        with Engine(path, EngineOptions(ctx_size=512)) as engine:
            return "".join(engine.generate(engine.raw_ids("Experts and routers"), GREEDY))

    assert greedy(shards[0]) == greedy(single)


def test_frequency_and_presence_penalties_change_greedy_text_as_llama_cpp_python_does(cpu_engine):
    engine, prompt = cpu_engine, "The mixture of experts"
    # Negative: a random model seldom repeats a token, which positive penalties would need to show.
    penalties = {"frequency_penalty": -1.5, "presence_penalty": -0.5}
    penalized = "".join(
        engine.generate(engine.raw_ids(prompt), SamplingOptions(temperature=0, max_tokens=64, **penalties))
    )
    plain = "".join(engine.generate(engine.raw_ids(prompt), SamplingOptions(temperature=0, max_tokens=64)))

    assert penalized != plain
    assert penalized == llama_cpp_greedy(engine.info.path, prompt, 64, n_ctx=512, **penalties)


def test_a_logit_bias_moves_the_greedy_choice_as_llama_cpp_python_does(cpu_engine):
    engine, ids = cpu_engine, cpu_engine.raw_ids("The mixture of experts")
    first = engine.generate(ids, SamplingOptions(temperature=0, max_tokens=1, logprobs=2))
    list(first)
    ((chosen, runner_up),) = [tuple(token for token, _ in entry.top) for entry in first.logprobs]

    biased = engine.generate(
        ids, SamplingOptions(temperature=0, max_tokens=1, logprobs=0, logit_bias=((chosen, -100),))
    )
    list(biased)

    assert [entry.token for entry in biased.logprobs] == [runner_up]


def test_a_first_prompt_of_the_warm_ups_shape_is_read_with_two_experts(cpu_engine):
    """The load's warm-up evaluates two tokens with every expert active; llama.cpp would reuse that graph for a
    first batch of the same shape (two tokens, one sequence, one output)."""
    ids = cpu_engine.raw_ids("Once")
    assert len(ids) == 2
    with Engine(cpu_engine.info.path, cpu_engine.options) as fresh:
        generation = fresh.generate(ids, SamplingOptions(temperature=0, max_tokens=1, logprobs=1))
        list(generation)
    (entry,) = generation.logprobs
    row = log_softmax(llama_cpp_logits(cpu_engine.info.path, ids)[-1])

    assert entry.token == int(row.argmax())
    assert entry.logprob == pytest.approx(row[entry.token], abs=LOGPROB_TOLERANCE)


def test_logprobs_are_the_log_softmax_of_llama_cpps_logits(cpu_engine):
    engine, ids = cpu_engine, cpu_engine.raw_ids("The mixture of experts")
    generation = engine.generate(ids, SamplingOptions(temperature=0, max_tokens=6, logprobs=3, prompt_logprobs=True))
    list(generation)
    generated = [entry.token for entry in generation.logprobs]
    all_ids = ids + generated
    expected = [log_softmax(row) for row in llama_cpp_logits(engine.info.path, all_ids)]

    reported = [*generation.prompt_logprobs[1:], *generation.logprobs]
    for position, entry in enumerate(reported):
        row = expected[position]
        assert entry.token == all_ids[position + 1]
        assert entry.logprob == pytest.approx(row[entry.token], abs=LOGPROB_TOLERANCE)
        assert len(entry.top) == 3 and entry.top[0][1] == pytest.approx(row.max(), abs=LOGPROB_TOLERANCE)
        for token, logprob in entry.top:
            assert logprob == pytest.approx(row[token], abs=LOGPROB_TOLERANCE)
    assert generation.prompt_logprobs[0].logprob is None
