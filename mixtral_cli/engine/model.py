"""A loaded Mixtral: llama.cpp's model and context, its tokenizer, and the decode loop."""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..convert.gguf_file import inspect_gguf, is_gguf
from ..errors import ContextOverflowError, GGUFError, LlamaCppError, ModelNotFoundError
from ..prompt import (
    InvalidConversationError,
    Message,
    PromptFormat,
    PromptMode,
    SpecialIds,
    chat_prompt_ids,
    raw_prompt_ids,
)
from . import logs
from .hardware import available_memory, physical_cores
from .options import EngineOptions, SamplingOptions
from .placement import BuftOverrides, plan_placement
from .sampler import Sampler
from .text import TextStream

_MIN_CTX = 512
_backend_ready = False


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    name: str
    n_ctx_train: int
    n_vocab: int
    n_params: int
    size_bytes: int
    prompt_format: PromptFormat
    gpu_offload: bool

    @property
    def is_instruct(self) -> bool:
        return "instruct" in self.name.lower()


@dataclass
class GenerationStats:
    """What one generation cost, measured here (not by llama.cpp's perf counters)."""

    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0  # fewer than prompt_tokens when the KV cache already held a prefix
    completion_tokens: int = 0
    stop_reason: str = "interrupted"  # eos | stop | length | context | interrupted
    prompt_eval_s: float = 0.0
    decode_s: float = 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens_evaluated / self.prompt_eval_s if self.prompt_eval_s else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.completion_tokens / self.decode_s if self.decode_s else 0.0


class Generation:
    """Text chunks as they are generated; ``stats`` is complete once iteration ends."""

    def __init__(self, chunks: Callable[[GenerationStats], Iterator[str]]) -> None:
        self.stats = GenerationStats()
        self._chunks = chunks

    def __iter__(self) -> Iterator[str]:
        return self._chunks(self.stats)


