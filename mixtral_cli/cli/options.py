"""Options shared by every command that runs a model, defined once.

A command declares ``model: ModelOption = None`` and so on, then builds the engine's option objects with
``engine_options(...)`` and ``sampling_options(...)``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..engine.options import EngineOptions, SamplingOptions

ENGINE = "Engine"
SAMPLING = "Sampling"

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
SystemOption = Annotated[str | None, typer.Option("--system", "-s", help="System prompt (chat format only).")]

TemperatureOption = Annotated[
    float, typer.Option(min=0.0, rich_help_panel=SAMPLING, help="Randomness; 0 picks the likeliest token (greedy).")
]
TopPOption = Annotated[float, typer.Option(min=0.0, max=1.0, rich_help_panel=SAMPLING, help="Nucleus sampling.")]
TopKOption = Annotated[int, typer.Option(min=0, rich_help_panel=SAMPLING, help="Keep the K likeliest; 0: all.")]
MinPOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, rich_help_panel=SAMPLING, help="Drop tokens below this share of the top one.")
]
RepeatPenaltyOption = Annotated[
    float, typer.Option(min=0.0, rich_help_panel=SAMPLING, help="Penalty on tokens of the last 64; 1: none.")
]
MaxTokensOption = Annotated[
    int, typer.Option("--max-tokens", "-n", min=1, rich_help_panel=SAMPLING, help="Stop after this many tokens.")
]
SeedOption = Annotated[
    int | None,
    typer.Option(min=0, max=2**32 - 2, rich_help_panel=SAMPLING, show_default="random", help="Sampling seed."),
]
StopOption = Annotated[
    list[str] | None,
    typer.Option("--stop", rich_help_panel=SAMPLING, show_default=False, help="Stop before this text; repeatable."),
]

CtxSizeOption = Annotated[
    int | None,
    typer.Option(
        "--ctx-size", "-c", min=16, rich_help_panel=ENGINE, show_default="the model's", help="Context length in tokens."
    ),
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, rich_help_panel=ENGINE, help="Prompt tokens per llama.cpp batch.")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", "-t", min=1, rich_help_panel=ENGINE, show_default="physical cores", help="CPU threads."),
]
GpuLayersOption = Annotated[
    int | None,
    typer.Option(
        "--n-gpu-layers",
        "-ngl",
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
        "--n-cpu-moe", min=0, rich_help_panel=ENGINE, help="Keep the experts of the first N layers in host memory."
    ),
]
FlashAttnOption = Annotated[
    bool, typer.Option("--flash-attn/--no-flash-attn", rich_help_panel=ENGINE, help="Flash attention where supported.")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel=ENGINE, help="Show llama.cpp's log.")]


def engine_options(
    *,
    ctx_size: int | None,
    batch_size: int,
    threads: int | None,
    n_gpu_layers: int | None,
    cpu_moe: bool,
    n_cpu_moe: int,
    flash_attn: bool,
    verbose: bool,
) -> EngineOptions:
    return EngineOptions(
        ctx_size=ctx_size,
        batch_size=batch_size,
        threads=threads,
        n_gpu_layers=n_gpu_layers,
        cpu_moe=cpu_moe,
        n_cpu_moe=n_cpu_moe,
        flash_attn=flash_attn,
        verbose=verbose,
    )


def sampling_options(
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    min_p: float,
    repeat_penalty: float,
    max_tokens: int,
    seed: int | None,
    stop: list[str] | None,
) -> SamplingOptions:
    return SamplingOptions(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        max_tokens=max_tokens,
        seed=seed,
        stop=tuple(stop or ()),
    )
