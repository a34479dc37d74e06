"""Batched decoding on the demo model: several sequences in one llama_decode answer as each would alone."""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions, SamplingOptions

GREEDY = SamplingOptions(temperature=0, max_tokens=24)
PROMPTS = [
    "The quick brown fox",
    "Once upon a time, in a land far away,",
    "def fibonacci(n):",
    "Mixtral is a sparse mixture of experts",
    "1, 2, 3, 4,",
    "Dear Sir or Madam,",
    "The capital of France is",
    "Q: What is the answer? A:",
]
# Measured here on the demo model, 8 sequences: in the plain weight layout a batched step's logits equal the solo
# step's to 2e-6 (its kernels compute each row alone). The repacked layout's kernels group a batch's rows (and a MoE
# batch's rows by expert), so a row's sums depend on its neighbours: they differ by up to 0.045 (0.094 for prompt
# rows mixed in one evaluation). The demo model's two best logits can be 0.0005 apart, so greedy answers are compared
# in the plain layout, and the repacked layout's logits within this tolerance.
LOGIT_TOLERANCE = 0.1


def engines(demo_model, *, repack: bool) -> tuple[Engine, Engine]:
    """One sequence alone, and eight in one context."""
    return (
        Engine(demo_model, EngineOptions(ctx_size=256, repack=repack)),
        Engine(demo_model, EngineOptions(ctx_size=256, sequences=8, batch_size=64, repack=repack)),
    )


@pytest.fixture(scope="module")
def plain(demo_model):
    pair = engines(demo_model, repack=False)
    yield pair
    for engine in pair:
        engine.close()


@pytest.fixture(scope="module")
def solo(plain) -> Engine:
    return plain[0]


@pytest.fixture(scope="module")
def batched(plain) -> Engine:
    return plain[1]


def run_together(engine: Engine, generations) -> tuple[list[str], list[int]]:
    """Drive ``generations`` as serve's scheduler does: a step of each, then one evaluation for all; returns
    each one's text and the tokens of every evaluation."""
    texts = [""] * len(generations)
    running = {i: generation.steps() for i, generation in enumerate(generations)}
    evaluations = []
    while running:
        for i, steps in list(running.items()):
            try:
                chunk = next(steps)
            except StopIteration:
                del running[i]
                continue
            texts[i] += chunk or ""
        evaluations.append(engine.evaluate())
    return texts, [n for n in evaluations if n]


def test_greedy_answers_in_a_batch_equal_each_answered_alone(solo, batched):
    prompts = PROMPTS
    alone = ["".join(solo.generate(solo.raw_ids(prompt), GREEDY)) for prompt in prompts]
    generations = [batched.generate(batched.raw_ids(prompt), GREEDY, sequence=i) for i, prompt in enumerate(prompts)]
    together, _ = run_together(batched, generations)
    assert together == alone
    assert all(g.stats.completion_tokens == GREEDY.max_tokens for g in generations)


def test_running_sequences_advance_in_one_evaluation(batched):
    generations = [batched.generate(batched.raw_ids(prompt), GREEDY, sequence=i) for i, prompt in enumerate(PROMPTS)]
    _, evaluations = run_together(batched, generations)
    # The prompts go in the first evaluation (all 8 fit its 64 tokens), then each holds a token of all eight.
    assert evaluations[1:] == [len(PROMPTS)] * (len(evaluations) - 1)
    assert len(evaluations) == GREEDY.max_tokens  # the last tokens are not evaluated: nothing follows them


@pytest.mark.parametrize(("repack", "tolerance"), [(False, 1e-4), (True, LOGIT_TOLERANCE)], ids=["plain", "repacked"])
def test_a_batched_step_s_logits_match_the_solo_step_within_the_tolerance(demo_model, repack, tolerance):
    import llama_cpp

    solo, batched = engines(demo_model, repack=repack)
    with solo, batched:
        worst = largest_logit_difference(solo, batched, llama_cpp)
    print(f"{'repacked' if repack else 'plain'}: largest logit difference, batched step vs solo step: {worst:.2g}")
    assert worst <= tolerance


def largest_logit_difference(solo: Engine, batched: Engine, llama_cpp) -> float:  # noqa: ANN001 - the module
    """Over 8 steps of 8 sequences in one batch, each step's logits against the same step alone."""
    n_vocab = solo.info.n_vocab
    seen: dict[tuple[int, int], np.ndarray] = {}  # (engine, sequence) -> logits of the last step

    def recorder(key):
        def pick(ctx, row):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,)).copy()
            seen[key] = logits
            return int(logits.argmax())

        return pick

    for engine in (solo, batched):
        engine.reset_cache()
    lanes = []
    for i, prompt in enumerate(PROMPTS):  # each prompt alone, as the solo engine reads it
        lanes.append(batched._batch.join(batched._caches[i], batched.raw_ids(prompt), recorder((1, i))))
        while not lanes[-1].ready:
            batched.evaluate()
    worst = 0.0
    for _ in range(8):
        for lane in lanes:
            lane.queue(lane.take())
        assert batched.evaluate() == len(PROMPTS)
        for i, lane in enumerate(lanes):
            solo.reset_cache()
            alone = solo._batch.join(solo._cache, lane.cache.tokens, recorder((0, i)))
            while not alone.ready:
                solo.evaluate()
            alone.leave()
            worst = max(worst, float(np.abs(seen[0, i] - seen[1, i]).max()))
    for lane in lanes:
        lane.leave()
    return worst