class Engine:
    """One model and one context; the KV cache persists across generations so a shared prefix is reused."""

    def __init__(
        self,
        path: Path,
        options: EngineOptions = EngineOptions(),
        *,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        import llama_cpp

        started = time.perf_counter()
        self._llama = llama_cpp
        self.options = options
        notice = on_notice or (lambda text: None)
        _check_file(path, notice)
        _init_backend()
        log_handler = _print_log if options.verbose else _collect_errors
        _collected_errors.clear()
        with logs.log_handler(log_handler):
            placement = plan_placement(options, gpu=llama_cpp.llama_supports_gpu_offload())
            if placement.notice:
                notice(placement.notice)
            self._model = _load_model(path, placement)
            try:
                self.info = _model_info(path, self._model, gpu=llama_cpp.llama_supports_gpu_offload())
                self._vocab = llama_cpp.llama_model_get_vocab(self._model)
                self._ctx = self._new_context(notice)
            except BaseException:
                llama_cpp.llama_model_free(self._model)
                raise
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        # llama.cpp may shrink the batch to fit the context; prompts are fed in batches of what it kept.
        self._n_batch = llama_cpp.llama_n_batch(self._ctx)
        self.special = self._special_ids()
        self.load_s = time.perf_counter() - started
        self._evaluated: list[int] = []  # the tokens in the KV cache, in order
        self._piece_buffer = ctypes.create_string_buffer(256)

    # -- loading --------------------------------------------------------------------------------------

    def _new_context(self, notice: Callable[[str], None]):  # noqa: ANN202 - a llama_context_p
        llama_cpp = self._llama
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self._context_size(notice)
        params.n_batch = params.n_ubatch = self.options.batch_size
        params.n_threads = params.n_threads_batch = self.options.threads or physical_cores()
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
            if self.options.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            raise LlamaCppError(
                f"llama.cpp could not create a context of {params.n_ctx} tokens{_last_error()}.",
                hint="Try a smaller --ctx-size.",
            )
        return ctx

    def _context_size(self, notice: Callable[[str], None]) -> int:
        if self.options.ctx_size:
            return self.options.ctx_size
        wanted = self.info.n_ctx_train
        free = available_memory()
        if free is None or self.info.gpu_offload:
            return wanted
        llama_cpp = self._llama
        # K and V in f16 for every layer: what each token of context costs in memory.
        head_dim = llama_cpp.llama_model_n_embd(self._model) // llama_cpp.llama_model_n_head(self._model)
        per_token = (
            2 * llama_cpp.llama_model_n_layer(self._model) * head_dim * llama_cpp.llama_model_n_head_kv(self._model) * 2
        )
        capped = context_that_fits(wanted, bytes_per_token=per_token, free=free, model_bytes=self.info.size_bytes)
        if capped < wanted:
            notice(
                f"Context capped at {capped} tokens (the model allows {wanted}) to fit in memory; --ctx-size overrides."
            )
        return capped

    def _special_ids(self) -> SpecialIds:
        llama_cpp = self._llama
        bos, eos = llama_cpp.llama_vocab_bos(self._vocab), llama_cpp.llama_vocab_eos(self._vocab)
        if self.info.prompt_format is PromptFormat.V1:
            return SpecialIds(bos=bos, eos=eos)
        inst, inst_end = (self._single_control_token(text) for text in ("[INST]", "[/INST]"))
        return SpecialIds(bos=bos, eos=eos, inst=inst, inst_end=inst_end)

    def _single_control_token(self, text: str) -> int | None:
        ids = self.tokenize(text, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    def close(self) -> None:
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
    def cached_tokens(self) -> tuple[int, ...]:
        """The tokens the KV cache holds now; a prompt that starts with them skips evaluating them."""
        return tuple(self._evaluated)

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

    def chat_ids(self, messages: Sequence[Message]) -> list[int]:
        return chat_prompt_ids(
            messages, prompt_format=self.info.prompt_format, special=self.special, encode=self.tokenize
        )

    def raw_ids(self, text: str) -> list[int]:
        return raw_prompt_ids(text, special=self.special, encode=self.tokenize)

    def completion_ids(
        self, prompt: str | list[Message], *, system: str | None = None, mode: PromptMode = PromptMode.AUTO
    ) -> tuple[list[int], bool]:
        """Ids for a text (one user turn in chat mode) or a conversation, and whether they are a chat."""
        chat = (
            isinstance(prompt, list) or mode is PromptMode.CHAT or (mode is PromptMode.AUTO and self.info.is_instruct)
        )
        if not chat:
            if system:
                raise InvalidConversationError(
                    "--system needs the chat format, but this prompt is a raw completion.",
                    hint="Add --chat, or put the instructions into the prompt.",
                )
            return self.raw_ids(prompt), False  # type: ignore[arg-type]
        messages = prompt if isinstance(prompt, list) else [Message("user", prompt)]
        if system:
            messages = [Message("system", system), *messages]
        return self.chat_ids(messages), True

    # -- generation -----------------------------------------------------------------------------------

    def generate(self, prompt_ids: Sequence[int], sampling: SamplingOptions, *, answer: bool = False) -> Generation:
        """Generate after ``prompt_ids``; ``answer`` strips the space an Instruct answer starts with."""
        if len(prompt_ids) >= self.n_ctx:
            raise ContextOverflowError(prompt_tokens=len(prompt_ids), n_ctx=self.n_ctx)
        return Generation(lambda stats: self._generate(list(prompt_ids), sampling, answer, stats))

    def _generate(
        self, prompt_ids: list[int], sampling: SamplingOptions, answer: bool, stats: GenerationStats
    ) -> Iterator[str]:
        llama_cpp, ctx, vocab = self._llama, self._ctx, self._vocab
        started = time.perf_counter()
        stats.prompt_tokens = len(prompt_ids)
        stats.prompt_tokens_evaluated = self._evaluate_prompt(prompt_ids)
        stats.prompt_eval_s = time.perf_counter() - started

        sampler = Sampler(sampling, vocab)
        text = TextStream(stop=sampling.stop, strip_leading_space=answer)
        # One token buffer and one batch, reused: the per-token path allocates nothing.
        token_buffer = (llama_cpp.llama_token * 1)()
        batch = llama_cpp.llama_batch_get_one(token_buffer, 1)
        sample, is_eog, decode, piece = (
            sampler.sample,
            llama_cpp.llama_vocab_is_eog,
            llama_cpp.llama_decode,
            self.piece,
        )
        evaluated, n_ctx, max_tokens = self._evaluated, self.n_ctx, sampling.max_tokens
        decode_started = time.perf_counter()
        try:
            while True:
                if stats.completion_tokens >= max_tokens:
                    stats.stop_reason = "length"
                    break
                token = sample(ctx)
                if is_eog(vocab, token):
                    stats.stop_reason = "eos"
                    break
                stats.completion_tokens += 1
                chunk = text.feed(piece(token))
                if chunk:
                    yield chunk
                if text.stopped:
                    stats.stop_reason = "stop"
                    break
                if len(evaluated) >= n_ctx:
                    stats.stop_reason = "context"
                    break
                token_buffer[0] = token
                if decode(ctx, batch) != 0:
                    raise LlamaCppError("llama.cpp failed to decode a token.")
                evaluated.append(token)
            tail = text.flush()
            if tail:
                yield tail
        finally:
            stats.decode_s = time.perf_counter() - decode_started
            sampler.close()

    def _evaluate_prompt(self, prompt_ids: list[int]) -> int:
        """Bring the KV cache to ``prompt_ids``, reusing the prefix it already holds; returns tokens evaluated."""
        llama_cpp = self._llama
        common = 0
        for held, wanted in zip(self._evaluated, prompt_ids, strict=False):
            if held != wanted:
                break
            common += 1
        # The last prompt token is always evaluated again: its logits choose the first new token.
        common = min(common, len(prompt_ids) - 1)
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), 0, common, -1)
        del self._evaluated[common:]
        pending = prompt_ids[common:]
        for start in range(0, len(pending), self._n_batch):
            chunk = pending[start : start + self._n_batch]
            array = (llama_cpp.llama_token * len(chunk))(*chunk)
            if llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(array, len(chunk))) != 0:
                raise LlamaCppError("llama.cpp failed to evaluate the prompt.")
            self._evaluated.extend(chunk)
        return len(pending)


