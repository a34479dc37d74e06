"""`mixtral eval`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..engine.options import EngineOptions
from ..quality import DEFAULT_CTX
from .options import bounded, scores_with_models


@scores_with_models
def eval_(
    model: Annotated[str, typer.Argument(help="The model to measure: a .gguf file, a pulled name, or 'tiny'.")],
    text_file: Annotated[
        str | None,
        typer.Argument(
            metavar="[TEXT_FILE|-]", show_default="a built-in text", help="UTF-8 text to score; - reads stdin."
        ),
    ] = None,
    against: Annotated[
        str,
        typer.Option(
            "--against", "-a", show_default=False, help="The reference: a .gguf file or pulled name (F16, Q8_0, ...)."
        ),
    ] = ...,  # type: ignore[assignment]
    against_lora: Annotated[
        list[str] | None,
        typer.Option(
            "--against-lora",
            metavar="FILE[:SCALE]",
            show_default=False,
            help="Apply a GGUF LoRA adapter to the reference (--lora applies to MODEL); repeatable.",
        ),
    ] = None,
    ctx_size: Annotated[
        int,
        typer.Option(
            "--ctx-size",
            "-c",
            callback=bounded("ctx_size"),
            help="Tokens per chunk; the second half of each is scored.",
        ),
    ] = DEFAULT_CTX,
    chunks: Annotated[
        int | None,
        typer.Option("--chunks", min=1, show_default="all", help="Score at most this many chunks of the text."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object with every statistic.")] = False,
    engine_options: EngineOptions = EngineOptions(),
) -> None:
    """Measure how much MODEL loses against a reference: KL divergence, top-token and expert routing agreement.

    Both models score the same text in chunks of --ctx-size tokens, the second half of each, as
    `llama-perplexity --kl-divergence` does, and the report gives its numbers (perplexity of each and their
    ratio, mean/median/99% KL divergence, same top token, Δp of the text's next token) beside how often
    MODEL's router picks the reference's experts in each layer, the most divergent layer first. The models
    run chunk by chunk in lockstep: no logits are written to disk. Ctrl-C prints what was measured so far.
    A stored model's result is kept for `mixtral pull --list`.

    \b
    Examples:
        mixtral eval 8x7b-instruct:Q4_K_M --against 8x7b-instruct:Q8_0
        mixtral eval mixtral-Q3_K_L.gguf -a mixtral-Q8_0.gguf wiki.test.raw --chunks 40
        mixtral eval tuned-Q4_K_M.gguf --lora samsum.gguf -a tuned-F16.gguf --against-lora samsum.gguf
    """
    from dataclasses import replace
    from pathlib import Path

    from ..base.textinput import STDIN, read_stdin, read_text_file
    from ..quality.run import BUILT_IN, EvalSide, default_text, evaluate
    from ..sources.measured_loss import record_loss
    from ..sources.model_path import resolve_model
    from ..sources.store import ModelStore
    from ..ui.console import print_notice
    from ..ui.eval_report import eval_json, print_eval_report
    from ..ui.progress import StageProgress
    from .options import parse_lora

    if text_file is None:
        text, text_name = default_text(), BUILT_IN
    elif text_file == "-":
        text, text_name = read_stdin(), STDIN
    else:
        text, text_name = read_text_file(Path(text_file)), text_file
    model_file, reference_file = resolve_model(model), resolve_model(against)
    reference_options = replace(
        engine_options, loras=tuple(parse_lora(text, option="--against-lora") for text in against_lora or ())
    )
    with StageProgress() as progress:
        report = evaluate(
            EvalSide(model_file.path, engine_options),
            EvalSide(reference_file.path, reference_options),
            text,
            text_name=text_name,
            n_ctx=ctx_size,
            max_chunks=chunks,
            progress=progress,
            on_notice=print_notice,
        )
    recorded_as = record_loss(ModelStore(), report)
    if json_output:
        typer.echo(eval_json(report))
    else:
        print_eval_report(report, recorded_as=recorded_as)
    if report.interrupted:
        raise typer.Exit(130)