def test_a_long_prompt_joins_in_chunks_while_the_others_decode(demo_model):
    with Engine(demo_model, EngineOptions(ctx_size=256, sequences=2, batch_size=16)) as engine:
        short = engine.generate(engine.raw_ids("Hello"), GREEDY, sequence=0)
        long_ids = engine.raw_ids(" ".join(["word"] * 150))
        long = engine.generate(long_ids, SamplingOptions(temperature=0, max_tokens=2), sequence=1)
        short_steps, long_steps = short.steps(), long.steps()
        next(short_steps)  # the short prompt waits for its first evaluation
        engine.evaluate()
        evaluations = 0
        while len(engine._caches[1]) < len(long_ids):
            next(long_steps)
            next(short_steps)
            assert engine.evaluate() <= 16
            evaluations += 1
        assert evaluations >= len(long_ids) // 16  # a chunk of the prompt each evaluation, beside the decoding
        assert short.stats.completion_tokens >= min(evaluations - 1, GREEDY.max_tokens - 1)


def test_a_short_prompt_behind_a_long_one_is_read_at_once_beside_it(demo_model):
    with Engine(demo_model, EngineOptions(ctx_size=256, sequences=3, batch_size=16)) as engine:
        long_ids = engine.raw_ids(" ".join(["word"] * 150))
        long_steps = engine.generate(long_ids, GREEDY, sequence=0).steps()
        next(long_steps)
        assert engine.evaluate() == 16
        short_ids = engine.raw_ids("Hello")
        short_steps = engine.generate(short_ids, GREEDY, sequence=1).steps()
        next(short_steps)

        assert engine.evaluate() == 16  # the short prompt whole, what it left to the long one
        assert engine.prompt_read(1) is None  # read: its first token is picked
        assert engine.prompt_read(0) == (32 - len(short_ids), len(long_ids))
        next(short_steps)  # takes its first token, and queues it for the next evaluation

        other_ids = engine.raw_ids(" ".join(["other"] * 100))
        other_steps = engine.generate(other_ids, GREEDY, sequence=2).steps()
        next(other_steps)
        assert engine.evaluate() == 16  # the short one's next token, and the two long prompts 8 and 7 tokens each
        assert engine.prompt_read(0) == (32 - len(short_ids) + 7, len(long_ids))
        assert engine.prompt_read(2) == (8, len(other_ids))


def test_a_sequence_that_leaves_mid_prompt_is_gone_from_the_next_evaluation(demo_model):
    with Engine(demo_model, EngineOptions(ctx_size=256, sequences=2, batch_size=16)) as engine:
        ids = engine.raw_ids(" ".join(["word"] * 100))
        steps = engine.generate(ids, GREEDY, sequence=1).steps()
        next(steps)
        assert engine.prompt_read(1) == (0, len(ids))
        assert engine.evaluate() == 16
        assert engine.prompt_read(1) == (16, len(ids))
        assert engine.prompt_read(0) is None
        steps.close()
        assert engine.prompt_read(1) is None
        assert engine.evaluate() == 0
        assert engine.generating == 0
        assert engine._caches[1].tokens == tuple(ids[:16])  # what was evaluated stays, for prefix reuse


def test_each_sequence_keeps_its_own_sampler_chain(solo, batched):
    digits = SamplingOptions(temperature=0, max_tokens=12, grammar="root ::= [0-9]+")
    seeded = SamplingOptions(temperature=0.9, seed=11, max_tokens=16)
    plans = [GREEDY, digits, seeded, GREEDY]
    prompts = PROMPTS[: len(plans)]
    alone = ["".join(solo.generate(solo.raw_ids(p), s)) for p, s in zip(prompts, plans, strict=True)]
    generations = [
        batched.generate(batched.raw_ids(p), s, sequence=i) for i, (p, s) in enumerate(zip(prompts, plans, strict=True))
    ]
    together, _ = run_together(batched, generations)
    assert together == alone
    assert together[1].isdigit()


def test_iterating_a_generation_evaluates_the_batch_by_itself(batched):
    generation = batched.generate(batched.raw_ids(PROMPTS[0]), GREEDY, sequence=3)
    assert len(list(generation)) > 0
    assert generation.stats.completion_tokens == GREEDY.max_tokens
