"""`mixtral summarize`."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..engine.options import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_MIN_P,
    DEFAULT_REPEAT_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
)
from .options import (
    BatchSizeOption,
    CpuMoeOption,
    CtxSizeOption,
    FlashAttnOption,
    GpuLayersOption,
    MaxTokensOption,
    MinPOption,
    ModelOption,
    NCpuMoeOption,
    RepeatPenaltyOption,
    SeedOption,
    StopOption,
    TemperatureOption,
    ThreadsOption,
    TopKOption,
    TopPOption,
    VerboseOption,
    engine_options,
    sampling_options,
)


class StyleChoice(str, Enum):
    paragraph = "paragraph"
    bullets = "bullets"
    tldr = "tldr"


class LengthChoice(str, Enum):
    short = "short"
    medium = "medium"
    long = "long"


def summarize(
    files: Annotated[
        list[str] | None, typer.Argument(show_default=False, help="Text or Markdown files; '-' or none reads stdin.")
    ] = None,
    model: ModelOption = None,
    each: Annotated[bool, typer.Option("--each", help="One summary per file instead of one of all.")] = False,
    style: Annotated[
        StyleChoice, typer.Option(help="Prose, a bulleted list, or one sentence.")
    ] = StyleChoice.paragraph,
    length: Annotated[LengthChoice, typer.Option(help="About 60, 150 or 300 words.")] = LengthChoice.medium,
    max_words: Annotated[int | None, typer.Option(min=5, show_default=False, help="Overrides --length.")] = None,
    focus: Annotated[str | None, typer.Option(show_default=False, help="What to pay attention to.")] = None,
    language: Annotated[
        str | None, typer.Option(show_default="the input's", help="The language of the summary.")
    ] = None,
    no_chunk: Annotated[bool, typer.Option("--no-chunk", help="Refuse input that needs more than one pass.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="The summary with chunks, depth, tokens, timings.")
    ] = False,
    temperature: TemperatureOption = DEFAULT_TEMPERATURE,
    top_p: TopPOption = DEFAULT_TOP_P,
    top_k: TopKOption = DEFAULT_TOP_K,
    min_p: MinPOption = DEFAULT_MIN_P,
    repeat_penalty: RepeatPenaltyOption = DEFAULT_REPEAT_PENALTY,
    max_tokens: MaxTokensOption = DEFAULT_MAX_TOKENS,
    seed: SeedOption = None,
    stop: StopOption = None,
    ctx_size: CtxSizeOption = None,
    batch_size: BatchSizeOption = 512,
    threads: ThreadsOption = None,
    n_gpu_layers: GpuLayersOption = None,
    cpu_moe: CpuMoeOption = False,
    n_cpu_moe: NCpuMoeOption = 0,
    flash_attn: FlashAttnOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Summarize files or piped text, of any length.

    Input that fits the context is summarized in one pass; longer input is cut on paragraph and sentence
    boundaries into parts that fit, each part summarized, and the partial summaries combined, level by
    level, until one summary remains. Nothing is dropped. Dialogue transcripts ("Name: line") are
    summarized as conversations; the summary is in the input's language unless --language says otherwise.

    \b
    Examples:
        mixtral summarize -m model.gguf report.md
        journalctl -b | mixtral summarize -m model.gguf --style bullets --focus errors
        mixtral summarize -m model.gguf --each --length short notes/*.md
    """
    from ..engine.model import Engine
    from ..models import resolve_model
    from ..summarize import Length, Style, Summarizer, SummaryOptions, inputs_to_summarize
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress
    from ..ui.stream import stream_text
    from ..ui.summary import summary_json

    documents = _read_documents(files or [])
    options = SummaryOptions(
        style=Style(style.value), length=Length(length.value), max_words=max_words, focus=focus, language=language
    )
    sampling = sampling_options(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        max_tokens=max_tokens,
        seed=seed,
        stop=stop,
    )
    engine_opts = engine_options(
        ctx_size=ctx_size,
        batch_size=batch_size,
        threads=threads,
        n_gpu_layers=n_gpu_layers,
        cpu_moe=cpu_moe,
        n_cpu_moe=n_cpu_moe,
        flash_attn=flash_attn,
        verbose=verbose,
    )
    with Engine(resolve_model(model), engine_opts, on_notice=print_notice) as engine:
        for name, text in inputs_to_summarize(documents, each=each):
            if name is not None and not json_output:
                typer.echo(f"==> {name} <==")
            with StageProgress() as progress:
                summarizer = Summarizer(
                    engine,
                    options,
                    sampling,
                    on_level=lambda level, n, p=progress: (
                        n > 1 and p.stage(f"Summarizing, level {level}", n, unit="parts")
                    ),
                    on_chunk=progress.advance_one,
                )
                # Every level but the last runs here, under the progress bars; the final summary streams after.
                chunks, plan = summarizer.summarize(text, chunking=not no_chunk)
            if json_output:
                typer.echo(summary_json("".join(chunks), plan, name=name))
            else:
                stream_text(chunks)


def _read_documents(files: list[str]):  # noqa: ANN202 - list[Document]
    from ..summarize import decode_document, read_document

    if not files or files == ["-"]:
        if not files and sys.stdin.isatty():
            from ..errors import MixtralError

            raise MixtralError("No input: give files to summarize, or pipe text in.")
        return [decode_document("stdin", sys.stdin.buffer.read())]
    return [decode_document("stdin", sys.stdin.buffer.read()) if f == "-" else read_document(Path(f)) for f in files]
