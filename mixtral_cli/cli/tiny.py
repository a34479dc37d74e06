"""`mixtral tiny`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..sources.tiny_model import SHAPE_BOUNDS
from .options import bounded


class TokenizerChoice(str, Enum):
    v1 = "v1"
    v3 = "v3"


def tiny(
    directory: Annotated[Path, typer.Argument(help="Folder to write the checkpoint into.")],
    tokenizer: Annotated[
        TokenizerChoice, typer.Option(help="v1: Mixtral-8x7B's 32000-piece tokenizer; v3: 8x22B-Instruct's 32768.")
    ] = TokenizerChoice.v1,
    layers: Annotated[int, typer.Option(callback=bounded(SHAPE_BOUNDS["layers"]))] = 2,
    hidden_size: Annotated[int, typer.Option(callback=bounded(SHAPE_BOUNDS["hidden_size"]))] = 256,
    intermediate_size: Annotated[int, typer.Option(callback=bounded(SHAPE_BOUNDS["intermediate_size"]))] = 512,
    experts: Annotated[int, typer.Option(callback=bounded(SHAPE_BOUNDS["experts"]))] = 8,
    experts_used: Annotated[int, typer.Option(callback=bounded(SHAPE_BOUNDS["experts_used"]))] = 2,
    heads: Annotated[int, typer.Option(callback=bounded(SHAPE_BOUNDS["heads"]))] = 8,
    kv_heads: Annotated[int, typer.Option(callback=bounded(SHAPE_BOUNDS["kv_heads"]))] = 2,
    shards: Annotated[
        int,
        typer.Option(
            callback=bounded(SHAPE_BOUNDS["shards"]), help="Split the weights into this many safetensors files."
        ),
    ] = 1,
    seed: Annotated[
        int,
        typer.Option(
            callback=bounded(SHAPE_BOUNDS["seed"]), help="The same seed and shape always give the same bytes."
        ),
    ] = 0,
    instruct: Annotated[
        bool, typer.Option(help="Give tokenizer_config.json Mistral's chat template, as an Instruct repo has.")
    ] = False,
) -> None:
    """Write a tiny random-weight Mixtral checkpoint in Hugging Face layout.

    The real Mistral tokenizer, real config.json keys and bf16 safetensors, at a size that converts and
    runs in a second: for trying `mixtral quantize` and for tests. Its text is gibberish.

    \b
    Example:
        mixtral tiny ./tiny-mixtral --layers 3 --experts 6 && mixtral quantize ./tiny-mixtral
    """
    from ..sources.tiny_model import TinyMixtralSpec, build_tiny_mixtral

    spec = TinyMixtralSpec(
        tokenizer=tokenizer.value,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_layers=layers,
        num_experts=experts,
        experts_per_token=experts_used,
        num_heads=heads,
        num_kv_heads=kv_heads,
        shards=shards,
        seed=seed,
        instruct=instruct,
    )
    typer.echo(str(build_tiny_mixtral(directory, spec)))
