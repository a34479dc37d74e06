"""`mixtral quantize`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..quant_types import DEFAULT_TYPE, QUANT_TYPES


def _check_type(value: str | None) -> str | None:
    if value is not None and value.upper() not in QUANT_TYPES:
        raise typer.BadParameter(f"{value!r} is not a quantization type; choose one of {', '.join(QUANT_TYPES)}.")
    return value and value.upper()


def _complete_type(incomplete: str) -> list[str]:
    return [name for name in QUANT_TYPES if name.startswith(incomplete.upper())]


def quantize(
    source: Annotated[Path, typer.Argument(help="A Hugging Face Mixtral folder, or a GGUF to requantize.")],
    type_name: Annotated[
        str | None,
        typer.Option(
            "--type",
            "-t",
            callback=_check_type,
            autocompletion=_complete_type,
            show_default=DEFAULT_TYPE,
            help="GGUF type to write; for a GGUF source, required unless it is only rewritten to the current layout.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", show_default="NAME-TYPE.gguf beside SOURCE", help="File or folder to write."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Overwrite the output; allow types below 3 bits per weight.")
    ] = False,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, show_default="all cores", help="Threads for quantizing.")
    ] = None,
) -> None:
    """Convert a Hugging Face Mixtral checkpoint to GGUF, or requantize a GGUF.

    F32, F16, BF16 and Q8_0 come straight from the converter; every other type goes through llama.cpp's
    quantizer. The output's path is printed on stdout; progress and the summary go to stderr.

    \b
    Examples:
        mixtral quantize ./Mixtral-8x7B-Instruct-v0.1 --type Q5_K_M
        mixtral quantize mixtral-8x7b-F16.gguf --type Q4_K_M -o ~/models/
    """
    from ..quant_types import quant_type
    from ..quantize import quantize_model
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress
    from ..ui.summary import print_quantize_summary

    if type_name is not None and force and quant_type(type_name).low_bits:
        print_notice(
            f"{type_name} stores under 3 bits per weight: expect a clear loss of quality, more so for a "
            "mixture of experts than for a dense model."
        )
    with StageProgress() as progress:
        result = quantize_model(
            source,
            type_name=type_name,
            output=output,
            force=force,
            threads=threads,
            progress=progress,
            on_notice=print_notice,
        )
    print_quantize_summary(result)
    typer.echo(str(result.output))