def context_that_fits(wanted: int, *, bytes_per_token: int, free: int, model_bytes: int) -> int:
    """The model's context, or less when its KV cache would not fit in half the memory the model leaves."""
    budget = (free - model_bytes) // 2  # the other half is for everything else on the machine
    if wanted * bytes_per_token <= budget:
        return wanted
    return max(_MIN_CTX, budget // bytes_per_token // 256 * 256)


_collected_errors: list[str] = []


def _collect_errors(level: int, text: str) -> None:
    if level == logs.LOG_LEVEL_ERROR and text.strip():
        _collected_errors.append(text.strip())


def _print_log(level: int, text: str) -> None:
    sys.stderr.write(text)
    _collect_errors(level, text)


def _last_error() -> str:
    return f": {_collected_errors[-1]}" if _collected_errors else ""


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        import llama_cpp

        logs.install()
        llama_cpp.llama_backend_init()
        _backend_ready = True


def _check_file(path: Path, notice: Callable[[str], None]) -> None:
    """Refuse what is not a Mixtral GGUF before llama.cpp spends time loading it."""
    if not path.exists():
        raise ModelNotFoundError(f"{path} does not exist.", hint="Check the path, or see `mixtral quantize --help`.")
    if not path.is_file() or not is_gguf(path):
        raise GGUFError(f"{path} is not a GGUF file.", path=path, hint="Convert it with `mixtral quantize`.")
    if inspect_gguf(path).legacy_experts:
        notice(
            f"{path.name} keeps one tensor per expert, which llama.cpp loads about 30x slower; "
            f"`mixtral quantize {path}` rewrites it in the current layout."
        )


def _load_model(path: Path, placement):  # noqa: ANN001, ANN202 - llama.cpp pointers
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = placement.n_gpu_layers
    params.use_mmap = True
    overrides = BuftOverrides(placement.expert_patterns) if placement.expert_patterns else None
    if overrides:
        params.tensor_buft_overrides = overrides.pointer
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise GGUFError(
            f"llama.cpp could not load {path}{_last_error()}.",
            path=path,
            hint="The file may be truncated or corrupt: download or convert it again.",
        )
    return model


def _meta(model, key: str) -> str | None:  # noqa: ANN001 - a llama_model_p
    import llama_cpp

    buffer = ctypes.create_string_buffer(512)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer))
    return buffer.value.decode("utf-8", errors="replace") if n >= 0 else None


def _model_info(path: Path, model, *, gpu: bool) -> ModelInfo:  # noqa: ANN001 - a llama_model_p
    import llama_cpp

    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    return ModelInfo(
        path=path,
        name=_meta(model, "general.name") or path.stem,
        n_ctx_train=llama_cpp.llama_model_n_ctx_train(model),
        n_vocab=n_vocab,
        n_params=llama_cpp.llama_model_n_params(model),
        size_bytes=llama_cpp.llama_model_size(model),
        prompt_format=PromptFormat.for_vocab_size(n_vocab),
        gpu_offload=gpu,
    )
