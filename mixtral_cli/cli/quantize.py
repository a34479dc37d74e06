"""`mixtral quantize`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..gguf_format.quant_types import DEFAULT_TYPE, QUANT_TYPES, normalize_quant
from .options import bounded


def _check_type(value: str | None) -> str | None:
    if value is None:
        return None
    normal = normalize_quant(value)
    if normal is None:
        raise typer.BadParameter(f"{value!r} is not a quantization type; choose one of {', '.join(QUANT_TYPES)}.")
    return normal


def _complete_type(incomplete: str) -> list[str]:
    return [name for name in QUANT_TYPES if name.startswith(incomplete.upper())]


def quantize(
    source: Annotated[
        str,
        typer.Argument(
            help="A Hugging Face Mixtral folder, a PEFT LoRA adapter folder, a GGUF to requantize, or a Hub name "
            "(ORG/NAME, 8x7b)."
        ),
    ],
    type_name: Annotated[
        str | None,
        typer.Option(
            "--type",
            callback=_check_type,
            autocompletion=_complete_type,
            show_default=DEFAULT_TYPE,
            help="GGUF type to write (F16 for an adapter); for a GGUF source, required unless it is only rewritten to "
            "the current layout.",
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
        int | None,
        typer.Option(
            "--threads", "-t", callback=bounded("threads"), show_default="all cores", help="Threads for quantizing."
        ),
    ] = None,
) -> None:
    """Convert a Hugging Face Mixtral checkpoint or a PEFT LoRA adapter to GGUF, or requantize a GGUF.

    F32, F16, BF16 and Q8_0 come straight from the converter; every other type goes through llama.cpp's
    quantizer. A LoRA adapter (a folder with adapter_config.json) becomes a GGUF adapter for --lora, of
    type F32, F16, BF16 or Q8_0. The output's path is printed on stdout; progress and the summary go to stderr.

    \b
    Examples:
        mixtral quantize ./Mixtral-8x7B-Instruct-v0.1 --type Q5_K_M
        mixtral quantize mixtral-8x7b-F16.gguf --type Q4_K_M -o ~/models/
        mixtral quantize ./mixtral-samsum-lora -o samsum.gguf
    """
    from ..convert.peft import is_adapter_folder
    from ..convert.pipeline import DEFAULT_ADAPTER_TYPE, quantize_model
    from ..gguf_format.quant_types import quant_type
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress
    from ..ui.reports import print_quantize_summary

    if type_name is not None and force and quant_type(type_name).low_bits:
        print_notice(
            f"{type_name} stores under 3 bits per weight: expect a clear loss of quality, more so for a "
            "mixture of experts than for a dense model."
        )
    local, hub_name = _local_source(source)
    if hub_name and output is None:
        # Not into the Hub cache beside the download: here, named after the repo.
        default_type = DEFAULT_ADAPTER_TYPE if is_adapter_folder(local) else DEFAULT_TYPE
        output = Path.cwd() / f"{hub_name}-{type_name or default_type}.gguf"
    with StageProgress() as progress:
        result = quantize_model(
            local,
            name=hub_name,
            type_name=type_name,
            output=output,
            force=force,
            threads=threads,
            progress=progress,
            on_notice=print_notice,
        )
    print_quantize_summary(result)
    typer.echo(str(result.output))


def _local_source(source: str) -> tuple[Path, str | None]:
    """A path as given; a Hub name that is no local path is downloaded into the Hub cache first.

    Returns the local path, and for a Hub name the repo's name (for the output and general.name).
    """
    from ..family.catalog import CATALOG, looks_like_a_path, parse_model_ref
    from ..sources.pull import fetch_source
    from ..ui.console import print_notice

    path = Path(source).expanduser()
    if looks_like_a_path(source) or (source.lower() not in CATALOG and source.count("/") != 1):
        return path, None
    ref = parse_model_ref(source)
    repo = ref.catalog.repo if ref.catalog else ref.source
    return fetch_source(ref, on_notice=print_notice), repo.rsplit("/", 1)[-1]
