"""Options shared by every command that runs a model, defined once.

A command declares ``model: ModelOption = None``; ``@runs_a_model`` adds the sampling and engine options
and hands them to it as ``sampling`` and ``engine_options``.
"""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..answer.response_shape import ResponseShape
from ..base.bounds import Bound
from ..engine.options import (
    DEFAULT_GPU_MARGIN,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MIN_P,
    DEFAULT_REPEAT_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    KV_CACHE_TYPES,
    OPTION_BOUNDS,
    EngineOptions,
    LoraSpec,
    SamplingOptions,
)

ENGINE = "Engine"
SAMPLING = "Sampling"


def bounded(bound: str | Bound) -> Callable[[Any], Any]:
    """An option's callback: a value out of ``bound`` (or the engine's bound of that name) is a usage error
    that names the bound."""
    if isinstance(bound, str):
        bound = OPTION_BOUNDS[bound]

    def check(value: Any) -> Any:
        problem = None if value is None else bound.problem(value)
        if problem is not None:
            raise typer.BadParameter(f"{value} {problem}.")
        return value

    return check


KVCacheType = enum.Enum("KVCacheType", {name.upper(): name for name in KV_CACHE_TYPES}, type=str)
"""llama.cpp's KV cache types that mixtral offers (its -ctk/-ctv names)."""
DEFAULT_GPU_MARGIN_MIB = DEFAULT_GPU_MARGIN // 2**20

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar="MIXTRAL_MODEL",
        show_default=False,
        help="A .gguf file, or 'tiny' for the built-in demo model.",
    ),
]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="MIXTRAL_SERVER",
        metavar="URL",
        show_default=False,
        help="Send the work to a running `mixtral serve` (its model answers; engine options are its own).",
    ),
]
ResponseShapeOption = Annotated[
    ResponseShape | None,
    typer.Option(
        "--response-shape",
        show_default="the model card's",
        help="A model-card answer (--request, /score): one object per input (8x7B cards) or one keyed by input "
        "index (8x22B card).",
    ),
]
SystemOption = Annotated[str | None, typer.Option("--system", "-s", help="System prompt (chat format only).")]
MessagesOption = Annotated[
    str | None,
    typer.Option(
        "--messages",
        metavar="FILE|-",
        show_default=False,
        help="A conversation: a JSON list of messages in OpenAI's chat format (tool calls and results too).",
    ),
]
ToolsOption = Annotated[
    str | None,
    typer.Option(
        "--tools",
        metavar="FILE|-",
        show_default=False,
        help="Functions the model may call: a JSON list in OpenAI's tools format (Mixtral-8x22B-Instruct only).",
    ),
]

TemperatureOption = Annotated[
    float,
    typer.Option(
        callback=bounded("temperature"),
        rich_help_panel=SAMPLING,
        help="Randomness; 0 picks the likeliest token (greedy).",
    ),
]
TopPOption = Annotated[
    float, typer.Option(callback=bounded("top_p"), rich_help_panel=SAMPLING, help="Nucleus sampling.")
]
TopKOption = Annotated[
    int, typer.Option(callback=bounded("top_k"), rich_help_panel=SAMPLING, help="Keep the K likeliest; 0: all.")
]
MinPOption = Annotated[
    float,
    typer.Option(
        callback=bounded("min_p"), rich_help_panel=SAMPLING, help="Drop tokens below this share of the top one."
    ),
]
RepeatPenaltyOption = Annotated[
    float,
    typer.Option(
        callback=bounded("repeat_penalty"), rich_help_panel=SAMPLING, help="Penalty on tokens of the last 64; 1: none."
    ),
]
MaxTokensOption = Annotated[
    int,
    typer.Option(
        "--max-tokens",
        "-n",
        callback=bounded("max_tokens"),
        rich_help_panel=SAMPLING,
        help="Stop after this many tokens.",
    ),
]
SeedOption = Annotated[
    int | None,
    typer.Option(callback=bounded("seed"), rich_help_panel=SAMPLING, show_default="random", help="Sampling seed."),
]
StopOption = Annotated[
    list[str] | None,
    typer.Option("--stop", rich_help_panel=SAMPLING, show_default=False, help="Stop before this text; repeatable."),
]

