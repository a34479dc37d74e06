"""Loading a Mixtral GGUF into llama.cpp: the checks before it loads, the model and its facts, and the
errors llama.cpp logs on the way (its return values alone say only that something failed)."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import GGUFError, GPUMemoryError, LegacyLayoutError, ModelNotFoundError
from ..base.system import gpu_on_this_machine
from ..family.instruct import CHAT_TEMPLATE_KEY, instruct_from_data
from ..family.prompt_ids import PromptFormat
from ..gguf_format.header import GGUFInfo, inspect_gguf, is_gguf
from . import logs
from .devices import has_gpu_backend, init_backend
from .fit import Plan, model_plan
from .options import EngineOptions
from .placement import LoadParams, Placement


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
    instruct: bool  # chat format by default; from the model's data, never its name
    instruct_source: str  # what decided ``instruct``, for reports


collected_errors: list[str] = []


def collect_errors(level: int, text: str) -> None:
    if level == logs.LOG_LEVEL_ERROR and text.strip():
        collected_errors.append(text.strip())


def print_log(level: int, text: str) -> None:
    sys.stderr.write(text)
    collect_errors(level, text)


def last_error() -> str:
    return f": {collected_errors[-1]}" if collected_errors else ""


def plan_model(path: Path, options: EngineOptions) -> Plan:
    """The plan the engine would make for ``path`` with ``options``, without loading it (`mixtral devices -m`)."""
    header = check_model_file(path)
    init_backend()
    return model_plan(path, header, options)


_gpu_notice_given = False


def notice_missing_gpu_backend(notice: Callable[[str], None]) -> None:
    """Once per process: this machine has a GPU that this llama.cpp build cannot use."""
    global _gpu_notice_given
    if _gpu_notice_given:
        return
    _gpu_notice_given = True
    gpu = gpu_on_this_machine()
    if gpu and not has_gpu_backend():
        notice(
            f"This machine has {gpu.description}, but llama-cpp-python was built for the CPU only; "
            f"`bash scripts/install-llama-cpp.sh {gpu.backend}` rebuilds it (see README, GPUs and workers)."
        )


def check_model_file(path: Path) -> GGUFInfo:
    """Refuse what is not a Mixtral GGUF before llama.cpp spends time loading it."""
    if not path.exists():
        raise ModelNotFoundError(f"{path} does not exist.", hint="Check the path, or see `mixtral quantize --help`.")
    if not path.is_file() or not is_gguf(path):
        raise GGUFError(f"{path} is not a GGUF file.", path=path, hint="Convert it with `mixtral quantize`.")
    info = inspect_gguf(path)
    if info.legacy_experts:
        raise LegacyLayoutError(path, size=info.nbytes)
    return info


def load_model(path: Path, placement: Placement | None, *, repack: bool):  # noqa: ANN202 - a llama_model_p
    """The model with ``placement``'s layout; without one, its vocabulary and metadata only."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    load_params = LoadParams(placement) if placement else None
    if load_params:
        load_params.apply(params)
    else:
        params.vocab_only, params.n_gpu_layers = True, 0
    params.use_extra_bufts = repack
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model and placement and placement.devices and "alloc" in last_error():
        raise GPUMemoryError(
            f"llama.cpp could not allocate the model's weights{last_error()}.",
            hint="Another program may hold that memory: close it, or raise --gpu-margin.",
        )
    if not model:
        raise GGUFError(
            f"llama.cpp could not load {path}{last_error()}.",
            path=path,
            hint="The file may be truncated or corrupt: download or convert it again.",
        )
    return model


def _meta(model, key: str) -> str | None:  # noqa: ANN001 - a llama_model_p
    import llama_cpp

    buffer = ctypes.create_string_buffer(512)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer))
    return buffer.value.decode("utf-8", errors="replace") if n >= 0 else None


def _context_length(model) -> int:  # noqa: ANN001 - a llama_model_p
    """The context the model was trained on (0: unknown); a vocabulary-only load leaves llama.cpp's hyperparameters
    unread, so there the file's metadata says it."""
    import llama_cpp

    trained = llama_cpp.llama_model_n_ctx_train(model)
    if trained > 0:
        return trained
    said = _meta(model, "llama.context_length") or ""
    return int(said) if said.isdigit() else 0


def model_info(path: Path, model, *, gpu: bool, pulled_as: tuple[str, bool] | None) -> ModelInfo:  # noqa: ANN001
    import llama_cpp

    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    instruct, source = instruct_from_data(
        chat_template=_meta(model, CHAT_TEMPLATE_KEY) is not None, pulled_as=pulled_as
    )
    return ModelInfo(
        path=path,
        name=_meta(model, "general.name") or path.stem,
        n_ctx_train=_context_length(model),
        n_vocab=n_vocab,
        n_params=llama_cpp.llama_model_n_params(model),
        size_bytes=llama_cpp.llama_model_size(model),
        prompt_format=PromptFormat.for_vocab_size(n_vocab),
        gpu_offload=gpu,
        instruct=instruct,
        instruct_source=source,
    )
