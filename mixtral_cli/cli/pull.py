"""`mixtral pull`."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import RpcOption


def pull(
    model: Annotated[str, typer.Argument(help="8x7b, 8x7b-instruct, 8x22b, 8x22b-instruct or ORG/NAME, with :QUANT.")],
    revision: Annotated[str | None, typer.Option(show_default="main", help="A branch, tag or commit.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Allow types below 3 bits per weight.")] = False,
    rpc: RpcOption = None,
) -> None:
    """Download a Mixtral from the Hugging Face Hub into the model store, ready for -m.

    A GGUF repo with the asked quantization is downloaded as is; otherwise the safetensors checkpoint is
    downloaded and converted (default Q4_K_M). Before anything downloads, the plan: files, sizes, the disk
    it needs (refused when short) and the memory each quantization needs on this machine (and on the
    --rpc workers, whose memory counts towards the recommendation). Interrupted
    pulls resume; every file is checked against the Hub's sha256.

    \b
    Examples:
        mixtral pull 8x7b-instruct:Q4_K_M
        mixtral pull mistralai/Mixtral-8x7B-Instruct-v0.1:Q5_K_M --dry-run
    """
    from ..catalog import parse_model_ref
    from ..engine.rpc import parse_endpoints
    from ..pull import plan_pull, run_pull, with_workers
    from ..store import ModelStore
    from ..ui.console import print_notice
    from ..ui.progress import StageProgress
    from ..ui.summary import print_pull_plan

    plan = plan_pull(parse_model_ref(model), revision=revision, force=force)
    if rpc:
        plan = with_workers(plan, parse_endpoints(rpc))
    print_pull_plan(plan)
    if dry_run:
        return
    with StageProgress() as progress:
        entry = run_pull(plan, store=ModelStore(), progress=progress, on_notice=print_notice)
    typer.echo(entry.name)