CtxSizeOption = Annotated[
    int | None,
    typer.Option(
        "--ctx-size",
        "-c",
        callback=bounded("ctx_size"),
        rich_help_panel=ENGINE,
        show_default="the model's",
        help="Context length in tokens.",
    ),
]
BatchSizeOption = Annotated[
    int,
    typer.Option(
        "--batch-size",
        "-b",
        callback=bounded("batch_size"),
        rich_help_panel=ENGINE,
        help="Prompt tokens per llama.cpp batch.",
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        "-t",
        callback=bounded("threads"),
        rich_help_panel=ENGINE,
        show_default="physical cores",
        help="CPU threads.",
    ),
]
GpuLayersOption = Annotated[
    int | None,
    typer.Option(
        "--n-gpu-layers",
        "-ngl",
        callback=bounded("n_gpu_layers"),
        rich_help_panel=ENGINE,
        show_default="all, when a GPU backend exists",
        help="Layers to offload to the GPU.",
    ),
]
CpuMoeOption = Annotated[
    bool,
    typer.Option("--cpu-moe", rich_help_panel=ENGINE, help="Keep every expert in host memory, the rest on the GPU."),
]
NCpuMoeOption = Annotated[
    int,
    typer.Option(
        "--n-cpu-moe",
        callback=bounded("n_cpu_moe"),
        rich_help_panel=ENGINE,
        help="Keep the experts of the first N layers in host memory.",
    ),
]
FlashAttnOption = Annotated[
    bool, typer.Option("--flash-attn/--no-flash-attn", rich_help_panel=ENGINE, help="Flash attention where supported.")
]
RepackOption = Annotated[
    bool | None,
    typer.Option(
        "--repack/--no-repack",
        rich_help_panel=ENGINE,
        show_default="auto",
        help="Repack weights for faster decode, or keep the file's layout for faster prompts; auto measures.",
    ),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel=ENGINE, help="Show llama.cpp's log.")]
RpcOption = Annotated[
    str | None,
    typer.Option(
        "--rpc",
        envvar="MIXTRAL_RPC",
        metavar="HOST:PORT[,...]",
        rich_help_panel=ENGINE,
        show_default=False,
        help="Workers (`mixtral worker`) whose devices take layers too.",
    ),
]
TensorSplitOption = Annotated[
    str | None,
    typer.Option(
        "--tensor-split",
        "-ts",
        metavar="A,B,...",
        rich_help_panel=ENGINE,
        show_default="by free memory",
        help="Each GPU's and worker's share of the offloaded layers, in `mixtral devices` order.",
    ),
]

LoraOption = Annotated[
    list[str] | None,
    typer.Option(
        "--lora",
        metavar="FILE[:SCALE]",
        rich_help_panel=ENGINE,
        show_default=False,
        help="Apply a GGUF LoRA adapter (`mixtral quantize ADAPTER_DIR`, or a pulled one by name) at SCALE (1 by "
        "default); repeatable.",
    ),
]
GpuMarginOption = Annotated[
    int,
    typer.Option(
        "--gpu-margin",
        callback=bounded("gpu_margin"),
        metavar="MIB",
        rich_help_panel=ENGINE,
        help="MiB left free on each GPU for the driver and other programs when placing.",
    ),
]
CacheTypeKOption = Annotated[
    KVCacheType,
    typer.Option("--cache-type-k", "-ctk", rich_help_panel=ENGINE, help="KV cache type for K."),
]
CacheTypeVOption = Annotated[
    KVCacheType,
    typer.Option(
        "--cache-type-v", "-ctv", rich_help_panel=ENGINE, help="KV cache type for V; quantized needs flash attention."
    ),
]


def engine_options_from(**values: Any) -> EngineOptions:
    """EngineOptions from the shared options' values, --rpc, --tensor-split, --lora and the cache types parsed."""
    from ..engine.rpc import parse_endpoints

    rpc, split, loras = values.pop("rpc", None), values.pop("tensor_split", None), values.pop("lora", None)
    for name in ("cache_type_k", "cache_type_v"):
        if name in values:
            values[name] = KVCacheType(values[name]).value
    if "gpu_margin" in values:
        values["gpu_margin"] = values["gpu_margin"] * 2**20
    return EngineOptions(
        **values,
        rpc=tuple(parse_endpoints(rpc)) if rpc else (),
        tensor_split=_parse_split(split) if split else None,
        loras=tuple(parse_lora(text) for text in loras or ()),
    )


