"""`mixtral pull`."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import RpcOption


def pull(
    model: Annotated[
        str | None,
        typer.Argument(metavar="MODEL", help="8x7b, 8x7b-instruct, 8x22b, 8x22b-instruct or ORG/NAME, with :QUANT."),
    ] = None,
    revision: Annotated[str | None, typer.Option(show_default="main", help="A branch, tag or commit.")] = None,
    convert: Annotated[
        bool, typer.Option("--convert", help="Download the safetensors checkpoint and quantize it here.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Allow types below 3 bits per weight.")] = False,
    list_available: Annotated[
        bool, typer.Option("--list", help="List the catalog's quantizations and sizes on the Hub, and stop.")
    ] = False,
    rpc: RpcOption = None,
) -> None:
    """Download a Mixtral from the Hugging Face Hub into the model store, ready for -m.

    A catalog name is looked up in its GGUF repos in order; the first with the quantization (default
    Q4_K_M) is downloaded as is, and one in the old one-tensor-per-expert layout is rewritten into the
    store once. When none has it, nothing is downloaded: the error says what each repo has. The
    safetensors checkpoint is converted only with --convert, or when ORG/NAME is a safetensors repo. An
    ORG/NAME holding a PEFT LoRA adapter becomes a GGUF adapter (F16 unless :TYPE) for --lora ORG/NAME,
    once the base model it names is found in the catalog (or its config.json in the repo).
    Before anything downloads, the plan: files, sizes, the disk and time it needs (refused when the disk
    is short) and the memory each quantization needs here and on the --rpc workers. Interrupted pulls
    resume; every file is checked against the Hub's sha256 once.

    \b
    Examples:
        mixtral pull 8x7b-instruct:Q4_K_M
        mixtral pull 8x22b:Q3_K_L --convert --dry-run
        mixtral pull mistralai/Mixtral-8x7B-Instruct-v0.1:Q5_K_M
        mixtral pull someone/mixtral-samsum-lora
        mixtral pull --list
    """
    from ..engine.rpc import parse_endpoints
    from ..family.catalog import parse_model_ref
    from ..sources.pull import run_pull
    from ..sources.pull_plan import plan_pull, with_workers
    from ..sources.store import ModelStore
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress
    from ..ui.reports import print_available, print_pull_plan

    if list_available:
        from ..sources.pull_plan import available_models

        print_available(available_models())
        return
    if model is None:
        raise typer.BadParameter("give a MODEL to pull, or --list.", param_hint="MODEL")
    plan = plan_pull(parse_model_ref(model), revision=revision, force=force, convert=convert)
    if rpc:
        plan = with_workers(plan, parse_endpoints(rpc))
    print_pull_plan(plan)
    if dry_run:
        return
    with StageProgress() as progress:
        entry = run_pull(plan, store=ModelStore(), progress=progress, on_notice=print_notice)
    typer.echo(entry.name)
