"""CPU weight layouts: both load, the KV hand-over continues as one context would, auto follows the measured rates."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from subprocess import DEVNULL

import pytest

from mixtral_cli.base.system import physical_cores
from mixtral_cli.engine import calibration
from mixtral_cli.engine.layout import Layout, LayoutRates, Memory, Work, choose_layout, prefill_elsewhere
from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions

from .helpers import run_mixtral_process

GREEDY = SamplingOptions(temperature=0, max_tokens=16)
GIB = 2**30
# Shaped like the rates measured on an 8x7B-shaped model here: plain prompts 3x faster, repacked decode 1.3x.
PREFILL_PLAIN = LayoutRates(
    plain_prompt=198.0, plain_decode=19.8, repacked_prompt=67.0, repacked_decode=26.3, repack_load_s=2.0
)
ROOMY = Memory(model_bytes=4 * GIB, kv_bytes=GIB // 4, available=20 * GIB)
TIGHT = Memory(model_bytes=4 * GIB, kv_bytes=GIB // 4, available=6 * GIB)


def ids_of(engine: Engine, words: int) -> list[int]:
    return engine.raw_ids(" ".join(f"expert{i % 37} routes token{i % 11}" for i in range(words)))


# -- the decision, from given rates -----------------------------------------------------------------------


def test_a_long_prompt_with_a_short_answer_hands_over_where_both_layouts_fit():
    assert choose_layout(Work(10_000, 300), PREFILL_PLAIN, ROOMY).layout is Layout.HANDOVER


def test_a_long_prompt_takes_the_plain_layout_where_only_one_fits():
    assert choose_layout(Work(10_000, 300), PREFILL_PLAIN, TIGHT).layout is Layout.PLAIN


def test_a_long_answer_after_a_short_prompt_takes_the_repacked_layout_where_only_one_fits():
    assert choose_layout(Work(20, 2000), PREFILL_PLAIN, TIGHT).layout is Layout.REPACKED


def test_a_few_answer_tokens_do_not_pay_for_loading_the_repacked_layout():
    assert choose_layout(Work(2000, 8), PREFILL_PLAIN, ROOMY).layout is Layout.PLAIN


def test_rates_that_favour_repacking_everywhere_choose_it_for_any_work():
    # As it might be on another CPU: measured, not assumed.
    rates = LayoutRates(plain_prompt=50, plain_decode=10, repacked_prompt=80, repacked_decode=20, repack_load_s=1)
    for work in (Work(10_000, 300), Work(20, 2000), Work(2000, 64)):
        assert choose_layout(work, rates, ROOMY).layout is Layout.REPACKED


def test_unknown_memory_never_holds_both_layouts():
    memory = Memory(model_bytes=GIB, kv_bytes=GIB, available=None)
    assert not memory.holds_both
    assert Layout.HANDOVER not in choose_layout(Work(10_000, 300), PREFILL_PLAIN, memory).expected_s


def test_the_plan_states_its_estimates_and_memory():
    text = choose_layout(Work(10_000, 300), PREFILL_PLAIN, ROOMY).describe()
    assert "hand-over" in text and "8.5 GiB" in text and "20.0 GiB available" in text


def test_a_hand_over_engine_prefills_elsewhere_only_when_that_is_quicker():
    assert prefill_elsewhere(own_tokens=500, prefill_tokens=499, rates=PREFILL_PLAIN)
    # The decoding context already holds most of the prompt: a few new tokens are evaluated where they are.
    assert not prefill_elsewhere(own_tokens=5, prefill_tokens=504, rates=PREFILL_PLAIN)


# -- the mechanism, on the tiny model ---------------------------------------------------------------------


@pytest.mark.parametrize(("repack", "repacked_buffers"), [(True, True), (False, False)], ids=["repacked", "plain"])
def test_both_layouts_load_and_generate(repack, repacked_buffers, demo_model, capsys):
    with Engine(demo_model, EngineOptions(ctx_size=256, repack=repack, verbose=True)) as engine:
        generation = engine.generate(ids_of(engine, 20), GREEDY)
        text = "".join(generation)
    log = capsys.readouterr().err

    assert ("CPU_REPACK model buffer" in log) is repacked_buffers
    assert text and generation.stats.layout == ("repacked" if repack else "plain")


def test_kv_hand_over_continues_exactly_as_one_context_would(demo_model):
    plain = EngineOptions(ctx_size=512, repack=False)
    with Engine(demo_model, plain) as sender, Engine(demo_model, plain) as receiver, Engine(demo_model, plain) as one:
        prompt = ids_of(sender, 60)
        # Both sides split the prompt alike: all tokens but the last in one batch, then the last alone.
        for engine in (sender, one):
            "".join(engine.generate(prompt[:-1], SamplingOptions(max_tokens=0)))
        receiver.take_cache_from(sender)
        handed_over = receiver.generate(prompt, GREEDY)
        "".join(handed_over)
        "".join(one.generate(prompt, GREEDY))

        assert handed_over.stats.prompt_tokens_evaluated == 1
        assert receiver.cached_tokens == one.cached_tokens
        assert len(one.cached_tokens) == len(prompt) + GREEDY.max_tokens - 1  # the last: nothing follows it


def test_auto_hands_over_when_the_stored_rates_say_so(demo_model):
    with Engine(demo_model, EngineOptions(ctx_size=512, repack=None)) as engine:
        # Loading the tiny model costs nothing: the hand-over wins on any prompt and answer.
        rates = replace(PREFILL_PLAIN, repack_load_s=0.0)
        calibration.store_rates(calibration.cache_key(demo_model, threads=physical_cores()), rates)
        prompt = ids_of(engine, 60)
        first = engine.generate(prompt, GREEDY)
        "".join(first)
        follow_up = engine.generate([*engine.cached_tokens, *prompt[1:8]], GREEDY)
        "".join(follow_up)

    assert engine.layout is Layout.HANDOVER
    assert (first.stats.layout, first.stats.prompt_tokens_evaluated) == ("hand-over", len(prompt))
    # Seven new tokens after a cached conversation are evaluated where the cache is, not handed over.
    assert (follow_up.stats.layout, follow_up.stats.prompt_tokens_evaluated) == ("repacked", 7)


def test_auto_stays_plain_when_the_stored_rates_say_so(demo_model):
    rates = LayoutRates(plain_prompt=900, plain_decode=300, repacked_prompt=400, repacked_decode=200, repack_load_s=0)
    with Engine(demo_model, EngineOptions(ctx_size=512, repack=None)) as engine:
        calibration.store_rates(calibration.cache_key(demo_model, threads=physical_cores()), rates)
        generation = engine.generate(ids_of(engine, 60), GREEDY)
        "".join(generation)

    assert engine.layout is Layout.PLAIN and generation.stats.layout == "plain"


# -- calibration ------------------------------------------------------------------------------------------


def test_calibration_is_measured_on_first_use_and_read_from_the_cache_after(demo_model):
    with Engine(demo_model, EngineOptions(ctx_size=512, repack=None)) as engine:
        engine.prepare(Work(100, 100))
        key = calibration.cache_key(demo_model, threads=physical_cores())
    stored = json.loads(calibration.cache_path().read_text())
    written = calibration.cache_path().stat().st_mtime_ns

    with Engine(demo_model, EngineOptions(ctx_size=512, repack=None)) as again:
        again.prepare(Work(100, 100))

    assert list(stored) == [key]
    assert all(stored[key][name] > 0 for name in ("plain_prompt", "plain_decode", "repacked_prompt", "repacked_decode"))
    assert calibration.cache_path().stat().st_mtime_ns == written
    assert asdict(calibration.cached_rates(key)) == stored[key]


def test_calibration_is_keyed_by_model_file_cpu_and_threads(demo_model, tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(demo_model.read_bytes())
    key = calibration.cache_key(demo_model, threads=2)

    assert calibration.cpu_signature() in key
    assert key != calibration.cache_key(demo_model, threads=1)
    assert key != calibration.cache_key(copy, threads=2)


def test_chat_starts_repacked_and_explicit_choices_stand():
    from mixtral_cli.engine.layout import for_chat

    assert for_chat(EngineOptions(repack=None)).repack is True
    assert for_chat(EngineOptions(repack=False)).repack is False


# -- the commands -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "layout"), [("--repack", "repacked"), ("--no-repack", "plain")])
def test_complete_json_names_the_layout_that_ran(flag, layout):
    result = run_mixtral_process("complete", "-m", "tiny", flag, "--json", "-n", "4", "Hello", stdin=DEVNULL)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["timings"]["layout"] == layout


def test_verbose_states_the_layout_plan():
    result = run_mixtral_process("complete", "-m", "tiny", "--verbose", "-n", "4", "Hello", stdin=DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "Weight layout:" in result.stderr and "available" in result.stderr
