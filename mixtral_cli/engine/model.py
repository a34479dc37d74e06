"""A loaded Mixtral: llama.cpp's model and context, its tokenizer, its weight layout, and its generations
(the decode loop is generation.py; the context's sizing, context.py)."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from ..base.errors import ContextOverflowError
from ..base.system import available_memory, physical_cores
from ..family.prompt_ids import (
    Message,
    PromptFormat,
    PromptMode,
    SpecialIds,
    chat_prompt_ids,
    completion_messages,
    raw_prompt_ids,
)
from ..family.tool_prompt import Tool, refuse_tools
from . import logs
from .batch import SharedBatch
from .context import model_kv_bytes_per_token, new_context
from .devices import init_backend
from .fit import model_plan
from .generation import Chunk, Generation, GenerationStats, T, decode, evaluated  # noqa: F401 - GenerationStats: callers import it here
from .kv_cache import KVCache
from .layout import Layout, LayoutPlan, LayoutRates, Memory, Work, choose_layout, expected_seconds, prefill_elsewhere
from .loading import (
    check_model_file,
    collect_errors,
    collected_errors,
    last_error,
    load_model,
    model_info,
    notice_missing_gpu_backend,
    print_log,
)
from .logprobs import TokenLogprobs, row_logprobs
from .lora import AdapterInfo, LoadedAdapters, check_adapter
from .options import EngineOptions, LoraSpec, SamplingOptions
from .sampler import Sampler


class Engine:
    """One model and one context; the KV cache persists across generations so a shared prefix is reused."""

    def __init__(
        self,
        path: Path,
        options: EngineOptions = EngineOptions(),
        *,
        on_notice: Callable[[str], None] | None = None,
        vocab_only: bool = False,
        pulled_as: tuple[str, bool] | None = None,
        eval_callback: object | None = None,
    ) -> None:
        """``vocab_only`` loads the vocabulary and metadata alone (no weights, no context): for prompt ids.
        ``pulled_as``: the catalog name the file was pulled by and whether that entry is Instruct, which
        wins over what the file says. ``eval_callback``: a ggml_backend_sched_eval_callback the context calls
        for each tensor of its graph (scoring.py reads the router's choices through it)."""
        import llama_cpp

        started = time.perf_counter()
        self._llama = llama_cpp
        self.path = path
        self.options = options
        self._pulled_as = pulled_as
        self._threads = options.threads or physical_cores()
        notice = self._notice = on_notice or (lambda text: None)
        header = self._header = check_model_file(path)
        # Before anything heavy loads: a mismatched adapter is one line, not a load and a log.
        self.adapters: tuple[AdapterInfo, ...] = (
            () if vocab_only else tuple(check_adapter(spec, header) for spec in options.loras)
        )
        init_backend()
        notice_missing_gpu_backend(notice)
        collected_errors.clear()
        with self._log():
            self.plan = None if vocab_only else model_plan(path, header, options)
            if self.plan and options.flash_attn and not self.plan.flash_attn and options.verbose:
                notice("Flash attention off: Mesa's llvmpipe (software Vulkan) crashes with it.")
            self.placement = self.plan.placement if self.plan else None
            if self.placement and self.placement.notice:
                notice(self.placement.notice)
            if self.plan and options.verbose:
                notice(self.plan.describe())
            # On auto the plain layout loads first: it only maps the file, and tokenizing tells the plan the work.
            # Layers on GPUs or workers keep llama.cpp's default: the choice is about the CPU's kernels.
            offloaded = self.placement is not None and bool(self.placement.devices) and self.placement.n_gpu_layers > 0
            # On auto the layout stays open until ``prepare`` (never, for a vocabulary alone) chooses it.
            self._layout_open = options.repack is None and not offloaded
            self._auto = self._layout_open and not vocab_only
            repack = options.repack if options.repack is not None else not self._auto
            self.layout = Layout.REPACKED if repack else Layout.PLAIN
            self.layout_plan: LayoutPlan | None = None
            self._prefill: Engine | None = None  # the plain-layout engine of a hand-over
            self._rates: LayoutRates | None = None
            self._model = load_model(path, self.placement, repack=repack)
            try:
                gpu = bool(self.placement and self.placement.devices)
                self.info = model_info(path, self._model, gpu=gpu, pulled_as=pulled_as)
                self._vocab = llama_cpp.llama_model_get_vocab(self._model)
                self._ctx = None
                if not vocab_only:
                    self._ctx = new_context(
                        self._model,
                        self.info,
                        options,
                        plan=self.plan,
                        placement=self.placement,
                        threads=self._threads,
                        notice=notice,
                        eval_callback=eval_callback,
                    )
                self._adapters = LoadedAdapters(self._model, last_error=last_error)
                if self._ctx and options.loras:
                    self._adapters.apply(self._ctx, options.loras)
            except BaseException:
                llama_cpp.llama_model_free(self._model)
                raise
        # Each sequence holds its own n_ctx tokens.
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx) // options.sequences if self._ctx else 0
        n_batch = llama_cpp.llama_n_batch(self._ctx) if self._ctx else 0
        self._caches = [KVCache(self._ctx, n_batch=n_batch, sequence=i) for i in range(options.sequences)]
        self._batch = SharedBatch(self._ctx, n_batch=n_batch) if self._ctx else None
        self._last_used = [0] * options.sequences  # a count of generations when each sequence last began one
        self.special = self._special_ids()
        self.load_s = time.perf_counter() - started
        self._piece_buffer = ctypes.create_string_buffer(256)

    # -- loading --------------------------------------------------------------------------------------

    def _log(self):  # noqa: ANN202 - a context manager
        return logs.log_handler(print_log if self.options.verbose else collect_errors)

    def set_loras(self, specs: Sequence[LoraSpec]) -> None:
        """Apply exactly ``specs`` from now on (none: the plain model); the KV cache, computed without them, goes."""
        infos = tuple(check_adapter(spec, self._header) for spec in specs)
        with self._log():
            for engine in (self, self._prefill):
                if engine is not None:
                    engine._adapters.apply(engine._ctx, specs)
                    engine.reset_cache()
        self.adapters = infos
        self.options = replace(self.options, loras=tuple(specs))

    def _special_ids(self) -> SpecialIds:
        llama_cpp = self._llama
        bos, eos = llama_cpp.llama_vocab_bos(self._vocab), llama_cpp.llama_vocab_eos(self._vocab)
        if self.info.prompt_format is PromptFormat.V1:
            return SpecialIds(bos=bos, eos=eos)
        names = ("[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]")
        inst, inst_end, tool_calls, tools, tools_end, results, results_end = (
            self._single_control_token(text) for text in (*names, "[TOOL_RESULTS]", "[/TOOL_RESULTS]")
        )
        return SpecialIds(bos, eos, inst, inst_end, tool_calls, tools, tools_end, results, results_end)

    def _single_control_token(self, text: str) -> int | None:
        ids = self.tokenize(text, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    def close(self) -> None:
        if getattr(self, "_prefill", None):
            self._prefill.close()
            self._prefill = None
        if getattr(self, "_ctx", None):
            self._llama.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._llama.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _cache(self) -> KVCache:
        """Sequence 0's cache: the only one, but for a server's (``EngineOptions.sequences``)."""
        return self._caches[0]

    def sequence_for(self, ids: Sequence[int], among: Sequence[int]) -> int:
        """Of the sequences ``among``, the one to generate after ``ids`` in.

        The one whose cache holds the longest start of ``ids``, provided that start is at least half of what
        it holds: its conversation, continued or retried. Else one beside a running sequence (llama.cpp
        evaluates only consecutive sequence ids in one pass), the one used least recently, emptied: a new
        conversation starts from an empty cache, as in a new process, so its answer does not depend on what
        was asked before (reusing a prefix changes the batches, and so the last bits of the arithmetic).
        """
        running = set(range(len(self._caches))) - set(among)

        def kept(sequence: int) -> int:
            cache = self._caches[sequence]
            common = cache.common_prefix(ids)
            return common if 2 * common >= len(cache) else 0

        def beside_running(sequence: int) -> bool:
            return sequence - 1 in running or sequence + 1 in running

        best = max(among, key=lambda sequence: (kept(sequence), beside_running(sequence), -self._last_used[sequence]))
        if not kept(best):
            self._caches[best].clear()
        return best

    @property
    def cached_tokens(self) -> tuple[int, ...]:
        """The tokens the KV cache holds now; a prompt that starts with them skips evaluating them."""
        return self._cache.tokens

    # -- weight layout --------------------------------------------------------------------------------

    def prepare(self, work: Work) -> LayoutPlan | None:
        """On auto, settle the weight layout for ``work``: calibrate on first use, then load what the plan chose."""
        if not self._auto:
            return self.layout_plan
        from . import calibration

        self._auto = self._layout_open = False
        # Before anything else loads: the plain model's pages are page cache, which counts as available.
        available = available_memory()
        key = calibration.cache_key(self.path, threads=self._threads)
        rates, repacked = calibration.cached_rates(key), None
        if rates is None:
            rates, repacked = calibration.calibrate(self, lambda: self._sibling(repack=True))
            calibration.store_rates(key, rates, on_notice=self._notice)
        kv_bytes = model_kv_bytes_per_token(self._model, self.options) * self.n_ctx
        memory = Memory(self.info.size_bytes, kv_bytes, available)
        plan = choose_layout(work, rates, memory)
        if plan.layout is not Layout.PLAIN:
            repacked = repacked or self._sibling(repack=True)
            self._swap_models(repacked)  # this engine decodes repacked; ``repacked`` now holds the plain model
        if plan.layout is Layout.HANDOVER:
            self._prefill, self._rates = repacked, rates
        elif repacked is not None:
            repacked.close()
        self.layout, self.layout_plan = plan.layout, plan
        if self.options.verbose:
            self._notice(plan.describe())
        return plan

    def expected_seconds(self, work: Work) -> float | None:
        """How long ``work`` should take in this engine's layout (while the layout is open, in the slowest one), from
        this machine's measured rates (see calibration.py); None where this model was never measured here."""
        from . import calibration

        rates = self._rates or calibration.cached_rates(calibration.cache_key(self.path, threads=self._threads))
        if rates is None:
            return None
        return max(expected_seconds(work, rates, layout) for layout in (Layout if self._layout_open else [self.layout]))

    def _sibling(self, *, repack: bool) -> Engine:
        """Another engine of the same file and context size in the other layout."""
        return Engine(self.path, replace(self.options, repack=repack, ctx_size=self.n_ctx), pulled_as=self._pulled_as)

    def _swap_models(self, other: Engine) -> None:
        for name in ("_model", "_ctx", "_vocab", "_caches", "_batch", "_adapters"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs)
            setattr(other, name, mine)

    def reset_cache(self) -> None:
        for cache in self._caches:
            cache.clear()

    def time_evaluation(self, ids: Sequence[int], *, one_by_one: bool) -> float:
        """Seconds to evaluate ``ids`` after the cache's tokens: in batches, as a prompt, or one by one, as decoding."""
        started = time.perf_counter()
        for chunk in [[token] for token in ids] if one_by_one else [list(ids)]:
            self._cache.feed(chunk)
        return time.perf_counter() - started

    # -- tokens ---------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, parse_special: bool = False) -> list[int]:
        """SentencePiece ids of ``text`` with the dummy-prefix space and no BOS."""
        data = text.encode("utf-8")
        capacity = len(data) + 2
        while True:
            buffer = (self._llama.llama_token * capacity)()
            count = self._llama.llama_tokenize(self._vocab, data, len(data), buffer, capacity, False, parse_special)
            if count >= 0:
                return list(buffer[:count])
            capacity = -count

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes a token stands for (a control token's name when ``special``)."""
        n = self._llama.llama_token_to_piece(self._vocab, token, self._piece_buffer, 256, 0, special)
        if n < 0:
            self._piece_buffer = ctypes.create_string_buffer(-n)
            n = self._llama.llama_token_to_piece(self._vocab, token, self._piece_buffer, -n, 0, special)
        return self._piece_buffer.raw[:n]

    def chat_ids(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> list[int]:
        return chat_prompt_ids(
            messages, prompt_format=self.info.prompt_format, special=self.special, encode=self.tokenize, tools=tools
        )

    def raw_ids(self, text: str) -> list[int]:
        return raw_prompt_ids(text, special=self.special, encode=self.tokenize)

    def completion_ids(
        self,
        prompt: str | list[Message],
        *,
        system: str | None = None,
        mode: PromptMode = PromptMode.AUTO,
        tools: Sequence[Tool] = (),
    ) -> tuple[list[int], bool]:
        """Ids for a text (one user turn in chat mode) or a conversation, and whether they are a chat."""
        messages = completion_messages(prompt, instruct=self.info.instruct, system=system, mode=mode)
        if messages is None:
            if tools:
                raise refuse_tools(reason="this is a base model, which completes text and was not trained on chats")
            return self.raw_ids(prompt), False  # type: ignore[arg-type]
        return self.chat_ids(messages, tools=tools), True

    # -- generation -----------------------------------------------------------------------------------

    def generate(
        self, prompt_ids: Sequence[int], sampling: SamplingOptions, *, answer: bool = False, sequence: int = 0
    ) -> Generation:
        """Generate after ``prompt_ids`` in KV sequence ``sequence``; ``answer`` strips the space an Instruct
        answer starts with.

        Generations of different sequences run at once: each is a lane of the context's shared batch
        (batch.py), and every evaluation of it advances them all.
        """
        if len(prompt_ids) >= self.n_ctx:
            raise ContextOverflowError(prompt_tokens=len(prompt_ids), n_ctx=self.n_ctx)
        if self._auto:
            self.prepare(Work(len(prompt_ids), sampling.max_tokens))
        self._last_used[sequence] = max(self._last_used) + 1
        generation = Generation(
            lambda stats: self._generate(list(prompt_ids), sampling, answer, generation, sequence),
            evaluate=self.evaluate,
        )
        return generation

    def evaluate(self) -> int:
        """One evaluation of the shared batch: every running generation advances (batch.py); returns its tokens."""
        return self._batch.evaluate() if self._batch is not None else 0

    def prompt_read(self, sequence: int) -> tuple[int, int] | None:
        """How far the generation running in ``sequence`` has read its prompt (batch.py); None when it is not
        reading one."""
        return self._batch.prompt_read(sequence) if self._batch is not None else None

    def run_alone(self, steps: Iterator[T | None]) -> Iterator[T]:
        """A job's ``steps`` (an answer job's, a card job's) run by themselves, this engine's batch evaluated
        wherever they wait for it; serve's scheduler runs several at once instead, one evaluation for all."""
        return evaluated(steps, self.evaluate)

    @property
    def generating(self) -> int:
        """How many generations are running now."""
        return self._batch.lanes if self._batch is not None else 0

    def _generate(
        self, prompt_ids: list[int], sampling: SamplingOptions, answer: bool, generation: Generation, sequence: int
    ) -> Iterator[Chunk | None]:
        stats = generation.stats
        stats.prompt_tokens = len(prompt_ids)
        cache = self._caches[sequence]
        if sampling.logprobs is not None and sampling.prompt_logprobs:
            # Evaluated here and now, outside the shared batch: every row's logits are read as it goes.
            generation.prompt_logprobs = self._evaluate_reporting(prompt_ids, cache, top=sampling.logprobs)
            evaluated, pending, stats.layout = len(prompt_ids) - 1, prompt_ids[-1:], self._own_layout.value
        else:
            evaluated, pending, stats.layout = self._bring_cache_to(prompt_ids, cache)
        stats.prompt_tokens_evaluated = evaluated + len(pending)
        sampler = Sampler(sampling, self._vocab, logprobs=generation.logprobs)
        try:
            lane = self._batch.join(cache, pending, sampler.sample)
            yield from decode(
                lane,
                self._vocab,
                sampling,
                piece=self.piece,
                n_ctx=self.n_ctx,
                answer=answer,
                stats=stats,
                logprobs=generation.logprobs,
            )
        finally:
            sampler.close()

    def _evaluate_reporting(self, prompt_ids: list[int], cache: KVCache, *, top: int) -> list[TokenLogprobs]:
        """Evaluate all of a prompt but its last token (the shared batch's, whose logits choose the first new
        token) again, each token's logits kept: each prompt token's log-probability after those before it (None
        for the first)."""
        n_vocab, after_first = self.info.n_vocab, []

        def keep(index: int, logits) -> None:  # noqa: ANN001 - a float pointer
            after_first.append(row_logprobs(logits, n_vocab, prompt_ids[index + 1], top))

        cache.clear()
        cache.feed(prompt_ids[:-1], each_row=keep)
        return [TokenLogprobs(prompt_ids[0], None), *after_first]

    def _bring_cache_to(self, prompt_ids: list[int], cache: KVCache) -> tuple[int, list[int], str]:
        """Cut the cache to the prompt's prefix it holds, or have the hand-over's plain-layout engine evaluate the
        prompt and take over its KV cache.

        Returns the tokens evaluated here and now, those left for the shared batch, and the layout evaluating them.
        """
        prefill = self._prefill
        if prefill is not None and self._rates is not None and len(prompt_ids) > 1 and cache is self._cache:
            own = len(prompt_ids) - self._cache.common_prefix(prompt_ids)
            theirs = len(prompt_ids) - 1 - prefill._cache.common_prefix(prompt_ids[:-1])
            if prefill_elsewhere(own, theirs, self._rates):
                evaluated = prefill._cache.bring_to(prompt_ids[:-1])
                self.take_cache_from(prefill)
                return evaluated, self._cache.cut_to(prompt_ids), Layout.HANDOVER.value
        return 0, cache.cut_to(prompt_ids), self._own_layout.value

    @property
    def _own_layout(self) -> Layout:
        """The layout of this engine's own weights: a hand-over's decoding side is repacked."""
        return Layout.REPACKED if self.layout is Layout.HANDOVER else self.layout

    def take_cache_from(self, source: Engine) -> None:
        """Continue from the tokens ``source``'s KV cache holds, as if this engine had evaluated them."""
        self._cache.take_from(source._cache)