def parse_lora(text: str, *, option: str = "--lora") -> LoraSpec:
    from ..sources.model_path import resolve_lora

    spec = resolve_lora(text)
    problem = OPTION_BOUNDS["lora_scale"].problem(spec.scale)
    if problem is not None:
        raise typer.BadParameter(f"the scale {spec.scale} {problem}.", param_hint=option)
    return spec


def _parse_split(text: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        shares = ()
    if not shares:
        raise typer.BadParameter(
            "give non-negative numbers separated by commas, e.g. 3,1.", param_hint="--tensor-split"
        )
    for share in shares:
        problem = OPTION_BOUNDS["tensor_split"].problem(share)
        if problem is not None:
            raise typer.BadParameter(f"the share {share} {problem}.", param_hint="--tensor-split")
    return shares


# The options every command that runs a model shares: (parameter, option, default).
_SAMPLING_OPTIONS = (
    ("temperature", TemperatureOption, DEFAULT_TEMPERATURE),
    ("top_p", TopPOption, DEFAULT_TOP_P),
    ("top_k", TopKOption, DEFAULT_TOP_K),
    ("min_p", MinPOption, DEFAULT_MIN_P),
    ("repeat_penalty", RepeatPenaltyOption, DEFAULT_REPEAT_PENALTY),
    ("max_tokens", MaxTokensOption, DEFAULT_MAX_TOKENS),
    ("seed", SeedOption, None),
    ("stop", StopOption, None),
)
_ENGINE_OPTIONS = (
    ("ctx_size", CtxSizeOption, None),
    ("batch_size", BatchSizeOption, 512),
    ("threads", ThreadsOption, None),
    ("n_gpu_layers", GpuLayersOption, None),
    ("cpu_moe", CpuMoeOption, False),
    ("n_cpu_moe", NCpuMoeOption, 0),
    ("flash_attn", FlashAttnOption, True),
    ("repack", RepackOption, None),
    ("verbose", VerboseOption, False),
    ("rpc", RpcOption, None),
    ("tensor_split", TensorSplitOption, None),
    ("lora", LoraOption, None),
    ("gpu_margin", GpuMarginOption, DEFAULT_GPU_MARGIN_MIB),
    ("cache_type_k", CacheTypeKOption, KVCacheType.F16),
    ("cache_type_v", CacheTypeVOption, KVCacheType.F16),
)


def runs_a_model(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared sampling and engine options, handed to it as ``sampling`` and ``engine_options``.

    Typer reads a command's options from its signature, so the wrapper presents the command's own
    parameters followed by the shared ones, and turns the latter into the two option objects.
    """
    return _with_shared_options(command, sampling=True, engine=_ENGINE_OPTIONS)


def scores_with_models(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command that only evaluates text (`mixtral eval`) the shared engine options but --ctx-size, which
    it declares itself, handed to it as ``engine_options``."""
    return _with_shared_options(
        command, sampling=False, engine=tuple(option for option in _ENGINE_OPTIONS if option[0] != "ctx_size")
    )


def _with_shared_options(
    command: Callable[..., None], *, sampling: bool, engine: tuple[tuple[str, Any, Any], ...]
) -> Callable[..., None]:
    own = inspect.signature(command, eval_str=True)
    sampling_options = _SAMPLING_OPTIONS if sampling else ()
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=option)
        for name, option, default in (*sampling_options, *engine)
    ]
    kept = [p for p in own.parameters.values() if p.name not in ("sampling", "engine_options")]

    @functools.wraps(command)
    def run(**values: Any) -> None:
        engine_options = engine_options_from(**{name: values.pop(name) for name, _, _ in engine})
        if sampling:
            chosen = {name: values.pop(name) for name, _, _ in _SAMPLING_OPTIONS}
            chosen["stop"] = tuple(chosen["stop"] or ())
            values["sampling"] = SamplingOptions(**chosen)
        command(**values, engine_options=engine_options)

    run.__signature__ = own.replace(parameters=[*kept, *shared])  # type: ignore[attr-defined]
    return run
