"""`mixtral summarize`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..answer.summary_plan import MAX_WORDS_BOUND, Length, Style
from ..engine.options import EngineOptions, SamplingOptions
from .long_job import agree_to_long_job
from .options import ModelOption, ServerOption, bounded, runs_a_model

_LONG_HINT = "Give --yes to run it anyway, or a larger --ctx-size for fewer, longer calls."


@runs_a_model
def summarize(
    files: Annotated[
        list[str] | None, typer.Argument(show_default=False, help="Text or Markdown files; '-' or none reads stdin.")
    ] = None,
    model: ModelOption = None,
    each: Annotated[bool, typer.Option("--each", help="One summary per file instead of one of all.")] = False,
    style: Annotated[Style, typer.Option(help="Prose, a bulleted list, or one sentence.")] = Style.PARAGRAPH,
    length: Annotated[Length, typer.Option(help="About 60, 150 or 300 words.")] = Length.MEDIUM,
    max_words: Annotated[
        int | None, typer.Option(callback=bounded(MAX_WORDS_BOUND), show_default=False, help="Overrides --length.")
    ] = None,
    focus: Annotated[str | None, typer.Option(show_default=False, help="What to pay attention to.")] = None,
    language: Annotated[
        str | None, typer.Option(show_default="the input's", help="The language of the summary.")
    ] = None,
    no_chunk: Annotated[bool, typer.Option("--no-chunk", help="Refuse input that needs more than one pass.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="The summary with chunks, depth, tokens, timings.")
    ] = False,
    server: ServerOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Start a summary of hundreds of model calls without asking.")
    ] = False,
    *,
    sampling: SamplingOptions,
    engine_options: EngineOptions,
) -> None:
    """Summarize files or piped text, of any length.

    Input that fits the context is summarized in one pass; longer input is cut on paragraph and sentence
    boundaries into parts that fit, each part summarized, and the partial summaries combined, level by
    level, until one summary remains. Nothing is dropped, and the model calls are bounded before the
    first one (--json reports the bound); a context too small for a part and its answer is refused at
    once with the --ctx-size it needs. Dialogue transcripts ("Name: line") are summarized as
    conversations; the summary is in the input's language unless --language says otherwise.

    \b
    Examples:
        mixtral summarize -m model.gguf report.md
        journalctl -b | mixtral summarize -m model.gguf --style bullets --focus errors
        mixtral summarize -m model.gguf --each --length short notes/*.md
    """
    from ..answer.report import summary_json
    from ..answer.summarize import Summarizer, inputs_to_summarize
    from ..answer.summary_plan import SummaryOptions
    from ..engine.model import Engine
    from ..sources.model_path import resolve_model
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress
    from ..ui.stream import stream_text

    documents = _read_documents(files or [])
    options = SummaryOptions(style=style, length=length, max_words=max_words, focus=focus, language=language)
    if server is not None:
        from ..serve.remote import RemoteEngine

        engine = RemoteEngine(server)
    else:
        model_file = resolve_model(model)
        engine = Engine(model_file.path, engine_options, on_notice=print_notice, pulled_as=model_file.pulled_as)
    with engine:
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
                    on_plan=lambda plan, seconds, p=progress: agree_to_long_job(
                        "This summary", plan.max_model_calls, lambda: seconds, yes=yes, hint=_LONG_HINT, progress=p
                    ),
                )
                # Every level but the last runs here, under the progress bars; the final summary streams after.
                chunks, plan = summarizer.summarize(text, chunking=not no_chunk)
            if json_output:
                typer.echo(
                    summary_json("".join(chunks), plan, name=name, layout=engine.layout.value, adapters=engine.adapters)
                )
            else:
                stream_text(chunks)


def _read_documents(files: list[str]):  # noqa: ANN202 - list[Document]
    from ..answer.summarize import decode_document, read_document
    from ..base.textinput import read_stdin_bytes

    if not files or files == ["-"]:
        if not files and sys.stdin.isatty():
            from ..base.errors import MixtralError

            raise MixtralError("No input: give files to summarize, or pipe text in.")
        return [decode_document("stdin", read_stdin_bytes())]
    return [decode_document("stdin", read_stdin_bytes()) if f == "-" else read_document(Path(f)) for f in files]
